"""``cosim sweep``'s grid: maps vary dtype x sparsity; points and boxes have one format each."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosim.run_config import RunConfig
from cosim.sweep import SweepConfig, codec_label, run_row, sweep_runs
from tests.agents.helpers import write_small_scenario, write_tiny_checkpoint


@pytest.mark.parametrize(("fusion", "fusion_runs"), [("attention", 2 * 2 * 2 * 2),
                                                      ("early", 2 * 2), ("late", 2 * 2)])
def test_sweep_grid_by_payload(tmp_path: Path, fusion: str, fusion_runs: int) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / f"{fusion}.pt", fusion)
    runs = sweep_runs(SweepConfig(checkpoint=str(checkpoint)))  # 2 dtypes, 2 sparsities,
    kinds = [kind for kind, _ in runs]                           # 2 channels, 2 seeds
    assert kinds.count("fusion") == fusion_runs
    assert kinds.count("no_fusion") == kinds.count("lossless") == 2
    fused = [c for kind, c in runs if kind == "fusion"]
    assert sorted({(c.channel, c.seed) for c in fused}) == [("cv2x", 0), ("cv2x", 1),
                                                             ("dsrc", 0), ("dsrc", 1)]


def test_codec_label() -> None:
    assert codec_label("map", "int8", "topk:0.1") == "int8 topk:0.1"
    assert codec_label("points", "-", "-") == "points"


def test_a_sweep_row_of_a_late_fusion_run(tmp_path: Path) -> None:
    config = RunConfig(scenario=str(write_small_scenario(tmp_path / "small.yaml")),
                       checkpoint=str(write_tiny_checkpoint(tmp_path / "late.pt", "late")),
                       frames=2, channel="dsrc", executor="inprocess", render_frames=0)
    row = run_row("fusion", config)
    assert (row["payload"], row["dtype"], row["sparsity"]) == ("boxes", "-", "-")
    assert 200 < row["median_wire_bytes"] < 1_000 and row["sent"] == 2 * 2
