"""``scripts/behaviour_identity.py``: two output folders compared on every simulated number,
wall-clock time aside."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "behaviour_identity.py"


def _run_folder(folder: Path, score: float, wall_s: float, seconds: float) -> Path:
    folder.mkdir()
    summary = {
        "ap@0.5": 0.5,
        "wall_s": wall_s,
        "checkpoint": f"/{folder.name}/attention.pt",
        "stage_s_per_tick": {"fuse": seconds},
        "refine": None,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    pq.write_table(
        pa.table({"tick": [0, 1], "score": [score, float("nan")]}), folder / "detections.parquet"
    )
    pq.write_table(pa.table({"stage": ["fuse"], "seconds": [seconds]}), folder / "timings.parquet")
    return folder


def _compare(a: Path, b: Path) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(a), str(b)], capture_output=True, text=True, check=False
    )
    return done.returncode, json.loads(done.stdout)


def test_wall_clock_and_checkout_paths_do_not_count(tmp_path: Path) -> None:
    a = _run_folder(tmp_path / "a", 0.75, 1.0, 0.1)
    b = _run_folder(tmp_path / "b", 0.75, 2.0, 0.3)
    code, result = _compare(a, b)
    assert code == 0 and result["identical"] and result["differences"] == []
    assert result["compared"]["detections.parquet"]["rows"] == 2


def test_a_changed_number_fails(tmp_path: Path) -> None:
    a = _run_folder(tmp_path / "a", 0.75, 1.0, 0.1)
    b = _run_folder(tmp_path / "b", 0.7500001, 1.0, 0.1)
    code, result = _compare(a, b)
    assert code == 1 and not result["identical"]
    assert result["differences"] == [
        "detections.score: 1 rows differ, first row 0: 0.75 != 0.7500001"
    ]
