"""``scripts/fixed_gamma_checkpoint.py``: the noise-adapter ablation keeps every other weight
and starts every map at the one given gamma."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint
from tests.agents.helpers import tiny_model, write_tiny_diffkd_checkpoint

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fixed_gamma_checkpoint.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
    )


def test_fixed_gamma_copy_keeps_the_refiner_and_fixes_gamma(tmp_path: Path) -> None:
    source = write_tiny_diffkd_checkpoint(tmp_path / "d.pt")
    done = _run(str(source), str(tmp_path / "fixed.pt"), "--gamma", "0.7")
    assert done.returncode == 0, done.stderr
    model, _, _ = load_checkpoint(source)
    fixed, config, _ = load_checkpoint(tmp_path / "fixed.pt")
    assert config.refiner is not None and not config.refiner.noise_adapter
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("refiner.adapter.")}
    assert kept.keys() == fixed.state_dict().keys()
    assert all(torch.equal(v, fixed.state_dict()[k]) for k, v in kept.items())
    maps = torch.rand(3, *fixed.map_shape)
    with torch.no_grad():
        assert fixed.refine(maps).gamma.tolist() == pytest.approx([0.7] * 3)


def test_a_model_without_refiner_is_refused(tmp_path: Path) -> None:
    from models.checkpoint import save_checkpoint

    model = tiny_model("attention")
    save_checkpoint(tmp_path / "a.pt", model, model.config, {})
    done = _run(str(tmp_path / "a.pt"), str(tmp_path / "out.pt"), "--gamma", "0.5")
    assert done.returncode != 0 and "has no refiner" in done.stderr
    assert not (tmp_path / "out.pt").exists()
