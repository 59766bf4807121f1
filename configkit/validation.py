"""Validate a mapping into a pydantic config class; errors name file, key path and what is
allowed, in the one wording every config kind shares."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from functools import cache
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, ConfigDict, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

T = TypeVar("T")

#: Every config: unknown keys are errors, NaN and inf are not numbers.
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)

#: Scalars without coercion: an int field refuses 2.5, True and "3"; a float field takes an int
#: (as a float) but not a bool or a string; a bool field only true / false.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]


def config_dataclass(cls: type[T]) -> type[T]:
    """A frozen pydantic dataclass with :data:`STRICT`: fields are validated on construction
    (and by ``dataclasses.replace``), unknown keys refused; still a dataclass, so ``fields``,
    ``asdict`` and ``replace`` work as before. A bad value given in code raises ValueError in
    the wording of :func:`describe`, the class name first."""
    built: Any = dataclass(frozen=True, config=STRICT)(cls)
    validating_init = built.__init__

    @functools.wraps(validating_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if args:  # by name, so an error names the field and not its position
            names = [f.name for f in dataclasses.fields(built) if f.init]
            kwargs = {**dict(zip(names, args, strict=False)), **kwargs}
            args = args[len(names) :]
        try:
            validating_init(self, *args, **kwargs)
        except ValidationError as err:  # direct construction: the same wording as a file's
            raise ValueError(describe(err, built.__name__, built)) from None

    built.__init__ = __init__
    return built  # type: ignore[no-any-return]


#: A config section that ``null`` in a file leaves at its defaults: ``Section[HeadConfig]``.
Section = Annotated[T, BeforeValidator(lambda value: {} if value is None else value)]

_SHORT = 60
_RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
_MAX_ERRORS = 3


@cache
def _adapter(cls: Any) -> TypeAdapter[Any]:
    """One validator per config class, built on first use."""
    return TypeAdapter(cls)


def json_schema(cls: Any) -> dict[str, Any]:
    """The JSON schema of config class ``cls`` (what ``cosim config schema`` prints)."""
    return _adapter(cls).json_schema()


def validate(cls: type[T], data: Any, where: str, error: type[Exception] = ValueError) -> T:
    """``data`` validated into ``cls``; a bad key or value raises ``error`` naming ``where``
    (the file), the key path and what is allowed."""
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as err:
        raise error(describe(err, where, cls)) from None


def key_path(loc: Sequence[int | str]) -> str:
    """``("head", "anchors", 1, "size")`` -> ``"head.anchors[1].size"``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def short_repr(value: Any) -> str:
    """A bounded description of a value from a file (a container by type and length only:
    it may be huge or an alias bomb); as ``scenarios.safe_yaml.short_repr``, which this leaf
    cannot import."""
    if isinstance(value, list | tuple | dict | set):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    text = repr(value)
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


def describe(err: ValidationError, where: str, cls: Any = None) -> str:
    """One line for a ValidationError: ``where: key.path: problem (allowed ...)``; unknown
    and missing keys are grouped per section, at most three problems are listed."""
    schema = _schema_or_none(cls)
    grouped: dict[tuple[str, tuple[Any, ...]], list[str]] = {}
    raw_parent: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    lines: list[str] = []
    for item in err.errors(include_url=False):
        loc = _file_loc(schema, item["loc"])
        kind = item["type"]
        if kind == "union_tag_not_found":  # a tagged section without its tag key
            tag = str(item.get("ctx", {}).get("discriminator", "")).strip("'")
            grouped.setdefault(("missing", loc), []).append(tag)
            continue
        if kind in (
            "unexpected_keyword_argument",
            "extra_forbidden",
            "missing",
            "missing_argument",
        ):
            group = (
                "unknown"
                if kind in ("unexpected_keyword_argument", "extra_forbidden")
                else "missing"
            )
            if group == "missing" and isinstance(loc[-1], int):  # a tuple of fixed length
                group = "short"
            grouped.setdefault((group, loc[:-1]), []).append(str(loc[-1]))
            raw_parent.setdefault(loc[:-1], tuple(item["loc"][:-1]))
            continue
        lines.append(_one(item, loc, where, schema))
    for (group, parent), names in grouped.items():
        label = _label(where, parent)
        if group == "unknown":
            known = _keys_of(schema, _walk(schema, raw_parent.get(parent, parent))[1])
            tail = f"; known keys are {known}" if known is not None else ""
            lines.append(f"{label}: unknown key(s) {sorted(names)}{tail}")
        elif group == "short":
            size = _tuple_length(schema, parent) or "more"
            lines.append(f"{label}: expected {size} items, got {min(int(n) for n in names)}")
        else:
            lines.append(f"{label}: missing required key(s) {names}")
    more = len(lines) - _MAX_ERRORS
    text = "; ".join(lines[:_MAX_ERRORS])
    return text + (f" (and {more} more)" if more > 0 else "")


def _walk(schema: dict[str, Any] | None, loc: Sequence[Any]) -> tuple[tuple[Any, ...], Any]:
    """``loc`` as keys of the file (without union branches, validator names and the tag of a
    tagged union: ``map.intersection.lane_width`` -> ``map.lane_width``) and the schema node
    it reaches (None when unknown)."""
    out: list[Any] = []
    node = _resolve(schema, schema) if schema else None
    for part in loc:
        if _is_branch(part):
            continue
        if node is not None and isinstance(part, str) and "discriminator" in node:
            mapping = node["discriminator"].get("mapping", {})
            if part in mapping:
                node = _resolve(schema or {}, {"$ref": mapping[part]})
                continue
        out.append(part)
        node = _step(schema, node, part) if node is not None and schema else None
    return tuple(out), node


def _file_loc(schema: dict[str, Any] | None, loc: Sequence[Any]) -> tuple[Any, ...]:
    """Just the file's keys of a pydantic location (see :func:`_walk`)."""
    return _walk(schema, loc)[0]


def _is_branch(part: Any) -> bool:
    """Union branches and validator names pydantic puts in a location (not keys of the file)."""
    return isinstance(part, str) and (
        part.startswith(("function-", "tagged-union"))
        or part
        in (
            "int",
            "float",
            "str",
            "bool",
            "list",
            "tuple",
            "dict",
            "none",
            "None",
            "constrained-int",
            "constrained-float",
            "constrained-str",
        )
        or "[" in part
    )


def _label(where: str, loc: Sequence[Any]) -> str:
    """``file: key.path``; a section name as ``where`` (``head``) starts the key path."""
    path = key_path(loc)
    if not path:
        return where
    joiner = "" if path.startswith("[") else "."
    return f"{where}{joiner}{path}" if where.isidentifier() else f"{where}: {path}"


def _one(item: Any, loc: tuple[Any, ...], where: str, schema: dict[str, Any] | None) -> str:
    """One problem of a ValidationError (not an unknown or missing key) in the one wording."""
    msg = str(item["msg"])
    if item["type"] == "union_tag_invalid":
        tag = str(item.get("ctx", {}).get("discriminator", "")).strip("'")
        expected = item.get("ctx", {}).get("expected_tags", "")
        return (
            f"{_label(where, (*loc, tag))}: must be one of {expected}, "
            f"got {short_repr(item.get('ctx', {}).get('tag'))}"
        )
    if item["type"] in ("value_error", "assertion_error"):
        msg = msg.split(", ", 1)[1] if ", " in msg else msg
        if loc and msg.startswith(f"{loc[-1]}: "):  # the class named itself: the path says it
            msg = msg[len(str(loc[-1])) + 2 :]
        head, sep, rest = msg.partition(": ")
        if sep and head in (_keys_of(schema, _node_at(schema, loc)) or ()):
            loc, msg = (*loc, head), rest  # "scale: need low <= high" is about key scale
        return f"{_label(where, loc)}: {msg}"
    msg = msg.replace("Input should be", "must be").replace("a valid tuple", "a list")
    allowed = "" if item["type"] in ("literal_error", "enum") else _allowed(_node_at(schema, loc))
    if allowed and item["type"] in _RANGE_ERRORS:
        msg = f"must be {allowed}"
    elif allowed:
        msg += f" (allowed: {allowed})"
    return f"{_label(where, loc)}: {msg}, got {short_repr(item.get('input'))}"


@cache
def _schema_or_none(cls: Any) -> dict[str, Any] | None:
    """``cls``'s JSON schema, to name allowed keys and ranges (None if it has none)."""
    if cls is None:
        return None
    try:
        return json_schema(cls)
    except Exception:  # noqa: BLE001 - the schema only improves the message
        return None


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its ``$ref`` followed into the schema's ``$defs``."""
    while "$ref" in node:
        node = root.get("$defs", {}).get(node["$ref"].rsplit("/", 1)[-1], {})
    return node


def _node_at(root: dict[str, Any] | None, loc: Sequence[Any]) -> dict[str, Any] | None:
    """The schema of the value at ``loc`` (None when the path leaves what the schema says)."""
    if root is None:
        return None
    node: dict[str, Any] | None = _resolve(root, root)
    for part in loc:
        node = _step(root, node, part) if node is not None else None
    return node


def _step(root: dict[str, Any], node: dict[str, Any], part: Any) -> dict[str, Any] | None:
    """The schema one key (or list index) below ``node``, through any union branch."""
    for branch in [node, *node.get("anyOf", []), *node.get("oneOf", [])]:
        branch = _resolve(root, branch)
        if isinstance(part, int):
            prefix = branch.get("prefixItems")
            if prefix is not None and part < len(prefix):
                return _resolve(root, prefix[part])
            if isinstance(branch.get("items"), dict):
                return _resolve(root, branch["items"])
        else:
            if part in branch.get("properties", {}):
                return _resolve(root, branch["properties"][part])
            if isinstance(branch.get("additionalProperties"), dict):
                return _resolve(root, branch["additionalProperties"])
    return None


def _tuple_length(root: dict[str, Any] | None, loc: Sequence[Any]) -> int:
    """The fixed length of the tuple at ``loc`` (0 when unknown)."""
    node = _node_at(root, loc) or {}
    for branch in [node, *node.get("anyOf", [])]:
        items = _resolve(root or {}, branch).get("prefixItems")
        if items:
            return len(items)
    return 0


def _keys_of(root: dict[str, Any] | None, node: dict[str, Any] | None) -> list[str] | None:
    """The keys a mapping at schema ``node`` may have (None when unknown)."""
    if node is None:
        return None
    for branch in [node, *node.get("anyOf", [])]:
        branch = _resolve(root or {}, branch)
        if "properties" in branch:
            return sorted(branch["properties"])
    return None


def _allowed(node: dict[str, Any] | None) -> str:
    """What a schema node allows, in words: values, range, type."""
    if not node:
        return ""
    if "enum" in node:
        return f"one of {node['enum']}"
    if "const" in node:
        return repr(node["const"])
    parts = []
    for key, sign in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ):
        if key in node:
            parts.append(f"{sign} {node[key]}")
    if parts:
        return " and ".join(parts)
    branches = node.get("anyOf")
    if branches:
        words = [w for w in (_allowed(b) or b.get("type", "") for b in branches) if w]
        return " or ".join(dict.fromkeys(words))
    return ""
