"""The packages' import direction (docs/architecture.md): ``scenarios`` and ``channel`` are
leaves, ``models`` imports only ``scenarios``, ``agents`` joins ``models`` and ``channel``,
``cosim`` may import everything and nothing imports it; ``ray`` only in ``agents`` and
``cosim``; ``torch`` never in ``scenarios`` or ``channel``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAY_IMPORT = {
    "scenarios": set(),
    "channel": set(),
    "models": {"scenarios"},
    "agents": {"models", "channel", "scenarios"},
    "cosim": {"scenarios", "channel", "models", "agents"},
}
NO_TORCH = {"scenarios", "channel"}
RAY_ONLY_IN = {"agents", "cosim"}


def _imports(path: Path) -> list[str]:
    """Absolute module names a file imports (at any depth: lazy imports count too)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_each_package_imports_only_what_it_may(package: str) -> None:
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            where = f"{path.relative_to(ROOT)}: {name}"
            if top in MAY_IMPORT and top != package and top not in MAY_IMPORT[package]:
                wrong.append(where)
            if top == "torch" and package in NO_TORCH:
                wrong.append(where)
            if top == "ray" and package not in RAY_ONLY_IN:
                wrong.append(where)
    assert wrong == []
