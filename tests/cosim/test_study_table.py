"""``scripts/study_table.py``: the sweep study's markdown tables from seed means."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "study_table.py"


def _row(kind: str, fusion: str, payload: str, channel: str, vehicles: int, egos: str, **kw):
    base = {
        "kind": kind,
        "fusion": fusion,
        "payload": payload,
        "dtype": "int8" if payload == "map" else "-",
        "sparsity": "none" if payload == "map" else "-",
        "channel": channel,
        "vehicles": vehicles,
        "egos": egos,
        "seed": 0,
        "ap@0.3": 0.5,
        "ap@0.5": 0.4,
        "ap@0.7": 0.2,
        "mean_wire_bytes": 1000.0,
        "median_wire_bytes": 1000.0,
        "busy_ratio": 0.5,
        "latency_p50_s": 0.1,
        "fused_age_p50_s": 0.0,
    }
    return {**base, **kw}


def test_one_table_per_channel_with_references_under_each(tmp_path: Path) -> None:
    rows = [
        _row("fusion", "attention", "map", "dsrc", 2, "one", **{"ap@0.5": 0.30}),
        _row("fusion", "attention", "map", "dsrc", 2, "one", seed=1, **{"ap@0.5": 0.50}),
        _row("fusion", "attention", "map", "dsrc", 4, "all", **{"ap@0.5": 0.45}),
        _row("fusion", "late", "boxes", "cv2x", 2, "one", **{"ap@0.5": 0.61}),
        _row(
            "no_fusion",
            "attention",
            "map",
            "ideal",
            2,
            "one",
            mean_wire_bytes=0.0,
            **{"ap@0.5": 0.25},
        ),
        _row("lossless", "attention", "map", "ideal", 2, "one", dtype="float32", **{"ap@0.5": 0.7}),
    ]
    folder = tmp_path / "study"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), folder / "sweep.parquet")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(folder)], capture_output=True, text=True, check=True
    ).stdout
    dsrc, cv2x = out.split("**cv2x**")
    assert "| 2 veh, one ego | 4 veh, all ego |" in dsrc
    assert "| attention int8 none | 1,000 | 0.400 | 0.450 |" in dsrc  # mean of seeds 0.3, 0.5
    assert "| no fusion | 0 | 0.250 | — |" in dsrc
    assert "| late boxes | 1,000 | 0.610 | — |" in cv2x and "late" not in dsrc
    assert "| no fusion |" in cv2x
    for table in (dsrc, cv2x):  # the ideal-channel reference belongs under every channel
        assert "| attention float32 none (ideal) | 1,000 | 0.700 | — |" in table


def test_a_folder_without_a_sweep_is_named(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "sweep.parquet: not found" in result.stderr


def test_compact_table_lists_each_vehicle_count_per_channel_and_ego_mode(tmp_path: Path) -> None:
    rows = [
        _row("fusion", "late", "boxes", "dsrc", 2, "one", **{"ap@0.5": 0.61}),
        _row("fusion", "late", "boxes", "dsrc", 7, "one", **{"ap@0.5": 0.70}),
        _row("no_fusion", "late", "boxes", "ideal", 2, "one", mean_wire_bytes=0.0),
    ]
    folder = tmp_path / "study"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), folder / "sweep.parquet")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(folder), "--compact", "--plot", str(tmp_path / "v.png")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == "| message | wire bytes | dsrc one ego (2 / 7 veh) |"
    assert out[2] == "| late boxes | 1,000 | .610 / .700 |"
    assert out[3] == "| no fusion | 0 | .400 / — |"
    assert (tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"
