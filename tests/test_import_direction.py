"""The packages' import direction (docs/architecture.md): ``scenarios`` and ``channel`` are
leaves, ``models`` imports only ``scenarios``, ``agents`` joins ``models`` and ``channel``,
``cosim`` may import everything and nothing imports it; ``configkit`` (config validation)
imports no project package and every package may import it; ``ray`` only in ``agents`` and
``cosim``; ``torch`` never in ``scenarios`` or ``channel``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAY_IMPORT = {
    "configkit": set(),
    "scenarios": {"configkit"},
    "channel": {"configkit"},
    "models": {"configkit", "scenarios"},
    "agents": {"configkit", "models", "channel", "scenarios"},
    "cosim": {"configkit", "scenarios", "channel", "models", "agents"},
}
# Inside cosim (docs/architecture.md): cli on top, then experiments, training, sim, common;
# nothing imports cli.
COSIM_MAY_IMPORT = {
    "common": set(),
    "sim": {"common"},
    "training": {"sim", "common"},
    "experiments": {"training", "sim", "common"},
    "cli": {"experiments", "training", "sim", "common"},
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


@pytest.mark.parametrize("layer", sorted(COSIM_MAY_IMPORT))
def test_each_cosim_layer_imports_only_the_layers_below(layer: str) -> None:
    wrong = []
    for path in sorted((ROOT / "cosim" / layer).rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "cosim" or len(parts) < 2 or parts[1] == layer:
                continue
            if parts[1] not in COSIM_MAY_IMPORT[layer]:
                wrong.append(f"{path.relative_to(ROOT)}: {name}")
    assert wrong == []


def test_cosim_top_level_holds_only_the_layers() -> None:
    modules = sorted(p.name for p in (ROOT / "cosim").glob("*.py"))
    assert modules == ["__init__.py", "__main__.py"]
    layers = sorted(p.name for p in (ROOT / "cosim").iterdir() if (p / "__init__.py").is_file())
    assert layers == sorted(COSIM_MAY_IMPORT)
