"""The channel benchmark runs, and counts one broadcast per vehicle per tick."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "bench" / "bench_channel.py"
_spec = importlib.util.spec_from_file_location("bench_channel", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_seven_vehicles_queue_seven_broadcasts_per_tick() -> None:
    wall, stats = bench.simulate("dsrc", 39_192, vehicles=7, ticks=10)
    assert wall > 0 and stats["queued"] == 70
    assert stats["on_air"] + stats["replaced"] <= 70
    assert stats["events"] == stats["queued"] + stats["receptions"]
    assert stats["receptions"] <= 6 * stats["on_air"]
