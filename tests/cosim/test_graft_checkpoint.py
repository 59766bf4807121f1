"""``scripts/graft_checkpoint.py``: BASE's weights with DONOR's under a prefix, refused when the
two files differ anywhere else."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from models.detector import CooperativeDetector
from models.detector_config import DetectorConfig
from tests.agents.helpers import TINY_MODEL
from tests.script_app import script_app


def _agf(name: str, options: dict[str, object], seed: int) -> CooperativeDetector:
    torch.manual_seed(seed)
    config = {**TINY_MODEL, "name": name, "fusion": "agf", "fusion_options": options}
    return CooperativeDetector(DetectorConfig.from_dict(config)).eval()


def test_graft_takes_the_prefix_from_the_donor_and_the_rest_from_the_base(tmp_path: Path) -> None:
    base = _agf("base", {"reliability": 2}, seed=0)
    donor = _agf("donor", {"reliability": 2, "profile": True, "drop_below": 0.5}, seed=1)
    donor.load_state_dict(
        {k: v for k, v in base.state_dict().items() if not k.startswith("fusion.reliability")},
        strict=False,
    )
    save_checkpoint(tmp_path / "base.pt", base, base.config, {}, extra={"train_command": "a"})
    save_checkpoint(tmp_path / "donor.pt", donor, donor.config, {})
    preset = tmp_path / "donor.yaml"
    preset.write_text(json.dumps(donor.config.to_dict()))  # YAML is a superset of JSON
    out = tmp_path / "out.pt"
    args = [str(tmp_path / "base.pt"), str(tmp_path / "donor.pt"), str(out)]
    args += ["--prefix", "fusion.reliability", "--as-model", str(preset)]
    result = CliRunner().invoke(script_app("graft_checkpoint"), args)
    assert result.exit_code == 0, result.output
    grafted, config, _ = load_checkpoint(out)
    assert config.fusion_options == donor.config.fusion_options
    for name, value in grafted.state_dict().items():
        want = donor if name.startswith("fusion.reliability") else base
        assert torch.equal(value, want.state_dict()[name]), name
    extra = read_checkpoint(out)["extra"]
    assert extra["train_command"] == "a"
    assert extra["graft"]["prefix"] == ["fusion.reliability"]
    assert "fusion.reliability.mlp.2.bias" in extra["graft"]["parameters"]

    with torch.no_grad():
        donor.fusion.gate[-1].bias.add_(1.0)  # now the donor differs outside the prefix
    save_checkpoint(tmp_path / "donor.pt", donor, donor.config, {})
    result = CliRunner().invoke(script_app("graft_checkpoint"), args, env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "fusion.gate.2.bias" in result.output
