"""``scripts/ship_checkpoint.py``: a run's best.pt becomes a shipped file that carries its
training provenance and a test report per split, under another preset when asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from tests.agents.helpers import tiny_model
from tests.script_app import script_app


def test_ship_a_run_under_another_preset(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    model = tiny_model("none")
    extra = {"train_command": "cosim train tiny.yaml", "data_commands": {"train": "build"}}
    save_checkpoint(run / "best.pt", model, model.config, {"val_ap50": 0.1}, None, 2, extra)
    (run / "summary.json").write_text(json.dumps({"seconds": 12.5, "best_epoch": 2}))
    late = tiny_model("late")
    late_preset = tmp_path / "late.yaml"
    late_preset.write_text(json.dumps(late.config.to_dict()))  # YAML is a superset of JSON
    out = tmp_path / "shipped" / "late.pt"
    result = CliRunner().invoke(
        script_app("ship_checkpoint"),
        [
            str(run),
            str(out),
            "--strategy",
            "late",
            "--as-model",
            str(late_preset),
            "--test",
            str(tiny_data),
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    shipped, config, payload = load_checkpoint(out)
    assert config.fusion == "late" and payload["epoch"] == 2
    for name, weight in model.state_dict().items():  # the run's weights, unchanged
        torch.testing.assert_close(shipped.state_dict()[name], weight)
    extra = read_checkpoint(out)["extra"]
    assert extra["train_command"] == "cosim train tiny.yaml"
    assert (extra["strategy"], extra["train_seconds"], extra["best_epoch"]) == ("late", 12.5, 2)
    report = extra["test_reports"][tiny_data.name]
    assert report["frames"] == 4 and report["model"] == config.name
    assert set(report["ap"]) == {"0.3", "0.5", "0.7"}
    assert extra["eval_commands"] == [f"cosim eval {out} --data {tiny_data}"]


def test_an_unfinished_run_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    model = tiny_model("none")
    save_checkpoint(run / "best.pt", model, model.config, {})
    result = CliRunner().invoke(
        script_app("ship_checkpoint"),
        [str(run), str(tmp_path / "x.pt"), "--strategy", "none", "--test", str(tmp_path)],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 2 and "the run has not finished" in result.output
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "x.pt")


def test_ship_a_checkpoint_file(tiny_data: Path, tmp_path: Path) -> None:
    """A committed base checkpoint (no run folder) ships with the provenance it holds."""
    model = tiny_model("none")
    base = tmp_path / "base.pt"
    save_checkpoint(base, model, model.config, {}, None, 3, {"train_command": "cosim train a"})
    out = tmp_path / "none.pt"
    result = CliRunner().invoke(
        script_app("ship_checkpoint"),
        [str(base), str(out), "--strategy", "none", "--test", str(tiny_data), "--threads", "1"],
    )
    assert result.exit_code == 0, result.output
    extra = read_checkpoint(out)["extra"]
    assert extra["derived_from"] == str(base) and extra["train_command"] == "cosim train a"
    assert "train_seconds" not in extra and read_checkpoint(out)["epoch"] == 3
    assert extra["test_reports"][tiny_data.name]["frames"] == 4
