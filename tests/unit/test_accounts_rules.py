"""The account rules as pure logic: names, ids, the useradd argument vector, the policy."""

from __future__ import annotations

import pytest

from nbinit import accounts, schema
from nbinit.errors import NbinitError

POLICY = accounts.AccountPolicy.from_settings(schema.defaults()["user"])

# Debian's useradd accepts every one of these (research note §3); nbinit must not.
REJECTED_NAMES = [
    "../x",
    "x/../../etc",
    ".",
    "..",
    "café",
    "a$b",
    "Alice",
    "1234",
    "a.b",
    "a b",
    "a:b",
    "-rf",
    "a" * 33,
    "",
]


@pytest.mark.parametrize("name", REJECTED_NAMES, ids=lambda n: repr(n)[:20])
def test_names_useradd_accepts_are_rejected(name):
    with pytest.raises(NbinitError, match="is not a valid account name"):
        accounts.validate_name(name, POLICY)


@pytest.mark.parametrize("name", ["alice", "_svc", "a-b_c9", "a" * 32])
def test_posix_names_pass(name):
    accounts.validate_name(name, POLICY)


def test_root_is_a_system_account():
    with pytest.raises(NbinitError, match=r"^root is a system account of this image \(uid 0\)"):
        accounts.validate_name("root", POLICY)


@pytest.mark.parametrize(
    "raw, message",
    [
        ("0", "NB_UID=0 is never allowed"),
        ("65534", "NB_UID=65534 is never allowed"),
        ("65535", "NB_UID=65535 is never allowed"),
        ("4294967295", "NB_UID=4294967295 is never allowed"),
        ("2147483648", "NB_UID=2147483648 is never allowed"),
        ("999", "NB_UID=999 is outside user.uid_min..user.uid_max (1000..60000)"),
        ("60001", "NB_UID=60001 is outside"),
        ("-1", "NB_UID='-1' is not an integer"),
        ("+5000", "NB_UID='+5000' is not an integer"),
        ("0x1000", "NB_UID='0x1000' is not an integer"),
        (" 5000", "NB_UID=' 5000' is not an integer"),
        ("5000.0", "NB_UID='5000.0' is not an integer"),
        ("12345678901", "NB_UID='12345678901' is not an integer"),
    ],
)
def test_bad_ids(raw, message):
    with pytest.raises(NbinitError) as caught:
        accounts.parse_id({"NB_UID": raw}, "NB_UID", POLICY)
    assert str(caught.value).startswith(message)


def test_gid_defaults_to_uid():
    assert accounts.read_ids({"NB_UID": "4321"}, "alice", POLICY) == (4321, 4321, True)
    assert accounts.read_ids({"NB_UID": "4321", "NB_GID": "5000"}, "alice", POLICY) == (
        4321,
        5000,
        False,
    )


def test_missing_uid_names_the_hub_setting():
    with pytest.raises(NbinitError) as caught:
        accounts.read_ids({}, "alice", POLICY)
    assert "pre_spawn_hook" in str(caught.value) and "`uid` annotation" in str(caught.value)


def test_useradd_argv_is_a_vector_without_o():
    argv = accounts.useradd_argv("alice", 4321, 4321, "/home/alice", "/bin/bash", ["users"], False)
    assert argv == [
        "useradd",
        "--no-log-init",
        "-M",
        "-d",
        "/home/alice",
        "-s",
        "/bin/bash",
        "-u",
        "4321",
        "-g",
        "4321",
        "-G",
        "users",
        "--",
        "alice",
    ]
    alias = accounts.useradd_argv("alice", 1000, 4321, "/home/alice", "/bin/bash", [], True)
    assert "-o" in alias and alias[-2:] == ["--", "alice"] and "-G" not in alias


def test_policy_reads_every_user_key():
    settings = dict(schema.defaults()["user"], on_uid_taken="alias", extra_groups=["a", "b"])
    policy = accounts.AccountPolicy.from_settings(settings)
    assert policy.on_uid_taken == "alias"
    assert policy.extra_groups == ("a", "b")
    assert accounts.user_path(policy.marker, "alice") == "/s/alice/jupyterhub"
