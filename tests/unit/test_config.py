"""Parsing and validating configs: key paths, did-you-mean, YAML 1.1 traps, the refusals."""

from __future__ import annotations

import pytest

from nbinit import config, schema
from nbinit.errors import NbinitError

FIX_CONFIG = "fix the config; `nbinit config validate` lists all"
FIX_YAML = "fix the YAML syntax (yamllint or `nbinit config validate FILE` shows where)"


def check(text: str | bytes):
    data = text.encode() if isinstance(text, str) else text
    return config.parse_and_check(data, "c.yaml")


def refused(text: str | bytes) -> str:
    with pytest.raises(NbinitError) as caught:
        check(text)
    return str(caught.value)


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param(
            "version: 1\nrepos:\n - url: a\n - url: b\n - url: c\n   depth: deep\n",
            'c.yaml: repos.2.depth: expected an integer >= 0, got "deep"',
            id="repo-depth-word",
        ),
        pytest.param(
            "version: 1\nuser:\n  uid_min: 01750\n",
            'c.yaml: user.uid_min: expected an integer >= 1, got "01750" (a leading 0 would '
            "make it octal in YAML 1.1: write the number without it)",
            id="octal-01750",
        ),
        pytest.param(
            "version: 1\ngpu:\n  require: no\n",
            'c.yaml: gpu.require: expected one of true, false, "auto", got "no" (YAML 1.1 '
            "yes/no/on/off are not booleans here: write true or false)",
            id="yaml11-no",
        ),
        pytest.param("version: 2\n", "c.yaml: version: expected 1, got 2", id="version-2"),
        pytest.param("version: true\n", "c.yaml: version: expected 1, got true", id="version-bool"),
        pytest.param("deadline: 5\n", "c.yaml: version: required, missing", id="no-version"),
        pytest.param(
            "version: 1\ndeadline: 0\n",
            "c.yaml: deadline: expected a number from 1 to 600, got 0",
            id="deadline-range",
        ),
        pytest.param(
            "version: 1\nrepos:\n - dest: x\n",
            "c.yaml: repos.0.url: required, missing",
            id="repo-without-url",
        ),
        pytest.param(
            "version: 1\nuser:\n  default_user: Jovyan\n",
            "c.yaml: user.default_user: expected a string matching ^[a-z_][a-z0-9_-]{0,31}$, "
            'got "Jovyan"',
            id="user-name-pattern",
        ),
        pytest.param(
            "version: 1\nuser:\n  uid_min: 5000\n  uid_max: 2000\n",
            "c.yaml: user.uid_min: must not be larger than user.uid_max",
            id="uid-range-crossed",
        ),
        pytest.param(
            "- version: 1\n",
            'c.yaml: expected a mapping at the top, got [{"version": 1}]',
            id="top-level-list",
        ),
    ],
)
def test_errors_name_the_key_path(text, message):
    problem = refused(text)
    assert problem.startswith(message + ": ") or problem.startswith(message + " ("), problem


def test_all_errors_counted_in_one_line_and_listed_by_review():
    text = b"version: 1\ndeadline: soon\nrepos: {url: x}\n"
    assert refused(text) == (
        f'c.yaml: deadline: expected a number >= 1, got "soon" (and 1 more): {FIX_CONFIG}'
    )
    assert config.review(text, "c.yaml") == (
        None,
        [
            'c.yaml: deadline: expected a number >= 1, got "soon"',
            'c.yaml: repos: expected a list, got {"url": "x"}',
        ],
        [],
    )


@pytest.mark.parametrize(
    "text, warning",
    [
        pytest.param(
            "version: 1\ngti: {}\n",
            "c.yaml: gti: unknown key, ignored (did you mean 'git'?)",
            id="top-level",
        ),
        pytest.param(
            "version: 1\ngit:\n  allowed_host: [a]\n",
            "c.yaml: git.allowed_host: unknown key, ignored (did you mean 'allowed_hosts'?)",
            id="nested",
        ),
        pytest.param("version: 1\nzzz: 1\n", "c.yaml: zzz: unknown key, ignored", id="no-guess"),
    ],
)
def test_unknown_keys_warn_with_did_you_mean_and_are_dropped(text, warning):
    checked, warnings = check(text)
    assert warnings == [warning]
    assert "gti" not in checked and "zzz" not in checked
    assert "allowed_host" not in checked.get("git", {})


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param(
            "version: 1\ndeadline: 5\ndeadline: 6\n",
            f"c.yaml: invalid YAML at line 3, column 1: duplicate key 'deadline': {FIX_YAML}",
            id="duplicate-key",
        ),
        pytest.param(
            "version: 1\nx: [\n",
            "c.yaml: invalid YAML at line 3, column 1: expected the node content, but found "
            f"'<stream end>': {FIX_YAML}",
            id="unclosed-list",
        ),
        pytest.param(
            "version: 1\n" + "".join(f"k{i}: &a{i} [1]\nr{i}: *a{i}\n" for i in range(21)),
            "c.yaml: more than 20 YAML aliases (*name): write the values out; "
            "nbinit refuses alias bombs",
            id="21-aliases",
        ),
        pytest.param(
            "version: 1\ndeep: " + "[" * 40 + "]" * 40 + "\n",
            "c.yaml: nested deeper than 32 levels: flatten the config",
            id="depth-40",
        ),
        pytest.param(
            b"version: 1\n" + b"#" * (1 << 20),
            "c.yaml: config is 1048587 bytes, over the 1048576 byte limit: "
            "serve the config itself, not a bundle or an error page",
            id="over-1-MiB",
        ),
        pytest.param(
            b"version: 1\n\xff\n",
            "c.yaml: config is not UTF-8 (byte 11): save the file as UTF-8",
            id="not-utf8",
        ),
        pytest.param(" \n", "c.yaml: config is empty: it needs at least `version: 1`", id="empty"),
        pytest.param(
            "version: 1\nx: !!python/object/apply:os.system [true]\n",
            "c.yaml: invalid YAML at line 2, column 4: could not determine a constructor for "
            f"the tag 'tag:yaml.org,2002:python/object/apply:os.system': {FIX_YAML}",
            id="python-tag",
        ),
    ],
)
def test_yaml_refusals(text, message):
    assert refused(text) == message


def test_few_aliases_are_fine():
    checked, _ = check("version: 1\ngit:\n  allowed_hosts: &h [a.org]\nx: *h\n")
    assert checked["git"]["allowed_hosts"] == ["a.org"]


def test_long_values_are_never_echoed_whole():
    secret = "root:$y$j9T$" + "S" * 200
    problem = refused(f"version: 1\ndeadline: '{secret}'\n")
    assert secret not in problem
    assert "..." in problem


def test_numbers_where_strings_belong_say_quote_it():
    assert refused("version: 1\nrepos:\n - url: u\n   branch: 3.10\n") == (
        "c.yaml: repos.0.branch: expected a string (quote it: YAML read it as a number or a "
        f"bool), got 3.1: {FIX_CONFIG}"
    )
    checked, _ = check("version: 1\nrepos:\n - url: u\n   branch: '3.10'\n   depth: 0\n")
    assert checked["repos"][0] == {"url": "u", "branch": "3.10", "depth": 0}


def test_merge_maps_by_key_and_replaces_lists():
    base = schema.defaults()
    layer, _ = check("version: 1\ngit:\n  allowed_hosts: [a.org]\nrepos:\n - url: u\n")
    merged = config.merge(base, layer)
    assert merged["git"]["allowed_hosts"] == ["a.org"]
    assert merged["git"]["allowed_schemes"] == base["git"]["allowed_schemes"]
    assert merged["repos"] == [{"url": "u"}]
    sources: dict[str, str] = {}
    config.record_sources(sources, layer, "admin")
    assert sources == {"git.allowed_hosts": "admin", "repos": "admin"}


def test_dotfile_keeps_only_repos_and_never_on_diverge():
    repos, warnings = config.parse_dotfile(
        b"version: 1\nrepos:\n - url: u\n   on_diverge: backup\ndeadline: 1\n", "~/.nbinit.yaml"
    )
    assert repos == [{"url": "u"}]
    assert warnings == [
        "~/.nbinit.yaml: deadline: only `repos` is honoured in a user dotfile, ignored"
    ]


def test_defaults_validate_cleanly():
    checked, warnings = config.check_config(schema.defaults(), "defaults")
    assert warnings == []
    assert checked == schema.defaults()
