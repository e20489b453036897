"""The git policy as pure logic: URLs, branches, destinations, environment, options, locks."""

from __future__ import annotations

import json
import os
import socket

import pytest

from nbinit.errors import NbinitError
from nbinit.git import lock as gitlock
from nbinit.git import policy as gitpolicy
from nbinit.git import repo as gitrepo
from nbinit.git import runner as gitrunner

POLICY = gitpolicy.GitPolicy.from_section(
    {"allowed_schemes": ["https", "ssh"], "allowed_hosts": ["git.example.org"]}
)


@pytest.mark.parametrize(
    "url, words",
    [
        pytest.param("ext::sh -c touch% /tmp/pwned", "transport 'ext::'", id="ext-sh"),
        pytest.param("ext::sh%20-c%20id", "transport 'ext::' is never allowed", id="ext"),
        pytest.param("fd::17", "transport 'fd::' is never allowed", id="fd"),
        pytest.param("foo::https://git.example.org/x", "transport 'foo::'", id="any-transport"),
        pytest.param("--upload-pack=touch /tmp/x", "starts with '-'", id="upload-pack-cmd"),
        pytest.param("--upload-pack=id", "starts with '-'", id="upload-pack"),
        pytest.param(
            "ssh://-oProxyCommand=id/x", "host is missing or starts with '-'", id="ssh-proxycommand"
        ),
        pytest.param("-oProxyCommand=id:x", "starts with '-'", id="scp-option"),
        pytest.param("file:///etc", "scheme file is not allowed", id="file-url"),
        pytest.param("/etc/passwd", "scheme file is not allowed", id="local-path"),
        pytest.param("http://git.example.org/x.git", "scheme http is not allowed", id="http"),
        pytest.param(
            "https://alice:s3cr3tTOKEN@git.example.org/x.git", "carries a password", id="password"
        ),
        pytest.param("https://evil.example.com/x.git", "not in git.allowed_hosts", id="other-host"),
        pytest.param("https://git.example.org/x\n.git", "control characters", id="newline"),
        pytest.param("", "empty", id="empty"),
    ],
)
def test_bad_urls_are_refused_in_one_line(url, words):
    with pytest.raises(NbinitError) as caught:
        gitpolicy.check_url(url, POLICY, user_declared=True)
    message = str(caught.value)
    assert words in message
    assert "\n" not in message
    assert "s3cr3tTOKEN" not in message


@pytest.mark.parametrize(
    "url",
    [
        "https://git.example.org/team/tutorials.git",
        "https://GIT.example.org/team/tutorials",
        "ssh://git@git.example.org/team/tutorials.git",
        "git@git.example.org:team/tutorials.git",
        "https://bob@git.example.org/x.git",  # a user name alone is no secret
    ],
)
def test_allowed_urls(url):
    gitpolicy.check_url(url, POLICY, user_declared=True)


def test_admin_repos_skip_the_host_list_but_not_the_schemes():
    gitpolicy.check_url("https://elsewhere.org/x.git", POLICY, user_declared=False)
    with pytest.raises(NbinitError):
        gitpolicy.check_url("file:///srv/x.git", POLICY, user_declared=False)
    with_file = gitpolicy.GitPolicy.from_section({"allowed_schemes": ["https", "file"]})
    gitpolicy.check_url("file:///srv/x.git", with_file, user_declared=False)


def test_wildcard_host():
    policy = gitpolicy.GitPolicy.from_section({"allowed_hosts": ["*.example.org"]})
    gitpolicy.check_url("https://a.example.org/x", policy, user_declared=True)
    with pytest.raises(NbinitError):
        gitpolicy.check_url("https://example.org.evil.com/x", policy, user_declared=True)


def test_user_repos_are_off_when_no_host_is_allowed():
    with pytest.raises(NbinitError, match="empty: user repos are off"):
        gitpolicy.check_url(
            "https://github.com/x/y", gitpolicy.GitPolicy.from_section({}), user_declared=True
        )


@pytest.mark.parametrize(
    "branch",
    ["--upload-pack=x", "-b", "a..b", "a b", "/abs", "x.lock", "a//b", "", "a@{1}", "ü"],
)
def test_bad_branches(branch):
    with pytest.raises(NbinitError, match="not a valid branch name"):
        gitpolicy.check_branch(branch)


@pytest.mark.parametrize("branch", ["main", "master", "release/2024.1", "feature_x-1"])
def test_good_branches(branch):
    gitpolicy.check_branch(branch)


@pytest.mark.parametrize(
    "dest, words",
    [
        pytest.param("../../etc/x", "leaves the home", id="dotdot"),
        pytest.param("/etc/x", "is absolute", id="absolute"),
        pytest.param("a/../../x", "leaves the home", id="inner-dotdot"),
        pytest.param("-rf", "starts with '-'", id="dash"),
        pytest.param("x/.git", "is .git", id="dotgit"),
        pytest.param(".", "the home itself", id="home-itself"),
        pytest.param("escape/x", "resolves outside the home", id="symlink"),
        pytest.param("dangling/x", "is a symlink to nothing", id="dangling-symlink"),
        pytest.param("chain0/x", "cannot be resolved: Too many levels", id="1000-link-chain"),
        pytest.param("a/" * 200_000, "longer than 1024 characters", id="200000-parts"),
        pytest.param("a/" * 16 + "b", "16 directories deep", id="17-parts"),
    ],
)
def test_bad_dests(tmp_path, dest, words):
    home = tmp_path / "home"
    home.mkdir()
    (home / "escape").symlink_to("/etc")
    (home / "dangling").symlink_to("/nonexistent-nbinit-target")
    for i in range(1000):  # os.path.realpath recursed once per link: RecursionError
        (home / f"chain{i}").symlink_to(f"chain{i + 1}")
    (home / "chain1000").mkdir()
    with pytest.raises(NbinitError) as caught:
        gitpolicy.check_dest(str(home), dest)
    assert words in str(caught.value)


def test_dest_inside_through_an_inner_symlink_is_fine(tmp_path):
    home = tmp_path / "home"
    (home / "real").mkdir(parents=True)
    (home / "link").symlink_to("real")
    assert gitpolicy.check_dest(str(home), "link/x") == str(home / "link" / "x")


def test_default_dest_and_on_diverge_only_for_admins(tmp_path):
    item = {"url": "https://git.example.org/team/tutorials.git", "on_diverge": "backup"}
    admin = gitpolicy.plan_repo(item, str(tmp_path), POLICY, "admin")
    user = gitpolicy.plan_repo(item, str(tmp_path), POLICY, "user")
    assert admin.dest == "tutorials" and admin.on_diverge == "backup"
    assert user.on_diverge == "report"
    assert gitpolicy.default_dest("git@h:team/nb") == "nb"


def test_a_repo_is_shown_without_a_token_in_its_query(tmp_path):
    item = {"url": "https://git.example.org/team/a.git?private_token=ab1&ref=x", "dest": "a"}
    plan = gitpolicy.plan_repo(item, str(tmp_path), POLICY, "admin")
    assert plan.shown == "https://git.example.org/team/a.git?ref=x"


def test_environment_is_built_not_inherited():
    pod = {
        "PATH": "/usr/bin:/bin",
        "GIT_SSH_COMMAND": "touch /tmp/pwned",
        "GIT_DIR": "/etc",
        "SSH_AUTH_SOCK": "/x",
        "https_proxy": "http://proxy",
        "SUDO_UID": "1000",
        "NBINIT_CONFIG_TOKEN": "secret",
    }
    env = gitrunner.git_environment(pod, "/home/jovyan", POLICY)
    assert env["GIT_SSH_COMMAND"].startswith("ssh -o BatchMode=yes")
    assert env["GIT_ALLOW_PROTOCOL"] == "https:ssh"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["GIT_CONFIG_GLOBAL"] == "/dev/null"
    assert env["HOME"] == "/home/jovyan"
    for key in ("GIT_DIR", "SSH_AUTH_SOCK", "https_proxy", "SUDO_UID", "NBINIT_CONFIG_TOKEN"):
        assert key not in env


def test_options_pin_protocols_hooks_and_credentials():
    options = gitrunner.git_options(POLICY, "/tmp/empty", {})
    pairs = [options[i + 1] for i in range(0, len(options), 2)]
    assert options[::2] == ["-c"] * len(pairs)
    assert pairs[:3] == [
        "protocol.allow=never",
        "protocol.https.allow=always",
        "protocol.ssh.allow=always",
    ]
    for expected in (
        "core.hooksPath=/tmp/empty",
        "transfer.credentialsInUrl=die",
        "http.lowSpeedLimit=1000",
        "http.lowSpeedTime=30",
        "submodule.recurse=false",
        "credential.helper=",
    ):
        assert expected in pairs
    assert not any("token" in p.lower() for p in pairs)
    with_token = gitpolicy.GitPolicy(
        **{**POLICY.as_dict(), "token_hosts": ("https://git.example.org",)}
    )
    pairs = gitrunner.git_options(with_token, "/x", {"NBINIT_GIT_TOKEN": "abc"})
    helpers = [p for p in pairs if p.startswith("credential.https://git.example.org.helper=")]
    assert len(helpers) == 1 and "abc" not in helpers[0]


def test_runner_refuses_root():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with pytest.raises(NbinitError, match="refusing to run git as root"):
        gitrunner.Runner(POLICY, {"HOME": "/root"}, "/tmp")


@pytest.mark.parametrize(
    "a, b, same",
    [
        ("https://h/x.git", "https://h/x", True),
        ("https://H/x/", "https://h/x.git", True),
        ("https://h/x.git", "https://h/y.git", False),
        ("git@h:x.git", "ssh://git@h/x", False),
    ],
)
def test_same_origin(a, b, same):
    assert gitrepo._same_origin(a, b) is same


# -- the lock ------------------------------------------------------------------------------


def test_lock_excludes_a_second_holder_and_releases(tmp_path):
    first = gitlock.RepoLock(str(tmp_path), "r")
    second = gitlock.RepoLock(str(tmp_path), "r")
    assert first.acquire() is None
    held = second.acquire()
    assert held and f"pid {os.getpid()}" in held
    first.release()
    assert second.acquire() is None
    second.release()
    assert os.listdir(tmp_path) == []


def _plant(tmp_path, owner, age):
    lock = tmp_path / "r.lock"
    lock.mkdir()
    (lock / "owner").write_text(json.dumps(owner))
    if age:
        old = os.stat(lock / "owner").st_mtime - age
        os.utime(lock / "owner", (old, old))


def test_a_dead_process_on_this_host_loses_its_lock(tmp_path):
    _plant(
        tmp_path, {"host": socket.gethostname(), "pid": 2**22 + 7, "start": "1", "token": "t"}, 0
    )
    lock = gitlock.RepoLock(str(tmp_path), "r")
    assert lock.acquire() is None
    assert lock.owner()["token"] == lock.token


def test_a_live_lock_on_another_host_is_never_stolen(tmp_path):
    _plant(tmp_path, {"host": "other-pod", "pid": 1, "start": "1", "token": "t"}, 5)
    held = gitlock.RepoLock(str(tmp_path), "r").acquire()
    assert held and "host other-pod" in held


def test_a_silent_lock_on_another_host_is_stale(tmp_path):
    _plant(tmp_path, {"host": "other-pod", "pid": 1, "start": "1", "token": "t"}, gitlock.STALE + 5)
    lock = gitlock.RepoLock(str(tmp_path), "r")
    assert lock.acquire() is None


def test_a_breaker_in_progress_keeps_others_off(tmp_path):
    _plant(tmp_path, {"host": "other-pod", "pid": 1, "start": "1", "token": "t"}, gitlock.STALE + 5)
    (tmp_path / "r.lock.break").mkdir()
    assert gitlock.RepoLock(str(tmp_path), "r").acquire()


def test_a_broken_lock_notices_before_writing(tmp_path):
    lock = gitlock.RepoLock(str(tmp_path), "r")
    assert lock.acquire() is None
    (tmp_path / "r.lock" / "owner").write_text(json.dumps({"token": "someone-else"}))
    lock.heartbeat()
    assert lock.lost


def test_the_policy_has_no_defaults_of_its_own():
    """schema.GIT is the one source: an empty section gives its defaults, a bare class none."""
    from nbinit import schema

    defaults = schema.defaults(schema.GIT)
    policy = gitpolicy.GitPolicy.from_section({})
    assert list(policy.allowed_schemes) == defaults["allowed_schemes"]
    assert list(policy.allowed_hosts) == defaults["allowed_hosts"]
    assert (policy.submodules, policy.timeout) == (defaults["submodules"], defaults["timeout"])
    assert (policy.workers, policy.min_free_mb) == (defaults["workers"], defaults["min_free_mb"])
    with pytest.raises(TypeError):
        gitpolicy.GitPolicy()  # type: ignore[call-arg]
