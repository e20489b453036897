"""Issue 9's rules as pure logic: escaping, redaction, the trust filter, home paths, groups."""

from __future__ import annotations

import grp
import io
import json
import re

import pytest

from nbinit import accounts, config, schema, status
from nbinit.errors import NbinitError
from nbinit.git.policy import check_branch
from nbinit.home import check_home_path
from nbinit.log import Log, clean_tree, escape
from nbinit.steps.config import drop_root_side_keys, is_trusted_source

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
HOSTILE = "a\x1b[2J\x1b]0;owned\x07\rWARNING[2000-01-01 00:00:00] nbinit: forged\x85\u202eb"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_control_character_and_no_forged_line_reaches_the_log(fmt):
    stream = io.StringIO()
    log = Log(stream=stream, fmt=fmt)
    log.warning(HOSTILE, value=HOSTILE)
    written = stream.getvalue()
    assert written.count("\n") == 1 and written.endswith("\n")
    assert not CONTROL.search(written[:-1])
    assert "\u202e" not in written
    assert not CONTROL.search(log.warnings[0])
    message = json.loads(written)["message"] if fmt == "json" else written.split("nbinit: ", 1)[1]
    assert message.startswith("a\\x1b[2J\\x1b]0;owned\\x07")
    assert "\\u202e" in message  # CR and NEL split lines: joined by a space


def test_escape_leaves_printable_text_alone():
    text = "home /home/ålice: ok (été) — 3 entries\ttab"
    assert escape(text) == text.replace("\t", "\\x09")


def test_status_file_and_table_are_cleaned():
    data = clean_tree({"steps": [{"reason": HOSTILE, "details": {HOSTILE: [HOSTILE]}}]})
    assert not any(CONTROL.search(s) for s in json.dumps(data, ensure_ascii=False).split("\\n"))
    table = status.format_table(
        {
            "steps": [{"name": "repos", "outcome": "ok", "duration": 1.0, "reason": HOSTILE}],
            "warnings": [HOSTILE],
            "repos_progress": {"repos": [{"dest": HOSTILE, "state": HOSTILE}], "pid": 7},
        }
    )
    assert not any(CONTROL.search(line) for line in table.split("\n"))
    assert not any(line.startswith("WARNING[2000") for line in table.split("\n"))


def test_the_log_knows_the_url_secrets_from_its_first_line():
    stream = io.StringIO()
    log = Log.from_env({"NBINIT_CONFIG_URL": "http://u:hunter22@h/c?api_key=k3y-value"})
    log.stream = stream
    log.error("requests said: http://u:hunter22@h/c?api_key=k3y-value hunter22 k3y-value")
    assert "hunter22" not in stream.getvalue() and "k3y-value" not in stream.getvalue()


@pytest.mark.parametrize("name", ["alice\n", "alice\r", "ali ce", "alice\x00"])
def test_name_rules_are_full_matches(name):
    with pytest.raises(NbinitError):
        accounts.validate_name(name, accounts.AccountPolicy())
    errors, _ = config.validate({"version": 1, "user": {"default_user": name}}, schema.CONFIG)
    assert errors and errors[0].startswith("user.default_user: expected a string matching")


@pytest.mark.parametrize("branch", ["main\n", "main\r", "-main"])
def test_branch_rule_is_a_full_match(branch):
    with pytest.raises(NbinitError):
        check_branch(branch)


def test_untrusted_layer_loses_identity_and_root_side_keys_only():
    layer = {
        "version": 1,
        "deadline": 9,
        "user": {"home": "/etc", "default_user": "root", "secret_env": ["X"]},
        "hooks": {"dir": "/tmp/h", "timeout": 2},
        "git": {"allowed_hosts": ["h"]},
    }
    kept, dropped = drop_root_side_keys(layer)
    assert dropped == ["user.home", "user.default_user", "hooks.dir"]
    assert kept == {
        "version": 1,
        "deadline": 9,
        "user": {"secret_env": ["X"]},
        "hooks": {"timeout": 2},
        "git": {"allowed_hosts": ["h"]},
    }
    assert layer["user"]["home"] == "/etc"  # the parsed layer itself is not changed


@pytest.mark.parametrize(
    "url, pinned, trusted",
    [
        ("https://cfg.example/c.yaml", False, True),
        ("HTTPS://cfg.example/c.yaml", False, True),
        ("http://cfg.example/c.yaml", False, False),
        ("http://cfg.example/c.yaml", True, True),
        ("file:///etc/nbinit/admin.yaml", False, False),
        ("/etc/nbinit/admin.yaml", True, True),
    ],
)
def test_trusted_sources(url, pinned, trusted):
    assert is_trusted_source(url, pinned) is trusted


@pytest.mark.parametrize(
    "home",
    [
        "/",
        "/home",
        "/etc",
        "/etc/alice",
        "/root/alice",
        "/usr/local/alice",
        "/var/lib/alice",
        "/lib64/alice",
        "/libx32/alice",
        "/proc/alice",
        "/tmp/alice",
        "/home/../etc/alice",
        "/home/./alice",
        "//etc/alice",
        "/home/alice/",
        "home/alice",
    ],
)
def test_home_is_never_a_system_directory(home):
    with pytest.raises(NbinitError, match=r"\(user.home\) is .*: a home is never / or a system"):
        check_home_path(home)


@pytest.mark.parametrize("home", ["/home/alice", "/home/jovyan/alice", "/data/homes/alice"])
def test_homes_under_a_home_root_pass(home):
    check_home_path(home)


def test_privileged_groups():
    policy = accounts.AccountPolicy()
    for name, gid, privileged in (
        ("root", 0, True),
        ("shadow", 42, True),
        ("disk", 6, True),
        ("users", 100, False),
        ("alice", 4321, False),
    ):
        entry = grp.struct_group((name, "x", gid, []))
        assert accounts.is_privileged_group(entry, policy) is privileged, name


def test_the_server_is_never_exec_d_as_root_without_a_decided_user():
    import os

    from nbinit import launch
    from nbinit.context import Context, Deadline

    if os.geteuid() != 0:
        pytest.skip("the check is root's")
    ctx = Context("start", {"PATH": "/usr/bin:/bin"}, Log(stream=io.StringIO()), Deadline(5))
    ctx.command = ["/bin/true"]
    with pytest.raises(NbinitError, match="refusing to run the server as root"):
        launch.exec_server(ctx)
