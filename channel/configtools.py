"""Build small frozen config dataclasses from plain mappings (YAML), naming any unknown key."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
    """``cls(**data)`` after checking every key is a field of ``cls``.

    ``where`` names the section in error messages (e.g. ``"preset dsrc: loss"``); value errors
    raised by the dataclass are re-raised with that prefix.
    """
    data = check_keys(cls, data, where)
    try:
        return cls(**data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from err


def check_keys(cls: type, data: Mapping[str, Any] | None, where: str) -> Mapping[str, Any]:
    """Return ``data`` (``{}`` for None) after checking it is a mapping of ``cls`` field names."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known), key=str)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys are {known}")
    return data


def check_prob(name: str, value: float) -> None:
    """Raise unless ``0 <= value <= 1``."""
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


def check_nonneg(name: str, value: float | None) -> None:
    """Raise unless ``value`` is None or a finite number >= 0."""
    if value is not None and not (float(value) >= 0.0 and float(value) < float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
