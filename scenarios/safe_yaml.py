"""YAML for files from outside: safe loading with aliases refused, and bounded error texts.

``yaml.safe_load`` never runs code, but it accepts anchors and aliases, and a few lines of
nested aliases ("billion laughs") build a structure that is tiny in memory yet has ~10^9
leaves: any code that walks it -- validation, ``repr`` in an error message -- hangs or runs out
of memory. None of this project's files (scenarios, OPV2V frames, run/train/detector configs)
needs aliases, so the loader refuses the first one, naming the file, line and column. Error
texts describe untrusted values with :func:`short_repr`, which never walks a structure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_Base: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SHORT = 60


class NoAliasSafeLoader(_Base):  # type: ignore[misc, valid-type]
    """A safe loader (the C one when available) that refuses anchors' aliases.

    An alias makes the constructor meet a node it has already built (or is building): that
    is the one place every alias passes, whichever parser (C or Python) made the nodes.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node in self.constructed_objects or node in self.recursive_objects:
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed in this file", node.start_mark
            )
        return super().construct_object(node, deep)


def short_repr(value: Any) -> str:
    """A bounded description of a value from a file: a scalar's repr cut to 60 characters, a
    container's type and length (never its repr: it may be huge or an alias bomb)."""
    if isinstance(value, list | tuple | dict | set):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    text = repr(value)
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


def load_yaml_text(text: str | bytes, source: str, loader: type = NoAliasSafeLoader) -> Any:
    """Parse YAML text; a syntax error or an alias raises ValueError naming ``source``."""
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - loader is a safe loader
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: not valid YAML: {_one_line(err)}") from None


def load_yaml_file(path: str | Path, loader: type = NoAliasSafeLoader) -> Any:
    """Read and parse a YAML file; errors (unreadable, syntax, alias) name the file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise ValueError(f"{p}: cannot read ({err.strerror})") from None
    return load_yaml_text(data, str(p), loader)


def _one_line(err: yaml.YAMLError) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."
