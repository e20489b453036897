"""Parse, validate and merge nbinit configs: YAML in, one checked dict out, never half applied."""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any, Optional

from nbinit import schema
from nbinit.errors import NbinitError

MAX_CONFIG_BYTES = 1024 * 1024
MAX_DOTFILE_BYTES = 64 * 1024  # 100 repos (repos.maxItems) fit many times over
MAX_ALIASES = 20
MAX_DEPTH = 32
# Counted while the document is read, so no input costs more than this to build or to walk:
MAX_NODES = 10_000  # values, lists and mappings, each alias counted as a copy of what it names
MAX_ITEMS = 1_000  # entries in one list or mapping
MAX_STRING = 4_096  # characters in one key or value (PATH_MAX; a URL is far shorter)
MAX_DIGITS = 30  # int('9' * 5000) raises ValueError (CVE-2020-10735); no setting needs 30
MAX_SHOWN_VALUE = 60  # never echo long raw values: a dotfile may be a link to a secret

FIX_YAML = "fix the YAML syntax (yamllint or `nbinit config validate FILE` shows where)"
FIX_TAG = "write plain strings, numbers, true/false, lists and mappings (no !! tags)"
FIX_SIZE = "write the config out plainly; nbinit reads at most {} of these"

# YAML 1.2-like plain scalars. YAML 1.1 reads `01750` as octal 1000 and `no` as false; for
# uids and branch names that silently changes meaning, so such scalars stay strings and
# validation names them. Dates stay strings too (a branch may be called 2024-01-01).
_NULL = re.compile(r"~|null|Null|NULL|")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_FLOAT_SPECIAL = {".inf": "inf", "+.inf": "inf", "-.inf": "-inf", ".nan": "nan"}
_TAG = "tag:yaml.org,2002:"
_NO_KEY = object()

# PyYAML's reader compiles this class at import: 5-8 ms of every start, its most expensive
# line, because a negated class over all of Unicode makes sre build a table of it. The same
# characters as a short positive class compile in under 1 ms, so re's cache is given that
# pattern under PyYAML's text before the import, and yaml.reader gets it from re.compile.
# tests/unit/test_config.py checks, for every code point, that both match the same
# characters, and that the seed is taken; a PyYAML with other text just compiles its own.
_YAML_NON_PRINTABLE = "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
_NON_PRINTABLE = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]"


def _import_yaml() -> Any:
    """PyYAML, its reader's pattern taken from re's cache when this imports it."""
    import sys

    cache = getattr(re, "_cache", None)
    if "yaml" not in sys.modules and isinstance(cache, dict):
        cache.setdefault((str, _YAML_NON_PRINTABLE, 0), re.compile(_NON_PRINTABLE))
    import yaml

    return yaml


def parse_yaml(data: bytes, origin: str, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """YAML bytes to plain data (str, int, float, bool, None, list, dict), or NbinitError.

    The document is built from the parser's events by one loop, not by PyYAML's recursive
    constructor: whatever the input, the result is at most MAX_DEPTH deep and MAX_NODES
    big (aliases expanded), holds no other type and no cycle, and building it raises
    nothing but NbinitError. Only the standard tags for those types are accepted.
    """
    if len(data) > max_bytes:
        raise NbinitError(
            f"{origin}: config is {len(data)} bytes, over the {max_bytes} byte limit",
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
    yaml = _import_yaml()

    try:
        return _Builder(origin).build(yaml.parse(text, Loader=yaml.SafeLoader))
    except NbinitError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise NbinitError(f"{origin}: invalid YAML{where}: {exc.problem}", FIX_YAML) from None
    except yaml.reader.ReaderError as exc:
        raise NbinitError(
            f"{origin}: invalid YAML at character {exc.position}: "
            f"special character U+{exc.character:04X} is not allowed",
            "remove it, or write it as an escape in double quotes",
        ) from None
    except Exception as exc:  # noqa: BLE001 - whatever PyYAML raises is a bad document
        raise NbinitError(f"{origin}: invalid YAML: {type(exc).__name__}", FIX_YAML) from None


class _Builder:
    """Plain data from a YAML event stream, with every bound checked as it grows."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.nodes = 0
        self.aliases = 0
        # Each open list or mapping: [container, pending key, anchor, nodes when opened].
        self.stack: list[list[Any]] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.documents = 0
        self.result: Any = None

    def fail(self, event: Any, problem: str, fix: str = FIX_YAML) -> NbinitError:
        mark = getattr(event, "start_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return NbinitError(f"{self.origin}: invalid YAML{where}: {problem}", fix)

    def count(self, event: Any, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > MAX_NODES:
            raise NbinitError(
                f"{self.origin}: more than {MAX_NODES} values (aliases expanded)",
                FIX_SIZE.format(MAX_NODES),
            )

    def build(self, events: Any) -> Any:
        import yaml

        for event in events:
            if isinstance(event, yaml.ScalarEvent):
                self.count(event, 1)
                value = self.scalar(event)
                if event.anchor:
                    self.anchors[event.anchor] = (value, 1)
                self.add(event, value)
            elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                is_map = isinstance(event, yaml.MappingStartEvent)
                if event.tag not in (None, "!", _TAG + ("map" if is_map else "seq")):
                    raise self.fail(event, f"the tag {_short(event.tag)} is not allowed", FIX_TAG)
                if len(self.stack) >= MAX_DEPTH:
                    raise NbinitError(
                        f"{self.origin}: nested deeper than {MAX_DEPTH} levels",
                        "flatten the config",
                    )
                self.count(event, 1)
                self.stack.append([{} if is_map else [], _NO_KEY, event.anchor, self.nodes])
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                container, _, anchor, opened = self.stack.pop()
                if anchor:
                    # Registered only once closed: `&a [*a]` is an undefined alias, never a cycle.
                    self.anchors[anchor] = (container, self.nodes - opened + 1)
                self.add(event, container)
            elif isinstance(event, yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    raise NbinitError(
                        f"{self.origin}: more than {MAX_ALIASES} YAML aliases (*name)",
                        "write the values out; nbinit refuses alias bombs",
                    )
                if event.anchor not in self.anchors:
                    raise self.fail(
                        event, f"alias *{str(event.anchor)[:MAX_SHOWN_VALUE]} is undefined"
                    )
                value, size = self.anchors[event.anchor]
                self.count(event, size)
                self.add(event, value)
            elif isinstance(event, yaml.DocumentStartEvent):
                self.documents += 1
                if self.documents > 1:
                    raise self.fail(event, "more than one document (---)", "keep one document")
        return self.result

    def add(self, event: Any, value: Any) -> None:
        if not self.stack:
            self.result = value
            return
        frame = self.stack[-1]
        container, key = frame[0], frame[1]
        if len(container) >= MAX_ITEMS:
            raise NbinitError(
                f"{self.origin}: a list or mapping has more than {MAX_ITEMS} entries",
                FIX_SIZE.format(MAX_ITEMS),
            )
        if isinstance(container, list):
            container.append(value)
        elif key is _NO_KEY:
            if isinstance(value, (list, dict)):
                raise self.fail(event, "a mapping key must be a plain value, not a list or mapping")
            if value in container:
                shown = value[:MAX_SHOWN_VALUE] if isinstance(value, str) else value
                raise self.fail(event, f"duplicate key {shown!r}")
            if value == "<<" and getattr(event, "implicit", (False,))[0]:
                raise self.fail(event, "merge keys (<<) are not supported", "write the keys out")
            frame[1] = value
        else:
            container[key] = value
            frame[1] = _NO_KEY

    def scalar(self, event: Any) -> Any:
        text = event.value
        if len(text) > MAX_STRING:
            raise self.fail(
                event, f"a value is {len(text)} characters, over {MAX_STRING}", "shorten it"
            )
        if "\0" in text:  # from a "\0" escape: no path, URL or argument can hold one
            raise self.fail(event, "a value contains a NUL character", "remove it")
        tag = event.tag
        if tag is None and event.implicit[0]:  # plain: resolve like YAML 1.2's core schema
            if _NULL.fullmatch(text):
                return None
            if text in _BOOL:
                return _BOOL[text]
            if _INT.fullmatch(text):
                return self.integer(event, text)
            if _FLOAT.fullmatch(text):
                return float(text)
            return text
        if tag in (None, "!", _TAG + "str"):
            return text
        if tag == _TAG + "int" and _INT.fullmatch(text):
            return self.integer(event, text)
        if tag == _TAG + "float" and (_FLOAT.fullmatch(text) or text.lower() in _FLOAT_SPECIAL):
            return float(_FLOAT_SPECIAL.get(text.lower(), text))
        if tag == _TAG + "bool" and text in _BOOL:
            return _BOOL[text]
        if tag == _TAG + "null" and _NULL.fullmatch(text):
            return None
        if tag in (_TAG + "int", _TAG + "float", _TAG + "bool", _TAG + "null"):
            raise self.fail(event, f"{_show(text)} is not a valid {_short(tag)}", FIX_TAG)
        raise self.fail(event, f"the tag {_short(tag)} is not allowed", FIX_TAG)

    def integer(self, event: Any, text: str) -> int:
        if len(text.lstrip("+-")) > MAX_DIGITS:
            raise self.fail(event, f"a number has more than {MAX_DIGITS} digits", "shorten it")
        return int(text)


def _short(tag: str) -> str:
    shown = "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag
    return shown if len(shown) <= MAX_SHOWN_VALUE else shown[: MAX_SHOWN_VALUE - 3] + "..."


def parse_json(data: bytes, origin: str, max_depth: int = MAX_DEPTH) -> Any:
    """JSON bytes to plain data no deeper than max_depth, or NbinitError; nothing else.

    json.loads stops a deep document with RecursionError (caught); the depth check after it
    keeps anything walking the result (json.dumps with indent, a table) from recursing far.
    """
    try:
        value = json.loads(data)
    except (ValueError, RecursionError, MemoryError) as exc:
        problem = "nested too deep" if isinstance(exc, RecursionError) else "not valid JSON"
        raise NbinitError(
            f"{origin}: {problem}", "remove the file; nbinit writes it again"
        ) from None
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                raise NbinitError(
                    f"{origin}: nested deeper than {max_depth} levels",
                    "remove the file; nbinit writes it again",
                )
            todo.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return value


def _show(value: Any) -> str:
    if isinstance(value, str):
        text = f'"{value[:MAX_SHOWN_VALUE]}"'
    else:
        try:
            text = json.dumps(value, default=str)
        except (TypeError, ValueError, RecursionError):
            text = type(value).__name__
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
        if isinstance(value, float) and not math.isfinite(value):
            expected(f"a finite {_TYPE_WORDS[kind][2:]}")  # nan passes every comparison
        elif (low is not None and value < low) or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"from {low} to {high}"
            expected(f"{_TYPE_WORDS[kind]} {bounds}")
    elif kind == "string":
        if len(value) < rules.get("minLength", 0):
            expected("a non-empty string")
        elif len(value) > rules.get("maxLength", len(value)):
            expected(f"a string of at most {rules['maxLength']} characters")
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
    data: bytes,
    origin: str,
    rules: Optional[dict[str, Any]] = None,
    max_bytes: int = MAX_CONFIG_BYTES,
) -> tuple[Optional[dict[str, Any]], list[str], list[str]]:
    """Parse once: (the checked config, or None), every error, every warning; all name origin."""
    try:
        parsed = parse_yaml(data, origin, max_bytes)
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
    checked = strip_unknown(parsed, rules)
    errors = errors or _cross_checks(checked)  # on checked keys only: `user: 1` in a dotfile
    if errors:
        return None, [f"{origin}: {e}" for e in errors], []
    return checked, [], [f"{origin}: {w}" for w in warnings]


def _cross_checks(data: dict[str, Any]) -> list[str]:
    user = {**schema.defaults()["user"], **(data.get("user") or {})}
    if user["uid_min"] > user["uid_max"]:
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
    if len(data) > MAX_DOTFILE_BYTES:
        raise NbinitError(
            f"{origin}: larger than {MAX_DOTFILE_BYTES} bytes, the limit of a dotfile",
            "list only your repos in it (see configs/user-dotfile.yaml)",
        )
    parsed = parse_yaml(data, origin, MAX_DOTFILE_BYTES)
    if parsed is None:
        return [], []
    if not isinstance(parsed, dict):
        raise NbinitError(
            f"{origin}: expected a mapping with `repos:`, got {_show(parsed)}",
            "see configs/user-dotfile.yaml for the form",
        )
    ignored = [str(key) for key in parsed if key not in ("repos", "version")]
    warnings = [
        f"{origin}: {key[:MAX_SHOWN_VALUE]}: only `repos` is honoured in a user dotfile, ignored"
        for key in ignored[:3]
    ]
    if len(ignored) > 3:
        warnings.append(f"{origin}: {len(ignored) - 3} more keys ignored (only `repos` counts)")
    user_part = {k: v for k, v in parsed.items() if k in ("repos", "version")}
    checked, more = check_config(user_part, origin, schema.DOTFILE)
    repos = [dict(item) for item in checked.get("repos", [])]
    for item in repos:
        item.pop("on_diverge", None)  # only the admin may ask for destructive recovery
    return repos, warnings + more
