"""``bench/bench_models.py --checkpoint``: the trained detect path is timed with the model's
own weights and score threshold, and its boxes are the model's own detections."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from tests.agents.helpers import write_tiny_checkpoint

_PATH = Path(__file__).resolve().parents[2] / "bench" / "bench_models.py"
_spec = importlib.util.spec_from_file_location("bench_models", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_trained_row_times_the_checkpoint_detect_path(tmp_path: Path) -> None:
    from models.checkpoint import load_checkpoint

    path = write_tiny_checkpoint(tmp_path / "tiny.pt", fusion="none")
    row = bench.bench_trained(str(path), repeats=2, device=torch.device("cpu"))
    model, config, _ = load_checkpoint(path)
    cloud = bench.lidar_like_cloud(model.message_grid)
    with torch.no_grad():
        expected = model.eval().detect(model.head(model.bev(model.own_map(model.encode([cloud])))))
    assert row["model"] == config.name and row["points"] == cloud.shape[0]
    assert row["detections"] == len(expected[0].boxes)
    assert 0 < row["detect_ms"] <= row["total_ms"]
