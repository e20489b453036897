"""Parse, validate and merge nbinit configs: YAML in, one checked dict out, never half applied."""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any, Optional

from nbinit import schema
from nbinit.errors import NbinitError

MAX_CONFIG_BYTES = 1024 * 1024
MAX_ALIASES = 20  # safe_load shares aliased nodes; whatever walks the result expands them
MAX_DEPTH = 32
MAX_SHOWN_VALUE = 60  # never echo long raw values: a dotfile may be a link to a secret

FIX_YAML = "fix the YAML syntax (yamllint or `nbinit config validate FILE` shows where)"


@functools.cache
def _strict_loader() -> Any:
    """SafeLoader with YAML 1.2-like scalars and duplicate keys refused.

    YAML 1.1 reads `01750` as octal 1000 and `no` as false; for uids and branch names that
    silently changes meaning, so such scalars stay strings and validation names them.
    Built on first use: importing yaml costs tens of milliseconds that a start with no
    config file to read should not pay.
    """
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    dropped = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    StrictLoader.yaml_implicit_resolvers = {
        key: [(tag, regexp) for tag, regexp in resolvers if tag not in dropped]
        for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:bool",
        re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
        list("tTfF"),
    )
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
    )
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?$"),
        list("-+0123456789"),
    )

    def construct_mapping(loader: Any, node: Any) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return dict(loader.construct_mapping(node, deep=True))

    StrictLoader.add_constructor("tag:yaml.org,2002:map", construct_mapping)
    return StrictLoader


def parse_yaml(data: bytes, origin: str) -> Any:
    """YAML bytes to Python data, refusing what would hurt whoever walks the result."""
    import yaml

    if len(data) > MAX_CONFIG_BYTES:
        raise NbinitError(
            f"{origin}: config is {len(data)} bytes, over the {MAX_CONFIG_BYTES} byte limit",
            "serve the config itself, not a bundle or an error page",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NbinitError(
            f"{origin}: config is not UTF-8 (byte {exc.start})", "save the file as UTF-8"
        ) from None
    if not text.strip():
        raise NbinitError(f"{origin}: config is empty", "it needs at least `version: 1`")
    try:
        aliases = depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise NbinitError(
                        f"{origin}: more than {MAX_ALIASES} YAML aliases (*name)",
                        "write the values out; nbinit refuses alias bombs",
                    )
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise NbinitError(
                        f"{origin}: nested deeper than {MAX_DEPTH} levels", "flatten the config"
                    )
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise NbinitError(f"{origin}: invalid YAML{where}: {exc.problem}", FIX_YAML) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise NbinitError(f"{origin}: invalid YAML: {type(exc).__name__}", FIX_YAML) from None


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else f'"{value}"'
    if len(text) > MAX_SHOWN_VALUE:
        text = text[: MAX_SHOWN_VALUE - 3] + "..."
    return text


_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _has_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    return value is None


_YAML11_BOOLS = ("yes", "no", "on", "off", "y", "n")


def _yaml11_hint(value: Any) -> str:
    """Why a scalar that other YAML readers turn into a number or a bool is a string here."""
    if not isinstance(value, str):
        return ""
    if re.fullmatch(r"[-+]?0[0-9]+", value):
        return " (a leading 0 would make it octal in YAML 1.1: write the number without it)"
    if value.lower() in _YAML11_BOOLS:
        return " (YAML 1.1 yes/no/on/off are not booleans here: write true or false)"
    return ""


def _pattern_matches(pattern: str, value: str) -> bool:
    """JSON Schema's (ECMA) reading: `$` is the end of the string, not before a final newline.

    Python's `$` also matches before a trailing "\n", so `alice\n` would pass `^[a-z]+$`.
    """
    found = re.search(pattern, value)
    return found is not None and (not pattern.endswith("$") or found.end() == len(value))


def validate(value: Any, rules: dict[str, Any], path: str = "") -> tuple[list[str], list[str]]:
    """Check value against a schema; errors and warnings each name the key path."""
    errors: list[str] = []
    warnings: list[str] = []
    where = path or "(top)"

    def expected(what: str) -> None:
        errors.append(f"{where}: expected {what}, got {_show(value)}{_yaml11_hint(value)}")

    if "const" in rules and (value != rules["const"] or isinstance(value, bool)):
        expected(_show(rules["const"]))
        return errors, warnings
    if "enum" in rules:
        options = rules["enum"]
        if not any(value == o and type(value) is type(o) for o in options):
            expected("one of " + ", ".join(_show(o) for o in options))
        return errors, warnings
    kind = rules.get("type")
    if kind and not _has_type(value, kind):
        word = _TYPE_WORDS[kind]
        if kind in ("integer", "number") and "minimum" in rules:
            word += f" >= {rules['minimum']}"
        if kind == "string" and isinstance(value, (int, float, bool)):
            word += " (quote it: YAML read it as a number or a bool)"
        expected(word)
        return errors, warnings
    if kind in ("integer", "number"):
        low, high = rules.get("minimum"), rules.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"from {low} to {high}"
            expected(f"{_TYPE_WORDS[kind]} {bounds}")
    elif kind == "string":
        if len(value) < rules.get("minLength", 0):
            expected("a non-empty string")
        elif "pattern" in rules and not _pattern_matches(rules["pattern"], value):
            expected(f"a string matching {rules['pattern']}")
    elif kind == "array":
        if len(value) > rules.get("maxItems", len(value)):
            expected(f"at most {rules['maxItems']} items")
        for index, item in enumerate(value):
            e, w = validate(item, rules.get("items", {}), f"{path}.{index}" if path else str(index))
            errors += e
            warnings += w
    elif kind == "object":
        properties = rules.get("properties", {})
        for key in rules.get("required", []):
            if key not in value:
                errors.append(f"{path + '.' if path else ''}{key}: required, missing")
        for key, item in value.items():
            key_path = f"{path}.{key}" if path else str(key)
            if key in properties:
                e, w = validate(item, properties[key], key_path)
                errors += e
                warnings += w
            else:
                import difflib  # only when a key is unknown

                guess = difflib.get_close_matches(str(key), list(properties), n=1)
                hint = f" (did you mean {guess[0]!r}?)" if guess else ""
                warnings.append(f"{key_path}: unknown key, ignored{hint}")
    return errors, warnings


def strip_unknown(value: Any, rules: dict[str, Any]) -> Any:
    """The config without unknown keys, which validation reported as warnings."""
    if isinstance(value, dict) and rules.get("type") == "object":
        props = rules.get("properties", {})
        return {k: strip_unknown(v, props[k]) for k, v in value.items() if k in props}
    if isinstance(value, list) and rules.get("type") == "array":
        return [strip_unknown(v, rules.get("items", {})) for v in value]
    return value


def check_config(
    data: Any, origin: str, rules: Optional[dict[str, Any]] = None
) -> tuple[dict[str, Any], list[str]]:
    """A whole validated config and its warnings, or NbinitError naming every error."""
    layer, errors, warnings = _review_parsed(data, origin, rules)
    if layer is None:
        if not isinstance(data, dict):
            raise NbinitError(errors[0], "start the file with `version: 1`")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise NbinitError(errors[0] + more, "fix the config; `nbinit config validate` lists all")
    return layer, warnings


def review(
    data: bytes, origin: str, rules: Optional[dict[str, Any]] = None
) -> tuple[Optional[dict[str, Any]], list[str], list[str]]:
    """Parse once: (the checked config, or None), every error, every warning; all name origin."""
    try:
        parsed = parse_yaml(data, origin)
    except NbinitError as exc:
        return None, [str(exc)], []
    return _review_parsed(parsed, origin, rules)


def _review_parsed(
    parsed: Any, origin: str, rules: Optional[dict[str, Any]]
) -> tuple[Optional[dict[str, Any]], list[str], list[str]]:
    rules = schema.CONFIG if rules is None else rules
    if not isinstance(parsed, dict):
        return None, [f"{origin}: expected a mapping at the top, got {_show(parsed)}"], []
    errors, warnings = validate(parsed, rules)
    errors = errors or _cross_checks(parsed)
    if errors:
        return None, [f"{origin}: {e}" for e in errors], []
    return strip_unknown(parsed, rules), [], [f"{origin}: {w}" for w in warnings]


def _cross_checks(data: dict[str, Any]) -> list[str]:
    user = data.get("user") or {}
    if user.get("uid_min", 1000) > user.get("uid_max", 60000):
        return ["user.uid_min: must not be larger than user.uid_max"]
    return []


def parse_and_check(
    data: bytes, origin: str, rules: Optional[dict[str, Any]] = None
) -> tuple[dict[str, Any], list[str]]:
    return check_config(parse_yaml(data, origin), origin, rules)


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; lists and scalars from the overlay replace the base."""
    result = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def record_sources(sources: dict[str, str], layer: dict[str, Any], origin: str) -> None:
    """Remember which layer set each key, down to the second level (`git.allowed_hosts`)."""
    for key, value in layer.items():
        if key == "version":
            continue
        if isinstance(value, dict):
            for sub in value:
                sources[f"{key}.{sub}"] = origin
        else:
            sources[key] = origin


def parse_dotfile(data: bytes, origin: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The repos a user's dotfile declares; any other key is reported and ignored."""
    parsed = parse_yaml(data, origin)
    if parsed is None:
        return [], []
    if not isinstance(parsed, dict):
        raise NbinitError(
            f"{origin}: expected a mapping with `repos:`, got {_show(parsed)}",
            "see configs/user-dotfile.yaml for the form",
        )
    warnings = [
        f"{origin}: {key}: only `repos` is honoured in a user dotfile, ignored"
        for key in parsed
        if key not in ("repos", "version")
    ]
    user_part = {k: v for k, v in parsed.items() if k in ("repos", "version")}
    checked, more = check_config(user_part, origin, schema.DOTFILE)
    repos = [dict(item) for item in checked.get("repos", [])]
    for item in repos:
        item.pop("on_diverge", None)  # only the admin may ask for destructive recovery
    return repos, warnings + more
