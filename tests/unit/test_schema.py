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

from nbinit import config, schema

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


def schema_keys(rules, prefix="") -> list[str]:
    keys = []
    for key, sub in rules.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        keys.append(path)
        keys += schema_keys(sub, path)
        if sub.get("type") == "array":
            keys += schema_keys(sub.get("items", {}), f"{path}[]")
    return keys


def test_readme_documents_every_schema_key():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_.\[\]]+)` \|", readme, flags=re.M))
    missing = [key for key in schema_keys(schema.CONFIG) if key not in documented]
    assert missing == [], "add to README's configuration reference: " + ", ".join(missing)
