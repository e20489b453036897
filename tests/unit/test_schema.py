"""The published JSON Schemas: generated from schema.py, and in agreement with nbinit's validator.

Agreement on a corpus (tests/data/configs): a file is jsonschema-valid exactly when nbinit
reports neither an error nor a warning (nbinit warns on unknown keys where the schema says
additionalProperties: false). The one rule JSON Schema cannot say, uid_min <= uid_max, is
checked by nbinit alone and stays out of the corpus.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from nbinit import config, schema, schemadoc

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "configs"
PUBLISHED = {
    "config": ROOT / "configs" / "nbinit.schema.json",
    "dotfile": ROOT / "configs" / "dotfile.schema.json",
}
RULES = {"config": schema.CONFIG, "dotfile": schema.DOTFILE}


@pytest.mark.parametrize("which", ["config", "dotfile"])
def test_published_schema_is_the_generated_one(which):
    generated = subprocess.run(
        [sys.executable, "-m", "nbinit.schema", which],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert PUBLISHED[which].read_text() == generated, (
        f"regenerate: python -m nbinit.schema {which} > {PUBLISHED[which].relative_to(ROOT)}"
    )
    jsonschema.Draft202012Validator.check_schema(json.loads(generated))


def corpus(kind: str) -> list:
    cases = []
    for verdict in ("good", "bad"):
        folder = CORPUS / (verdict if kind == "config" else f"dotfile-{verdict}")
        for path in sorted(folder.glob("*.yaml")):
            cases.append(pytest.param(kind, verdict, path, id=f"{kind}-{verdict}-{path.stem}"))
    return cases


def nbinit_verdict(rules, path: Path) -> tuple[bool, list[str]]:
    data = config.parse_yaml(path.read_bytes(), path.name)
    if not isinstance(data, dict):
        return False, ["not a mapping"]
    errors, warnings = config.validate(data, rules)
    return not (errors or warnings), errors + warnings


@pytest.mark.parametrize("kind, verdict, path", corpus("config") + corpus("dotfile"))
def test_schema_and_validator_agree(kind, verdict, path):
    validator = jsonschema.Draft202012Validator(json.loads(PUBLISHED[kind].read_text()))
    data = config.parse_yaml(path.read_bytes(), path.name)
    schema_errors = [e.message for e in validator.iter_errors(data)]
    nbinit_ok, nbinit_problems = nbinit_verdict(RULES[kind], path)
    assert nbinit_ok == (verdict == "good"), nbinit_problems
    assert (not schema_errors) == (verdict == "good"), schema_errors


def test_corpus_is_not_trivial():
    assert len(corpus("config")) >= 30 and len(corpus("dotfile")) >= 5


def test_config_reference_is_the_generated_one():
    generated = subprocess.run(
        [sys.executable, "-m", "nbinit.schema", "markdown"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    committed = (ROOT / "docs" / "config-reference.md").read_text()
    assert committed == generated, (
        "docs/config-reference.md is stale: regenerate it with "
        "python -m nbinit.schema markdown > docs/config-reference.md"
    )


def test_config_reference_lists_every_key_and_each_has_a_meaning():
    reference = (ROOT / "docs" / "config-reference.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_.\[\]]+)` \|.*\| ([^|]*) \|$", reference, flags=re.M))
    paths = [path for path, _ in schemadoc.keys(schema.CONFIG)]
    assert sorted(rows) == sorted(paths)
    assert [path for path in paths if not rows[path].strip()] == [], "add a description"


def test_trust_column_follows_the_code():
    assert schemadoc.set_by("user.home") == "baked, admin"
    assert schemadoc.set_by("hooks.dir") == "baked, admin"
    assert schemadoc.set_by("user.secret_env") == "baked, admin (any)"
    assert schemadoc.set_by("hooks.timeout") == "baked, admin (any)"
    assert schemadoc.set_by("repos[].url") == "baked, admin (any), dotfile"
    assert schemadoc.set_by("repos[].on_diverge") == "baked, admin (any)"
