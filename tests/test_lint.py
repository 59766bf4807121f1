"""The code stays lint-clean and formatted (issue 16): `ruff check`, `ruff format --check`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is a dev dependency (pip install -e '.[dev]')")
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff_is_clean(command: list[str]) -> None:
    done = subprocess.run([RUFF, *command, "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_package_module_is_over_400_lines() -> None:
    packages = ("configkit", "scenarios", "channel", "models", "agents", "cosim")
    long = {
        str(path.relative_to(ROOT)): lines
        for package in packages
        for path in sorted((ROOT / package).rglob("*.py"))
        if (lines := len(path.read_text().splitlines())) > 400
    }
    assert long == {}
