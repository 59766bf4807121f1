"""``scripts/checkpoint_table.py``: markdown rows from the test reports a shipped checkpoint
carries and from ``cosim eval --out`` files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from models.checkpoint import save_checkpoint
from tests.agents.helpers import tiny_model

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "checkpoint_table.py"


def _report(ap50: float) -> dict[str, object]:
    seen = {"recall": 0.9, "recall@0.7": 0.8}
    return {
        "data": "data/test",
        "frames": 4,
        "num_gt": 10,
        "detections": 18,
        "ap": {"0.3": 0.75, "0.5": ap50, "0.7": 0.25},
        "ap_global_sort": {"0.5": 0.6, "0.7": 0.3},
        "recall_by_visibility": {"ego": {"recall": 0.95}, "neighbours_only": seen},
        "recall_by_size": {"truck_bus": {"recall": 0.5}},
    }


def test_rows_from_a_shipped_checkpoint_and_an_eval_file(tmp_path: Path) -> None:
    model = tiny_model("none")
    shipped = tmp_path / "none.pt"
    save_checkpoint(
        shipped, model, model.config, {}, None, 1, {"test_reports": {"test": _report(0.5)}}
    )
    (tmp_path / "control_test.json").write_text(json.dumps(_report(0.625)))
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(shipped),
            "--report",
            f"control={tmp_path}/control_{{split}}.json",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert lines[1] == (
        "| none | 0.750 | 0.500 | 0.250 | 0.600 / 0.300 | 0.950 | 0.900 / 0.800 | 0.500 | 4.5 |"
    )
    assert lines[2].startswith("| control | 0.750 | 0.625 |")
    assert "`data/test` (4 frames, 10 GT boxes)" in out
