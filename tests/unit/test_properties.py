"""Property tests: whatever bytes or trees the parsers, the validator, the merge and the
status reader get, each returns a result or raises NbinitError, nothing else.

The example budget is fixed (the `nbinit` Hypothesis profile, 200 examples per test,
derandomized), so CI runs the same cases in the same few seconds every time.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbinit import config, schema, status
from nbinit.errors import NbinitError

settings.register_profile(
    "nbinit",
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("nbinit")

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["https://git.example.org/a.git", "main", "..", "/etc", "auto", 1, 0.5])
)
keys = st.text(max_size=12) | st.sampled_from(
    ["version", "repos", "url", "dest", "branch", "depth", "git", "user", "gpu", "deadline"]
)
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=40,
)
# Documents shaped like configs: the known sections, with anything inside them.
config_like = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 2, "1", None])},
    optional={name: trees for name in schema.CONFIG["properties"] if name != "version"},
)
yaml_alphabet = (
    string.ascii_letters[:6] + string.digits[:3] + "[]{}:-,&*!?|>'\"#%@` \n\t.~<\\\x00\x85"
)
yaml_like_text = st.text(alphabet=yaml_alphabet, max_size=200)


def plain(value, depth=0) -> bool:
    """Only the types a config can hold, no deeper than the loader allows."""
    if depth > config.MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return all(not isinstance(k, (dict, list)) for k in value) and all(
            plain(v, depth + 1) for v in value.values()
        )
    if isinstance(value, list):
        return all(plain(v, depth + 1) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def loads_or_refuses(data: bytes, rules=None):
    try:
        return config.review(data, "p.yaml", rules)
    except NbinitError:  # review reports problems as lists; an exception is still allowed
        return None


def to_yaml(tree) -> bytes:
    try:
        return yaml.safe_dump(tree, allow_unicode=True).encode("utf-8", "surrogatepass")
    except (yaml.YAMLError, UnicodeEncodeError):
        return b"version: 1\n"


@given(st.binary(max_size=400))
def test_loader_on_any_bytes(data):
    with contextlib.suppress(NbinitError):
        assert plain(config.parse_yaml(data, "p.yaml"))


@given(yaml_like_text)
def test_loader_on_yaml_punctuation(text):
    with contextlib.suppress(NbinitError):
        assert plain(config.parse_yaml(text.encode("utf-8", "surrogatepass"), "p.yaml"))


@given(trees)
def test_loader_on_any_tree_written_as_yaml_and_as_json(tree):
    for data in (to_yaml(tree), json.dumps(tree).encode()):
        with contextlib.suppress(NbinitError):
            assert plain(config.parse_yaml(data, "p.yaml"))


@given(config_like, st.sampled_from([schema.CONFIG, schema.DOTFILE]))
def test_review_returns_a_checked_config_or_errors(tree, rules):
    layer, errors, warnings = loads_or_refuses(to_yaml(tree), rules) or (None, ["x"], [])
    assert (layer is None) == bool(errors)
    assert all(isinstance(m, str) for m in errors + warnings)
    if layer is not None:  # a checked layer re-validates clean, and merged over the defaults
        assert config.validate(layer, rules) == ([], [])
        if rules is schema.CONFIG:
            assert config.validate(config.merge(schema.defaults(), layer), rules) == ([], [])


@given(trees, st.sampled_from([schema.CONFIG, schema.DOTFILE, schema.REPO_ITEM]))
def test_validator_on_any_tree(tree, rules):
    errors, warnings = config.validate(tree, rules)
    assert all(isinstance(m, str) for m in errors + warnings)


@given(st.dictionaries(keys, trees, max_size=6), st.dictionaries(keys, trees, max_size=6))
def test_merge_on_any_trees(base, overlay):
    merged = config.merge(base, overlay)
    assert set(merged) == set(base) | set(overlay)
    for key, value in overlay.items():
        if not (isinstance(value, dict) and isinstance(base.get(key), dict)):
            assert merged[key] == value or (isinstance(value, float) and math.isnan(value))


@given(st.binary(max_size=400) | trees.map(to_yaml))
def test_dotfile_on_anything(data):
    try:
        repos, warnings = config.parse_dotfile(data, "~/.nbinit.yaml")
    except NbinitError:
        return
    assert all(isinstance(r, dict) and isinstance(r["url"], str) for r in repos)
    assert all(isinstance(w, str) for w in warnings)


@given(st.binary(max_size=400) | trees.map(lambda t: json.dumps(t).encode()))
def test_json_reader_on_anything(data):
    with contextlib.suppress(NbinitError):
        assert plain(config.parse_json(data, "p.json"))


@pytest.fixture(scope="module")
def status_file(tmp_path_factory):
    return str(tmp_path_factory.mktemp("status") / "status.json")


@given(
    data=st.binary(max_size=400)
    | trees.map(lambda t: json.dumps(t).encode())
    | st.dictionaries(
        st.sampled_from(["steps", "warnings", "errors", "outcome", "finished", "repos_progress"]),
        trees,
    ).map(lambda t: json.dumps(t).encode())
)
def test_status_reader_and_table_on_anything(status_file, data):
    with open(status_file, "wb") as handle:
        handle.write(data)
    env = {"NBINIT_STATUS_FILE": status_file, "HOME": os.path.dirname(status_file)}
    path, found, problem = status.read_status(env)
    assert path == status_file
    if found is None:
        assert problem.startswith(status_file)
    else:
        assert isinstance(status.format_table(found), str)
        json.dumps(found, indent=2, sort_keys=True)
