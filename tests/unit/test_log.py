"""The log contract in process: text and JSON lines, redaction, warnings kept for the status."""

from __future__ import annotations

import io
import json
import re

from nbinit.log import Log, redact


def test_text_line_format_and_one_line_per_message():
    stream = io.StringIO()
    log = Log(stream=stream)
    log.info("first\nsecond")
    line = stream.getvalue()
    assert re.fullmatch(r"INFO\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] nbinit: first second\n", line)


def test_json_records_carry_level_step_and_fields():
    stream = io.StringIO()
    log = Log(stream=stream, fmt="json")
    log.step = "config"
    log.warning("late", elapsed=1.5)
    record = json.loads(stream.getvalue())
    assert {k: record[k] for k in ("level", "logger", "message", "step", "elapsed")} == {
        "level": "WARNING",
        "logger": "nbinit",
        "message": "late",
        "step": "config",
        "elapsed": 1.5,
    }
    assert log.warnings == ["late"]


def test_secrets_are_redacted_everywhere():
    stream = io.StringIO()
    log = Log.from_env({"NBINIT_CONFIG_TOKEN": "tok-secret-42", "NBINIT_LOG_FORMAT": "json"})
    log.stream = stream
    log.add_secret("pa55word")
    log.error(
        "https://bob:pa55word@h/x failed; Authorization: Bearer abc.def; token tok-secret-42",
        url="https://bob:pa55word@h/x",
    )
    out = stream.getvalue()
    for secret in ("pa55word", "abc.def", "tok-secret-42"):
        assert secret not in out
    assert "https://***@h/x" in out
    assert log.errors == ["https://***@h/x failed; Authorization: Bearer *** token ***"]


def test_redact_leaves_plain_text_alone():
    assert redact("fetched http://h/c.yaml: 12 bytes") == "fetched http://h/c.yaml: 12 bytes"


def test_unknown_format_warns_and_uses_text():
    log = Log.from_env({"NBINIT_LOG_FORMAT": "xml"})
    assert log.fmt == "text"
    assert log.warnings == ["NBINIT_LOG_FORMAT='xml' is not text or json: using text"]


def test_debug_only_with_nbinit_debug():
    stream = io.StringIO()
    log = Log(stream=stream)
    log.debug("hidden")
    assert stream.getvalue() == ""
    log.debug_enabled = True
    log.debug("shown")
    assert "DEBUG[" in stream.getvalue()


def test_closed_stderr_never_crashes():
    stream = io.StringIO()
    stream.close()
    Log(stream=stream).info("nobody listens")
