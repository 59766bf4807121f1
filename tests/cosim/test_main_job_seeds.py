"""``scripts/main_job_seeds.py``: the main job per seed with and without cooperation, the
means, and the seed closest to the cooperative mean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.agents.helpers import write_tiny_checkpoint

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "main_job_seeds.py"


def test_seeds_table_from_real_runs(tmp_path: Path) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "seeds"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--seeds",
            "0,1",
            "--out",
            str(out),
            f"--extra=--checkpoint={checkpoint}",
            "--extra=--frames=1",
            "--extra=--agents=2",
            "--extra=--channel=ideal",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads((out / "seeds.json").read_text())
    assert [r["seed"] for r in result["runs"]] == [0, 1]
    for row in result["runs"]:
        tag = f"seed{row['seed']}"
        coop = json.loads((out / f"{tag}_coop" / "summary.json").read_text())
        alone = json.loads((out / f"{tag}_alone" / "summary.json").read_text())
        assert row["coop_ap@0.5"] == coop["ap@0.5"] and row["alone_ap@0.5"] == alone["ap@0.5"]
        assert coop["messages"]["sent"] > 0 and alone["messages"]["sent"] == 0
    mean = sum(r["coop_ap@0.5"] for r in result["runs"]) / 2
    assert abs(result["mean"]["coop_ap@0.5"] - mean) < 1e-12
    closest = min(result["runs"], key=lambda r: abs(r["coop_ap@0.5"] - mean))["seed"]
    assert result["seed_closest_to_mean"] == closest
