"""Config validation shared by every package: pydantic models, one error wording.

A leaf (it imports only pydantic), so ``scenarios`` and ``channel`` use it without importing
each other. :func:`validate` builds a config class from a mapping read from YAML; a
``pydantic.ValidationError`` becomes the caller's error type (``ValueError`` unless told) with
one wording: the file, the key path (``head.anchors[1].size``) and what is allowed.
"""

from configkit.validation import (
    STRICT,
    Bool,
    Float,
    Int,
    Section,
    Str,
    config_dataclass,
    describe,
    json_schema,
    key_path,
    validate,
)

__all__ = [
    "STRICT",
    "Bool",
    "Float",
    "Int",
    "Section",
    "Str",
    "config_dataclass",
    "describe",
    "json_schema",
    "key_path",
    "validate",
]
