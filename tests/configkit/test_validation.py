"""configkit: one wording for every config error (file, key path, what is allowed)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from configkit import Float, Int, Section, config_dataclass, json_schema, key_path, validate


@config_dataclass
class Inner:
    """A nested section."""

    size: tuple[Float, Float] = (1.0, 2.0)
    kind: Literal["a", "b"] = "a"


@config_dataclass
class Outer:
    """A config with a nested section and a list of them."""

    count: Int = Field(1, ge=0, le=5)
    inner: Section[Inner] = dataclasses.field(default_factory=Inner)
    items: tuple[Inner, ...] = ()

    def __post_init__(self) -> None:
        if self.count and not self.items and self.inner.kind == "b":
            raise ValueError("count needs items when inner.kind is 'b'")


class MyError(ValueError):
    """A package's own error type."""


def test_key_path_reads_like_the_file() -> None:
    assert key_path(("head", "anchors", 1, "size")) == "head.anchors[1].size"
    assert key_path(()) == ""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"count": 9}, "f.yaml: count: must be >= 0 and <= 5, got 9"),
        (
            {"count": True},
            "f.yaml: count: must be a valid integer (allowed: >= 0 and <= 5), got True",
        ),
        (
            {"items": [{}, {"size": [1, "x"]}]},
            "f.yaml: items[1].size[1]: must be a valid number, got 'x'",
        ),
        ({"items": [{"kind": "c"}]}, "f.yaml: items[0].kind: must be 'a' or 'b', got 'c'"),
        (
            {"inner": {"sise": 1}},
            "f.yaml: inner: unknown key(s) ['sise']; known keys are ['kind', 'size']",
        ),
        ({"inner": {"size": [1.0]}}, "f.yaml: inner.size: expected 2 items, got 1"),
        ({"inner": {"kind": "b"}}, "f.yaml: count needs items when inner.kind is 'b'"),
        ({"count": float("nan")}, "f.yaml: count: must be a valid integer"),
    ],
)
def test_validate_names_file_key_path_and_what_is_allowed(data: dict, message: str) -> None:
    with pytest.raises(MyError) as err:
        validate(Outer, data, "f.yaml", MyError)
    assert str(err.value).startswith(message), str(err.value)


def test_null_section_takes_its_defaults_and_values_are_coerced_only_safely() -> None:
    config = validate(Outer, {"inner": None, "items": [{"size": [1, 2]}]}, "f.yaml")
    assert config.inner == Inner() and config.items[0].size == (1.0, 2.0)
    assert isinstance(config.items[0].size[0], float)


def test_direct_construction_and_replace_use_the_same_wording() -> None:
    with pytest.raises(ValueError, match=r"^Outer\.count: must be >= 0 and <= 5, got 7$"):
        Outer(count=7)
    with pytest.raises(ValueError, match=r"^Inner\.kind: must be 'a' or 'b', got 'z'$"):
        Inner((1.0, 2.0), "z")  # positional arguments are named in the message
    with pytest.raises(ValueError, match=r"Outer\.count"):
        dataclasses.replace(Outer(), count=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Outer().count = 2  # type: ignore[misc]


def test_json_schema_forbids_unknown_keys_and_states_ranges() -> None:
    schema = json_schema(Outer)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["count"]["minimum"] == 0
    assert schema["properties"]["count"]["maximum"] == 5


def test_configkit_is_a_leaf_every_package_may_import() -> None:
    """configkit imports pydantic and the standard library, no package of the project."""
    root = Path(__file__).resolve().parents[2]
    project = {"scenarios", "channel", "models", "agents", "cosim"}
    for path in sorted((root / "configkit").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not {n.split(".")[0] for n in names} & project, path
