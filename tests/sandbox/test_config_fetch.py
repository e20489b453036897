"""The admin-config fetch matrix, end to end: `nbinit start` as root and PID 1 in a container.

Each bad input is served by a real server on loopback (the container shares the host's
network). The start must log one clear WARNING naming the problem and the fix, apply the
last good admin config (kept root-only in /var/lib/nbinit) or else the baked default, exec
the command well inside the deadline, and show no traceback.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Callable

import pytest

pytestmark = pytest.mark.sandbox

BAKED = "version: 1\ndeadline: 12\nfetch:\n  timeout: 2\n  retries: 1\ngpu:\n  require: false\n"
BAKED_DEADLINE = 12
GOOD = b"version: 1\ndeadline: 15\n"
GOOD_DEADLINE = 15
TAMPERED = GOOD + b"# tampered\n"
TOKEN = "tok-3b9f1c22e7"
CACHE = "/var/lib/nbinit/last-good-config.yaml"
CACHE_META = "/var/lib/nbinit/last-good-config.json"
CA_PATH = "/etc/nbinit/ca.pem"
SHOW_STATUS = ["nbinit", "start", "--", "cat", "/run/nbinit/status.json"]
FIX_SERVER = "check that the config server is up and serves the file"
BOMB = b"version: 1\na: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
    f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i - 1}'}, *a, *a]\n".encode() for i in range(10)
)


@dataclass
class Setup:
    """What a case needs: the servers, the container and the URL of the admin config."""

    server: object
    other: object
    sandbox: object
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.env["NBINIT_CONFIG_URL"]


@dataclass
class Case:
    id: str
    break_it: Callable[[Setup], None]  # turn the good admin config into the bad input
    problem: Callable[[Setup], str]  # the WARNING's message before "; using ..."
    tls: bool = False
    file_url: bool = False


def serve(body: bytes, **kwargs) -> Callable[[Setup], None]:
    return lambda s: s.server.route(body=body, **kwargs)


def replace_file(body: bytes) -> Callable[[Setup], None]:
    return lambda s: s.sandbox.write("/etc/nbinit/admin.yaml", body, mode=0o644)


def drop_ca(s: Setup) -> None:
    s.env.pop("REQUESTS_CA_BUNDLE")


def redirect_elsewhere(s: Setup) -> None:
    s.other.route(body=GOOD)
    s.server.route(status=302, headers={"Location": s.other.url(host="localhost")})


def tamper(s: Setup) -> None:
    s.server.route(body=TAMPERED)


def exact(template: str) -> Callable[[Setup], str]:
    return lambda s: template.format(url=s.url, other=getattr(s.other, "port", 0))


TIMED_OUT = (
    "{url}: no complete answer within the 2s limit (elapsed 2.0s): "
    f"{FIX_SERVER} quickly, or raise fetch.timeout"
)
CASES = [
    Case(
        "server-down",
        lambda s: s.server.stop(),
        exact(f"{{url}}: cannot connect (connection refused) (2 attempts): {FIX_SERVER}"),
    ),
    Case(
        "http-500",
        serve(b"oops", status=500),
        exact(f"{{url}}: HTTP 500 Internal Server Error (2 attempts): {FIX_SERVER}"),
    ),
    Case("slower-than-deadline", serve(GOOD, delay=30), exact(TIMED_OUT)),
    Case("body-never-ends", lambda s: s.server.route(trickle=True), exact(TIMED_OUT)),
    Case(
        "body-10-MiB",
        serve(b"#" * (10 << 20)),
        exact(
            "{url}: body larger than 1048576 bytes: serve the config itself "
            "(not a bundle or an error page), or raise fetch.max_bytes"
        ),
    ),
    Case(
        "body-10-MiB-undeclared",
        serve(b"#" * (10 << 20), content_length=False),
        exact(
            "{url}: body larger than 1048576 bytes: serve the config itself "
            "(not a bundle or an error page), or raise fetch.max_bytes"
        ),
    ),
    Case(
        "invalid-yaml",
        serve(b"version: 1\nrepos: [\n  - url: x\n"),
        exact(
            "{url}: invalid YAML at line 3, column 3: expected the node content, but found '-': "
            "fix the YAML syntax (yamllint or `nbinit config validate FILE` shows where)"
        ),
    ),
    Case(
        "yaml-alias-bomb",
        serve(BOMB),
        exact(
            "{url}: more than 20 YAML aliases (*name): "
            "write the values out; nbinit refuses alias bombs"
        ),
    ),
    Case(
        "wrong-types",
        serve(b"version: 1\ndeadline: soon\nrepos: {url: x}\n"),
        exact(
            '{url}: deadline: expected a number >= 1, got "soon" (and 1 more): '
            "fix the config; `nbinit config validate` lists all"
        ),
    ),
    Case(
        "wrong-sha256",
        tamper,
        lambda s: (
            f"{s.url}: sha256 {hashlib.sha256(TAMPERED).hexdigest()[:16]}... "
            f"does not match NBINIT_CONFIG_SHA256 {hashlib.sha256(GOOD).hexdigest()[:16]}...: "
            "serve the pinned config, or update the pin to the new file's digest"
        ),
    ),
    Case(
        "redirect-to-another-host",
        redirect_elsewhere,
        exact(
            "{url}: redirect to another host (http://localhost:{other}) refused: "
            "point NBINIT_CONFIG_URL at the final URL"
        ),
    ),
    Case(
        "tls-untrusted",
        drop_ca,
        exact(
            "{url}: TLS failure (certificate verify failed: unable to get local issuer "
            "certificate): give its CA with REQUESTS_CA_BUNDLE (or NBINIT_CA_BUNDLE), "
            "or fix the certificate"
        ),
        tls=True,
    ),
    Case(
        "non-utf8",
        serve(b"version: 1\n# caf\xe9\n"),
        exact("{url}: config is not UTF-8 (byte 16): save the file as UTF-8"),
    ),
    Case("empty-body", serve(b""), exact("{url}: config is empty: it needs at least `version: 1`")),
    Case(
        "empty-file",
        replace_file(b""),
        lambda s: "/etc/nbinit/admin.yaml: config is empty: it needs at least `version: 1`",
        file_url=True,
    ),
]


def prepare(sandbox, http_server, tls_files, case: Case) -> Setup:
    sandbox.add_jovyan()
    sandbox.write("/etc/nbinit/config.yaml", BAKED)
    server = http_server(tls_files.server_context if case.tls else None)
    server.route(body=GOOD)
    env = {"NBINIT_CONFIG_URL": server.url(), "NBINIT_CONFIG_TOKEN": TOKEN}
    if case.tls:
        sandbox.write(CA_PATH, tls_files.ca_pem)
        env["REQUESTS_CA_BUNDLE"] = CA_PATH
    if case.file_url:
        sandbox.write("/etc/nbinit/admin.yaml", GOOD)
        env["NBINIT_CONFIG_URL"] = "file:///etc/nbinit/admin.yaml"
    if case.id == "wrong-sha256":
        env["NBINIT_CONFIG_SHA256"] = hashlib.sha256(GOOD).hexdigest()
    return Setup(server, http_server(), sandbox, env)


def start(setup: Setup) -> tuple[object, dict, float]:
    began = time.monotonic()
    result = setup.sandbox.run(SHOW_STATUS, env=setup.env, timeout=60)
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert TOKEN not in result.stderr + result.stdout
    return result, json.loads(result.stdout), elapsed


def config_step(status: dict) -> dict:
    return next(step for step in status["steps"] if step["name"] == "config")


def assert_fallback(setup: Setup, case: Case, warning_tail: str, deadline: int) -> None:
    result, status, elapsed = start(setup)
    problem = case.problem(setup)
    step = config_step(status)
    assert len(step["warnings"]) == 1, step["warnings"]
    message = step["warnings"][0]
    pattern = re.escape(problem).replace(r"elapsed\ 2\.0s", r"elapsed\ 2\.\ds") + warning_tail
    assert re.fullmatch(pattern, message), f"{message!r}\n!~ {pattern!r}"
    assert any(line.endswith(f"nbinit: {message}") for line in result.lines("WARNING"))
    assert result.lines("ERROR") == result.lines("FATAL") == []
    assert step["outcome"] == "degraded"
    assert status["deadline"] == deadline  # which config was applied
    assert elapsed < BAKED_DEADLINE  # started well inside the deadline


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_admin_config_uses_last_good_copy(sandbox, http_server, tls_files, case):
    setup = prepare(sandbox, http_server, tls_files, case)
    # A good fetch first: it becomes the last good copy. Its limit is generous, so that a
    # loaded machine cannot turn the good fetch into a fallback; the bad one gets 2 s.
    sandbox.write("/etc/nbinit/config.yaml", BAKED.replace("timeout: 2", "timeout: 20"))
    result, status, _ = start(setup)
    sandbox.write("/etc/nbinit/config.yaml", BAKED)
    assert config_step(status)["outcome"] == "ok", result.stderr
    assert status["deadline"] == GOOD_DEADLINE
    kept = (sandbox.host_view(CACHE).read_bytes(), sandbox.host_view(CACHE_META).read_bytes())
    assert kept[0] == GOOD

    case.break_it(setup)
    assert_fallback(
        setup,
        case,
        re.escape(f"; using the last good admin config {CACHE} (fetched ")
        + r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)",
        GOOD_DEADLINE,
    )
    # The bad input never replaced the last good copy.
    assert (sandbox.host_view(CACHE).read_bytes(), sandbox.host_view(CACHE_META).read_bytes()) == (
        kept
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_admin_config_without_last_good_uses_baked_default(
    sandbox, http_server, tls_files, case
):
    setup = prepare(sandbox, http_server, tls_files, case)
    case.break_it(setup)
    assert_fallback(
        setup,
        case,
        re.escape("; using the baked default config (no last good copy)"),
        BAKED_DEADLINE,
    )
    assert not sandbox.host_view(CACHE).exists()


def test_redirect_to_another_host_never_sends_the_token_there(sandbox, http_server, tls_files):
    case = next(c for c in CASES if c.id == "redirect-to-another-host")
    setup = prepare(sandbox, http_server, tls_files, case)
    case.break_it(setup)
    start(setup)
    assert [s.headers.get("Authorization") for s in setup.server.seen] == [f"Bearer {TOKEN}"]
    assert setup.other.seen == []  # nothing at all reached the other host: no header, no token


def test_tls_trusted_with_requests_ca_bundle_and_cache_is_root_only(
    sandbox, http_server, tls_files
):
    case = next(c for c in CASES if c.id == "tls-untrusted")
    setup = prepare(sandbox, http_server, tls_files, case)
    result, status, _ = start(setup)
    assert result.lines("WARNING") == []
    assert config_step(status)["details"]["layers"] == [
        "defaults",
        "/etc/nbinit/config.yaml",
        setup.url,
    ]
    assert status["deadline"] == GOOD_DEADLINE
    for path, mode in ((CACHE, 0o600), (CACHE_META, 0o600), ("/var/lib/nbinit", 0o700)):
        info = sandbox.host_view(path).stat()
        assert (info.st_uid, info.st_mode & 0o777) == (0, mode), path
    meta = json.loads(sandbox.host_view(CACHE_META).read_text())
    assert meta["url"] == setup.url
    assert meta["sha256"] == hashlib.sha256(GOOD).hexdigest()


def test_unknown_keys_warn_with_did_you_mean_and_the_rest_applies(sandbox, http_server, tls_files):
    setup = prepare(sandbox, http_server, tls_files, CASES[0])
    setup.server.route(body=GOOD + b"gpuu:\n  require: false\n")
    result, status, _ = start(setup)
    step = config_step(status)
    assert step["warnings"] == [f"{setup.url}: gpuu: unknown key, ignored (did you mean 'gpu'?)"]
    assert status["deadline"] == GOOD_DEADLINE
    assert step["details"]["layers"][-1] == setup.url


def test_stale_last_good_copy_is_not_used(sandbox, http_server, tls_files):
    setup = prepare(sandbox, http_server, tls_files, CASES[0])
    start(setup)
    meta_path = sandbox.host_view(CACHE_META)
    meta = json.loads(meta_path.read_text())
    meta["fetched"] -= 8 * 86400
    meta_path.write_text(json.dumps(meta))
    setup.server.route(status=500)
    _, status, _ = start(setup)
    assert config_step(status)["warnings"][0].endswith(
        "; using the baked default config (the last good copy is older than 7 days)"
    )
    assert status["deadline"] == BAKED_DEADLINE


def test_last_good_copy_is_bound_to_its_url(sandbox, http_server, tls_files):
    setup = prepare(sandbox, http_server, tls_files, CASES[0])
    start(setup)
    setup.env["NBINIT_CONFIG_URL"] = setup.server.url("/moved.yaml")
    _, status, _ = start(setup)
    assert config_step(status)["warnings"][0].endswith("(the last good copy came from another URL)")
    assert status["deadline"] == BAKED_DEADLINE


def test_no_baked_config_falls_back_to_built_in_defaults(sandbox, http_server):
    sandbox.add_jovyan()
    server = http_server()
    server.stop()
    result = sandbox.run(SHOW_STATUS, env={"NBINIT_CONFIG_URL": server.url()})
    status = json.loads(result.stdout)
    assert config_step(status)["warnings"][0].endswith(
        "; using built-in defaults (no last good copy)"
    )
    assert status["deadline"] == 20


def test_a_hung_config_server_leaves_room_for_the_rest_of_the_start(sandbox, http_server):
    """fetch.timeout (8 s) is longer than NBINIT_DEADLINE=4: the fetch gets what is left of
    the first 3 s (the deadline counts from the process's start), the rest 1 s."""
    sandbox.add_jovyan()
    server = http_server()
    server.route(body=GOOD, delay=30)
    began = time.monotonic()
    result = sandbox.run(
        SHOW_STATUS, env={"NBINIT_CONFIG_URL": server.url(), "NBINIT_DEADLINE": "4"}
    )
    assert time.monotonic() - began < 4 + 1
    status = json.loads(result.stdout)
    [warning] = config_step(status)["warnings"]
    limit = re.search(r"within the ([\d.]+)s limit \(elapsed ([\d.]+)s\)", warning)
    assert limit and 2.5 <= float(limit.group(1)) <= 3.0, warning
    assert abs(float(limit.group(2)) - float(limit.group(1))) <= 0.15, warning
    assert warning == (
        f"{server.url()}: no complete answer within the {limit.group(1)}s limit "
        f"(elapsed {limit.group(2)}s): {FIX_SERVER} quickly, or raise fetch.timeout; "
        "using built-in defaults (no last good copy)"
    )
    assert status["warnings"] == config_step(status)["warnings"]  # no step skipped for time
    assert status["user"] == "jovyan"


def test_token_never_reaches_the_server_environment(sandbox, http_server):
    sandbox.add_jovyan()
    server = http_server()
    server.route(body=GOOD)
    result = sandbox.run(
        ["nbinit", "start", "--", "env"],
        env={"NBINIT_CONFIG_URL": server.url(), "NBINIT_CONFIG_TOKEN": TOKEN},
    )
    assert result.returncode == 0
    assert server.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert "NBINIT_CONFIG_URL=" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    assert "NBINIT_CONFIG_TOKEN" not in result.stdout
