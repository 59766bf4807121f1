"""``cosim sweep``'s grid: fusions x vehicles x ego modes x channels x codecs x seeds; maps vary
dtype x sparsity, points and boxes have one wire format each."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from cosim.experiments.sweep import (
    SweepConfig,
    codec_label,
    fusion_checkpoint,
    mean_over_seeds,
    run_row,
    sweep_runs,
)
from cosim.sim.run_config import RunConfig
from tests.agents.helpers import write_small_scenario, write_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("fusions")
    return {
        fusion: str(write_tiny_checkpoint(root / f"{fusion}.pt", fusion))
        for fusion in ("early", "late", "attention")
    }


@pytest.mark.parametrize(
    ("fusion", "fusion_runs"), [("attention", 2 * 2 * 2 * 2), ("early", 2 * 2), ("late", 2 * 2)]
)
def test_sweep_grid_by_payload(checkpoints: dict[str, str], fusion: str, fusion_runs: int) -> None:
    runs = sweep_runs(SweepConfig(fusions=(checkpoints[fusion],)))  # 2 dtypes, 2 sparsities,
    kinds = [kind for kind, _ in runs]  # 2 channels, 2 seeds
    assert kinds.count("fusion") == fusion_runs
    assert kinds.count("no_fusion") == kinds.count("lossless") == 2
    fused = [c for kind, c in runs if kind == "fusion"]
    assert sorted({(c.channel, c.seed) for c in fused}) == [
        ("cv2x", 0),
        ("cv2x", 1),
        ("dsrc", 0),
        ("dsrc", 1),
    ]


def test_the_study_grid(checkpoints: dict[str, str]) -> None:
    config = SweepConfig(
        fusions=(checkpoints["early"], checkpoints["late"], checkpoints["attention"]),
        vehicles=(2, 4, 7),
        ego_modes=("one", "all"),
        dtypes=("float16", "int8"),
        sparsities=("none", "topk:0.1"),
        channels=("dsrc", "cv2x"),
        seeds=(0, 1),
    )
    runs = sweep_runs(config)
    settings = 3 * 2 * 2  # vehicles x ego modes x seeds
    fused = [r for kind, r in runs if kind == "fusion"]
    # early and late: one wire format each; maps: 2 dtypes x 2 sparsities; on both channels
    assert len(fused) == (1 + 1 + 4) * 2 * settings
    assert sum(1 for kind, _ in runs if kind == "no_fusion") == settings
    assert sum(1 for kind, _ in runs if kind == "lossless") == 3 * settings
    assert {(r.agents, r.all_egos) for r in fused} == {
        (n, mode) for n in (2, 4, 7) for mode in (False, True)
    }
    early = [r for r in fused if r.checkpoint == checkpoints["early"]]
    assert len(early) == 2 * settings and {r.sparsity for r in early} == {None}


def test_bad_grid_values_are_named(checkpoints: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="--egos"):
        SweepConfig(fusions=(checkpoints["attention"],), ego_modes=("both",))
    with pytest.raises(ValueError, match="--vehicles"):
        SweepConfig(fusions=(checkpoints["attention"],), vehicles=(0,))
    with pytest.raises(FileNotFoundError, match="nosuch"):
        fusion_checkpoint("nosuch")
    assert Path(fusion_checkpoint("max")).name == "max.pt"


def test_codec_label() -> None:
    assert codec_label("map", "int8", "topk:0.1") == "int8 topk:0.1"
    assert codec_label("points", "-", "-") == "points"


def test_mean_over_seeds_groups_settings() -> None:
    row = {
        "kind": "fusion",
        "fusion": "max",
        "payload": "map",
        "dtype": "int8",
        "sparsity": "none",
        "channel": "dsrc",
        "vehicles": 4,
        "egos": "one",
        "ap@0.3": 0.5,
        "ap@0.5": 0.4,
        "ap@0.7": 0.2,
        "mean_wire_bytes": 100.0,
        "median_wire_bytes": 90.0,
        "busy_ratio": 0.5,
        "latency_p50_s": 0.1,
        "fused_age_p50_s": 0.0,
    }
    rows = [
        dict(row, seed=0),
        dict(row, seed=1, **{"ap@0.5": 0.6}),
        dict(row, seed=0, vehicles=7, **{"ap@0.5": float("nan")}),
    ]
    means = mean_over_seeds(pa.Table.from_pylist(rows)).to_pylist()
    assert [(m["setting"], m["vehicles"], m["seeds"]) for m in means] == [
        ("max int8 none", 4, 2),
        ("max int8 none", 7, 1),
    ]
    assert means[0]["ap@0.5"] == pytest.approx(0.5)
    assert means[1]["ap@0.5"] != means[1]["ap@0.5"]  # NaN: no seed scored


def test_a_sweep_row_of_a_late_fusion_run(tmp_path: Path) -> None:
    config = RunConfig(
        scenario=str(write_small_scenario(tmp_path / "small.yaml")),
        checkpoint=str(write_tiny_checkpoint(tmp_path / "late.pt", "late")),
        frames=2,
        channel="dsrc",
        executor="inprocess",
        render_frames=0,
    )
    row = run_row("fusion", config)
    assert (row["payload"], row["dtype"], row["sparsity"]) == ("boxes", "-", "-")
    assert (row["fusion"], row["vehicles"], row["egos"]) == ("late", 3, "one")
    assert 200 < row["median_wire_bytes"] < 1_000 and row["sent"] == 2 * 2
