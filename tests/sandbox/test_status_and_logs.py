"""The status file, `nbinit status [--json]` and the log contract, seen from a real start."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.sandbox

TOKEN = "tok-9d8e7f6a5b"
DOWN = "http://127.0.0.1:1/config.yaml"  # port 1: nothing listens, the connection is refused
TEXT_LINE = re.compile(r"(INFO|WARNING|ERROR|FATAL)\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] nbinit: \S")
STEPS = ["config", "user", "repos", "gpu", "hooks", "exec"]
FETCH_WARNING = (
    f"{DOWN}: cannot connect (connection refused) (3 attempts): check that the config server "
    "is up and serves the file; using built-in defaults (no last good copy)"
)


def test_status_json_has_every_step_with_times_and_outcome(sandbox):
    sandbox.add_jovyan()
    script = "stat -c %a:%U /run/nbinit/status.json && nbinit status --json"
    result = sandbox.run(["nbinit", "start", "--", "sh", "-c", script])
    mode, text = result.stdout.split("\n", 1)
    assert mode == "644:root"  # written by root, readable by the user the server runs as
    data = json.loads(text)
    assert [step["name"] for step in data["steps"]] == STEPS
    for step in data["steps"][:-1]:
        assert step["outcome"] in ("ok", "skipped", "degraded", "failed")
        assert step["started"] <= step["finished"]
        assert step["duration"] >= 0
        assert step["warnings"] == step["errors"] == []
    assert data["finished"] is True
    assert data["mode"] == "start"
    assert data["outcome"] == "ok" and data["warnings"] == []
    assert result.returncode == 0


def test_degraded_run_shows_warning_in_table_and_exit_2(sandbox):
    sandbox.add_jovyan()
    result = sandbox.run(
        ["nbinit", "start", "--", "nbinit", "status"],
        env={"NBINIT_CONFIG_URL": DOWN, "NBINIT_CONFIG_TOKEN": TOKEN},
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "nbinit 0.1.0 start: degraded"
    assert lines[1].split() == ["STEP", "OUTCOME", "SECONDS", "REASON"]
    config_row = lines[2].split(None, 3)
    assert config_row[:2] == ["config", "degraded"]
    assert config_row[3] == "admin config unavailable, built-in defaults used"
    assert [line.split()[0] for line in lines[2:8]] == STEPS
    assert f"WARNING: {FETCH_WARNING}" in lines
    assert lines[-1] == "(from /run/nbinit/status.json)"
    assert result.returncode == 2
    assert TOKEN not in result.stdout + result.stderr


def test_status_before_any_run_says_so(sandbox):
    result = sandbox.run(["nbinit", "status"])
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "nbinit: no status file yet: nbinit has not run in this container\n"


def test_text_log_lines_follow_the_contract_and_stdout_stays_clean(sandbox):
    sandbox.add_jovyan()
    result = sandbox.run(
        ["nbinit", "start", "--", "sh", "-c", "echo server-output"],
        env={"NBINIT_CONFIG_URL": DOWN, "NBINIT_CONFIG_TOKEN": TOKEN},
    )
    assert result.returncode == 0
    assert result.stdout == "server-output\n"
    lines = result.stderr.splitlines()
    assert all(TEXT_LINE.match(line) for line in lines), lines
    assert [line.split("nbinit: ", 1)[1] for line in result.lines("WARNING")] == [FETCH_WARNING]
    retries = [line for line in lines if "; retry " in line]
    assert len(retries) == 2 and all(line.startswith("INFO[") for line in retries)
    # The second wait is jittered within the upper half of its step (0.5-1 s).
    assert re.search(r"retry 2/2 in (0\.[5-9]|1\.0)s \(elapsed \d+\.\ds of 8s\)$", retries[1])
    summary = lines[-1].split("nbinit: ", 1)[1]
    assert re.fullmatch(
        r"ready in \d+\.\d{3}s: config degraded \d+\.\d{3}s, user \w+ \d+\.\d{3}s, "
        r"repos \w+ \d+\.\d{3}s, gpu \w+ \d+\.\d{3}s, hooks \w+ \d+\.\d{3}s, exec ok "
        r"\d+\.\d{3}s; exec sh -c echo server-output as jovyan \(uid 1000\)",
        summary,
    ), summary
    assert TOKEN not in result.stderr


def test_json_log_lines_with_secrets_redacted(sandbox):
    sandbox.add_jovyan()
    url = "http://admin:pa55word@127.0.0.1:1/config.yaml"
    result = sandbox.run(
        ["nbinit", "start", "--", "sh", "-c", "echo server-output"],
        env={"NBINIT_CONFIG_URL": url, "NBINIT_CONFIG_TOKEN": TOKEN, "NBINIT_LOG_FORMAT": "json"},
    )
    assert result.stdout == "server-output\n"
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert {r["logger"] for r in records} == {"nbinit"}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["time"]) for r in records)
    warnings = [r for r in records if r["level"] == "WARNING"]
    assert len(warnings) == 1 and warnings[0]["step"] == "config"
    assert warnings[0]["message"].startswith(f"{DOWN}: cannot connect")
    assert "pa55word" not in result.stderr and TOKEN not in result.stderr
    assert records[-1]["message"].startswith("ready in ")
