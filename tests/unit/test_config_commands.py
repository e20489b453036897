"""`nbinit config validate FILE|URL` and `nbinit config show`, run as the real command."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import yaml

NBINIT = os.path.join(os.path.dirname(sys.executable), "nbinit")
GOOD = b"version: 1\ndeadline: 15\ngit:\n  allowed_hosts: [git.example.org]\n"
FIX_CONFIG = "fix the config; `nbinit config validate` lists all"


def nbinit(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    environment.update(env)
    return subprocess.run(
        [NBINIT, *args], env=environment, capture_output=True, text=True, timeout=60
    )


def messages(stderr: str, level: str) -> list[str]:
    return [line.split("nbinit: ", 1)[1] for line in stderr.splitlines() if line.startswith(level)]


def test_validate_good_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(GOOD)
    result = nbinit("config", "validate", str(path))
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{path}: valid\n", "")


def test_validate_lists_every_error_with_its_key_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\ndeadline: soon\nrepos:\n - url: u\n   depth: deep\n")
    result = nbinit("config", "validate", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert messages(result.stderr, "ERROR") == [
        f'{path}: deadline: expected a number >= 1, got "soon"',
        f'{path}: repos.0.depth: expected an integer >= 0, got "deep"',
    ]


def test_validate_unknown_key_is_a_warning_and_exit_2(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\ngti: {}\n")
    result = nbinit("config", "validate", str(path))
    assert result.returncode == 2
    assert result.stdout == f"{path}: valid with warnings\n"
    assert messages(result.stderr, "WARNING") == [
        f"{path}: gti: unknown key, ignored (did you mean 'git'?)"
    ]


def test_validate_dotfile_rules(tmp_path):
    path = tmp_path / ".nbinit.yaml"
    path.write_text("repos:\n - url: https://git.example.org/a.git\n   depth: 1\n")
    assert nbinit("config", "validate", "--dotfile", str(path)).returncode == 0
    path.write_text("repos:\n - url: https://git.example.org/a.git\n   depht: 1\n")
    result = nbinit("config", "validate", "--dotfile", str(path))
    assert messages(result.stderr, "WARNING") == [
        f"{path}: repos.0.depht: unknown key, ignored (did you mean 'depth'?)"
    ]


def test_validate_missing_file(tmp_path):
    result = nbinit("config", "validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert messages(result.stderr, "ERROR") == [
        f"{tmp_path / 'nope.yaml'}: No such file or directory: check the path"
    ]


def test_validate_url_with_token_and_pin(http_server):
    server = http_server()
    server.route(body=GOOD)
    result = nbinit(
        "config",
        "validate",
        server.url(),
        NBINIT_CONFIG_TOKEN="tok-1234567",
        NBINIT_CONFIG_SHA256=hashlib.sha256(GOOD).hexdigest(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{server.url()}: valid\n"
    assert server.seen[0].headers["Authorization"] == "Bearer tok-1234567"
    assert "tok-1234567" not in result.stderr


@pytest.mark.parametrize(
    "route, message",
    [
        pytest.param(
            {"status": 404, "body": b"no"},
            "{url}: HTTP 404 Not Found: check NBINIT_CONFIG_URL",
            id="http-404",
        ),
        pytest.param(
            {"body": b"version: 1\ndeadline: x\n"},
            '{url}: deadline: expected a number >= 1, got "x"',
            id="invalid",
        ),
    ],
)
def test_validate_url_problems(http_server, route, message):
    server = http_server()
    server.route(**route)
    result = nbinit("config", "validate", server.url())
    assert result.returncode == 1
    assert messages(result.stderr, "ERROR") == [message.format(url=server.url())]


def test_show_prints_effective_config_and_sources(http_server, tmp_path):
    baked = tmp_path / "baked.yaml"
    baked.write_text("version: 1\ndeadline: 12\ngpu:\n  require: false\n")
    server = http_server()
    server.route(body=GOOD)
    state = tmp_path / "state"
    result = nbinit(
        "config",
        "show",
        NBINIT_BAKED_CONFIG=str(baked),
        NBINIT_CONFIG_URL=server.url(),
        NBINIT_STATE_DIR=str(state),
    )
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["deadline"] == 15
    assert shown["gpu"]["require"] is False
    assert shown["git"]["allowed_hosts"] == ["git.example.org"]
    sources = dict(
        line[len("#   ") :].split(": ", 1)
        for line in result.stdout.splitlines()
        if line.startswith("#   ")
    )
    assert sources["deadline"] == server.url()
    assert sources["git.allowed_hosts"] == server.url()
    assert sources["gpu.require"] == str(baked)
    assert sources["git.timeout"] == "defaults"
    assert not state.exists()  # showing never writes the last good copy
    assert messages(result.stderr, "INFO")[-1] == f"config: defaults < {baked} < {server.url()}"


def _hostile_file(tmp_path, kind: str) -> str:
    path = tmp_path / kind
    if kind == "json-200000-deep":
        path.write_text("[" * 200_000 + "]" * 200_000)
    elif kind == "json-object-900-deep":
        path.write_text('{"a":' * 900 + "1" + "}" * 900)
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 64)
    elif kind == "huge":
        path.write_bytes(b"a" * (3 << 20))
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block forever
    elif kind == "status-of-wrong-types":
        path.write_text(
            '{"outcome": [1], "steps": [1, {"name": {}, "duration": "x", "details": '
            '{"progress_file": "/dev/zero"}}, {"name": "repos", "details": {"progress_file": '
            '"/"}}, {"name": "repos", "details": {"progress_file": "a\\u0000b"}}], '
            '"warnings": 5, "errors": [null]}'
        )
    return str(path)


HOSTILE = [
    "json-200000-deep",
    "json-object-900-deep",
    "binary",
    "huge",
    "directory",
    "fifo",
    "status-of-wrong-types",
]


@pytest.mark.parametrize("kind", HOSTILE)
def test_validate_answers_any_file_in_one_line(tmp_path, kind):
    result = nbinit("config", "validate", _hostile_file(tmp_path, kind))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(messages(result.stderr, "ERROR")) >= 1
    assert result.stderr.count("\n") == len(messages(result.stderr, "ERROR"))


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
@pytest.mark.parametrize("kind", HOSTILE)
def test_status_answers_any_file_without_a_traceback(tmp_path, kind, as_json):
    path = _hostile_file(tmp_path, kind)
    result = nbinit("status", *(["--json"] if as_json else []), NBINIT_STATUS_FILE=path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    if kind == "status-of-wrong-types":  # any JSON object is shown
        assert result.stdout and not result.stderr
    else:
        assert result.stderr.startswith("nbinit: the status file is unreadable or damaged: ")
        assert result.stderr.count("\n") == 1
