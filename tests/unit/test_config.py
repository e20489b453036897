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
            "c.yaml: invalid YAML at line 2, column 4: the tag !!python/object/apply:os.system "
            "is not allowed: write plain strings, numbers, true/false, lists and mappings "
            "(no !! tags)",
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


TAGS_FIX = "write plain strings, numbers, true/false, lists and mappings (no !! tags)"


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param(
            "version: 1\ndeadline: !!float soon\n",
            f'c.yaml: invalid YAML at line 2, column 11: "soon" is not a valid !!float: {TAGS_FIX}',
            id="float-tag-on-a-word",
        ),
        pytest.param(
            "version: !!int one\n",
            f'c.yaml: invalid YAML at line 1, column 10: "one" is not a valid !!int: {TAGS_FIX}',
            id="int-tag-on-a-word",
        ),
        pytest.param(
            "version: 1\nx: !!timestamp never\n",
            f"c.yaml: invalid YAML at line 2, column 4: the tag !!timestamp is not allowed: "
            f"{TAGS_FIX}",
            id="timestamp-tag",
        ),
        pytest.param(
            "version: 1\nx: !!binary '@@'\n",
            "c.yaml: invalid YAML at line 2, column 4: the tag !!binary is not allowed: "
            + TAGS_FIX,
            id="binary-tag",
        ),
        pytest.param(
            "version: 1\nx: !!set {a: 1}\n",
            f"c.yaml: invalid YAML at line 2, column 4: the tag !!set is not allowed: {TAGS_FIX}",
            id="set-tag",
        ),
        pytest.param(
            "version: 1\nx: !!python/name:os.system ''\n",
            "c.yaml: invalid YAML at line 2, column 4: the tag !!python/name:os.system is not "
            f"allowed: {TAGS_FIX}",
            id="python-name-tag",
        ),
        pytest.param(
            "version: 1\nx: !vault abc\n",
            f"c.yaml: invalid YAML at line 2, column 4: the tag !vault is not allowed: {TAGS_FIX}",
            id="local-tag",
        ),
        pytest.param(
            "version: 1\n? [a, b]\n: 1\n",
            "c.yaml: invalid YAML at line 2, column 8: a mapping key must be a plain value, not a "
            f"list or mapping: {FIX_YAML}",
            id="list-as-key",
        ),
        pytest.param(
            "version: 1\n{a: 1}: 2\n",
            "c.yaml: invalid YAML at line 2, column 6: a mapping key must be a plain value, not a "
            f"list or mapping: {FIX_YAML}",
            id="mapping-as-key",
        ),
        pytest.param(
            "version: 1\nrepos: [{url: u, depth: " + "9" * 4400 + "}]\n",
            "c.yaml: invalid YAML at line 2, column 25: a value is 4400 characters, over 4096: "
            "shorten it",
            id="int-over-4300-digits",
        ),
        pytest.param(
            "version: 1\ndeadline: " + "9" * 31 + "\n",
            "c.yaml: invalid YAML at line 2, column 11: a number has more than 30 digits: "
            "shorten it",
            id="int-over-30-digits",
        ),
        pytest.param(
            'version: 1\nrepos: [{url: "a\\0b"}]\n',
            "c.yaml: invalid YAML at line 2, column 15: a value contains a NUL character: "
            "remove it",
            id="nul-escape",
        ),
        pytest.param(
            b"version: 1\nx: a\x00b\n",
            "c.yaml: invalid YAML at character 15: special character U+0000 is not allowed: "
            "remove it, or write it as an escape in double quotes",
            id="raw-nul",
        ),
        pytest.param(
            "version: 1\nbase: &b {deadline: 5}\n<<: *b\n",
            "c.yaml: invalid YAML at line 3, column 1: merge keys (<<) are not supported: "
            "write the keys out",
            id="merge-key",
        ),
        pytest.param(
            "version: 1\n---\nversion: 1\n",
            "c.yaml: invalid YAML at line 2, column 1: more than one document (---): "
            "keep one document",
            id="two-documents",
        ),
        pytest.param(
            "version: 1\nx: &a [*a]\n",
            f"c.yaml: invalid YAML at line 2, column 8: alias *a is undefined: {FIX_YAML}",
            id="self-referencing-alias",
        ),
        pytest.param(
            "version: 1\na: &a ["
            + ",".join(["x"] * 999)
            + "]\n"
            + "".join(f"b{i}: *a\n" for i in range(11)),
            "c.yaml: more than 10000 values (aliases expanded): write the config out plainly; "
            "nbinit reads at most 10000 of these",
            id="alias-expansion-over-10000",
        ),
        pytest.param(
            "version: 1\nx: [" + ",".join(["1"] * 1001) + "]\n",
            "c.yaml: a list or mapping has more than 1000 entries: write the config out "
            "plainly; nbinit reads at most 1000 of these",
            id="list-of-1001",
        ),
        pytest.param(
            "version: 1\ndeadline: !!float .nan\n",
            f"c.yaml: deadline: expected a finite number, got NaN: {FIX_CONFIG}",
            id="nan-deadline",
        ),
        pytest.param(
            "version: 1\ngit: {timeout: 1e999}\n",
            f"c.yaml: git.timeout: expected a finite number, got Infinity: {FIX_CONFIG}",
            id="infinite-timeout",
        ),
    ],
)
def test_every_value_the_loader_cannot_build_is_one_error(text, message):
    assert refused(text) == message


def test_plain_scalars_read_as_yaml_1_2():
    data = config.parse_yaml(
        b"a: ~\nb: null\nc:\nd: True\ne: -12\nf: 1.5e3\ng: 2024-01-01\nh: yes\ni: '7'\n"
        b"j: !!str 8\nk: !!float 3\nl: !!bool false\nm: !!null ''\n",
        "c.yaml",
    )
    assert data == {
        "a": None, "b": None, "c": None, "d": True, "e": -12, "f": 1500.0, "g": "2024-01-01",
        "h": "yes", "i": "7", "j": "8", "k": 3.0, "l": False, "m": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    "data, message",
    [
        pytest.param(b"[" * 200_000 + b"]" * 200_000, "x.json: nested too deep", id="200000-deep"),
        pytest.param(b"[" * 40 + b"]" * 40, "x.json: nested deeper than 32 levels", id="40-deep"),
        pytest.param(b"\xff\xfe", "x.json: not valid JSON", id="binary"),
        pytest.param(b"9" * 5000, "x.json: not valid JSON", id="int-over-4300-digits"),
    ],
)
def test_json_readers_refuse_with_one_error(data, message):
    with pytest.raises(NbinitError) as caught:
        config.parse_json(data, "x.json")
    assert caught.value.problem == message


def test_a_step_before_or_after_a_broken_config_reads_the_defaults():
    from nbinit.context import Context, Deadline
    from nbinit.log import Log

    ctx = Context(mode="start", env={}, log=Log(), deadline=Deadline(20))
    assert ctx.section("user") == schema.defaults()["user"]
    ctx.config = {"version": 1}  # a config step that died before its last layer
    assert ctx.section("repos") == []


def test_any_exception_reading_the_admin_config_is_a_failed_config(tmp_path, monkeypatch):
    """The step's own boundary, whatever the loader may raise one day."""
    from nbinit import commands
    from nbinit.steps import config as config_step

    admin = tmp_path / "admin.yaml"
    admin.write_text("version: 1\ndeadline: 9\n")
    monkeypatch.setenv("NBINIT_BAKED_CONFIG", str(tmp_path / "absent.yaml"))
    monkeypatch.setenv("NBINIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NBINIT_CONFIG_URL", str(admin))
    monkeypatch.delenv("NBINIT_DEADLINE", raising=False)

    def crash(data, origin, rules=None):
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr(config, "parse_and_check", crash)
    ctx = commands.make_context("start")
    result = config_step.run(ctx)
    assert result.outcome == "degraded"
    assert ctx.log.warnings == [
        f"{admin}: cannot be read (TypeError): fix the config; if `nbinit config validate` "
        "accepts it, report a bug in nbinit; using built-in defaults (no last good copy)"
    ]
    assert ctx.config == schema.defaults()


def test_the_seeded_reader_pattern_matches_exactly_what_pyyaml_refuses():
    """config seeds re's cache so yaml.reader skips a 5-8 ms compile: same characters, every
    code point checked (surrogates, U+FFFE/FFFF and the C1 controls included)."""
    import re

    everything = "".join(map(chr, range(0x110000)))
    pyyaml = re.compile(config._YAML_NON_PRINTABLE).findall(everything)
    assert re.compile(config._NON_PRINTABLE).findall(everything) == pyyaml
    assert len(pyyaml) == 2111  # so the check can fail: controls, surrogates, noncharacters


def test_pyyaml_takes_the_seeded_pattern_and_still_refuses_a_control_character():
    import subprocess
    import sys

    code = (
        "from nbinit import config, errors\n"
        "try:\n"
        "    config.parse_yaml(b'version: 1\\nx: a\\x07b\\n', 'c.yaml')\n"
        "except errors.NbinitError as exc:\n"
        "    print(exc.problem)\n"
        "import yaml\n"
        "print(yaml.reader.Reader.NON_PRINTABLE.pattern == config._NON_PRINTABLE)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.splitlines() == [
        "c.yaml: invalid YAML at character 15: special character U+0007 is not allowed",
        "True",  # a new PyYAML with other text compiles its own: the start is slower, not wrong
    ], result.stderr
