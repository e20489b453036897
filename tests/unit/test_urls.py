"""One rule for every URL nbinit writes (nbinit.urls): the config's, git's, the last-good
record's and the server's NBINIT_CONFIG_URL are all cleaned the same way."""

from __future__ import annotations

import pytest

from nbinit.urls import UNPARSABLE, public_url, url_secrets

CASES = [
    pytest.param(
        "https://admin:s3cr3t-pw@cfg.example/c.yaml?token=t0k3n-x&x=1",
        "https://cfg.example/c.yaml?x=1",
        ["s3cr3t-pw", "t0k3n-x"],
        id="user-password-token",
    ),
    pytest.param(
        "https://GHTOKEN1234@cfg.example/c.yaml",
        "https://cfg.example/c.yaml",
        ["GHTOKEN1234"],
        id="token-as-user",
    ),
    pytest.param(
        "https://b.s3.example/c.yaml?X-Amz-Signature=abcd1234&X-Amz-Credential=AKIA%2Fx&v=2",
        "https://b.s3.example/c.yaml?v=2",
        ["AKIA%2Fx", "AKIA/x", "abcd1234"],
        id="s3-presigned",
    ),
    pytest.param(
        "https://cfg.example/c.yaml?sig=zzzz9999",
        "https://cfg.example/c.yaml",
        ["zzzz9999"],
        id="azure-sas",
    ),
    pytest.param(
        "https://h.example/c.yaml?%74oken=abcd1234&flag&x=1",
        "https://h.example/c.yaml?flag&x=1",
        ["abcd1234"],
        id="percent-encoded-key",
    ),
    # Too short for the log to hunt down elsewhere, but never in the URL nbinit writes.
    pytest.param(
        "https://bob:pw@h.example:8443/c.yaml?token=abc&x=1#f",
        "https://h.example:8443/c.yaml?x=1",
        [],
        id="short-secrets-port-fragment",
    ),
    pytest.param(
        "https://user:pass1234@[::1]:8443/c.yaml",
        "https://[::1]:8443/c.yaml",
        ["pass1234"],
        id="ipv6",
    ),
    pytest.param("http://h:99999/c.yaml", "http://h:99999/c.yaml", [], id="bad-port-kept"),
    pytest.param("https://[::1/c.yaml?token=abcd1234", UNPARSABLE, [], id="unparsable"),
    pytest.param(
        "file:///etc/nbinit/admin.yaml", "file:///etc/nbinit/admin.yaml", [], id="file-url"
    ),
    pytest.param("/etc/nbinit/admin.yaml", "/etc/nbinit/admin.yaml", [], id="path"),
    # git's URLs
    pytest.param(
        "http://u:pw-1234@127.0.0.1:1/course.git",
        "http://127.0.0.1:1/course.git",
        ["pw-1234"],
        id="git-password",
    ),
    pytest.param(
        "ssh://git@git.example.org/team/a.git", "ssh://git.example.org/team/a.git", [], id="ssh"
    ),
    pytest.param("git@github.com:org/repo.git", "git@github.com:org/repo.git", [], id="scp-like"),
    pytest.param("ext::sh -c touch% /tmp/x", "ext::sh -c touch% /tmp/x", [], id="ext-transport"),
]


@pytest.mark.parametrize("url, public, secrets", CASES)
def test_credentials_are_found_and_removed(url, public, secrets):
    assert public_url(url) == public
    assert url_secrets(url) == sorted(secrets)
    assert not any(secret in public_url(url) for secret in secrets)


def test_a_public_url_is_its_own_public_url():
    for case in CASES:
        public = case.values[1]
        assert public_url(public) == public
