"""The main job over several seeds, with and without cooperation (issue 12, item 5).

Runs ``cosim run --seed S [--no-cooperate]`` for each seed with the job's defaults otherwise
(in-process: the Ray executor gives the same numbers, tested in tests/cosim), reads each
``summary.json`` and prints the per-seed AP and the means as JSON, plus the seed whose
cooperative AP@0.5 is closest to the mean (the README's default seed should be that one):

    python scripts/main_job_seeds.py --seeds 0,1,2,3,4 --out runs/main_job_seeds
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console

console = Console(stderr=True)
KEYS = ("ap@0.3", "ap@0.5", "ap@0.7")


def run_once(seed: int, cooperate: bool, out: Path, extra: list[str]) -> dict[str, Any]:
    """One ``cosim run``; returns its summary.json (reused when the folder already has one)."""
    summary = out / "summary.json"
    if not summary.is_file():
        command = [
            sys.executable,
            "-m",
            "cosim",
            "run",
            "--seed",
            str(seed),
            "--executor",
            "inprocess",
            "--quiet",
            "--out",
            str(out),
            *extra,
        ]
        if not cooperate:
            command.append("--no-cooperate")
        console.print(" ".join(command[2:]))
        subprocess.run(command, check=True)
    return json.loads(summary.read_text())


def main(
    seeds: Annotated[str, typer.Option(help="Comma-separated world seeds.")] = "0,1,2,3,4",
    out: Annotated[Path, typer.Option(help="Folder for the runs and seeds.json.")] = Path(
        "runs/main_job_seeds"
    ),
    extra: Annotated[
        list[str] | None,
        typer.Option(help="Extra `cosim run` option, repeat (e.g. --extra=--checkpoint=x.pt)."),
    ] = None,
) -> None:
    """Per-seed and mean AP of the main job with and without cooperation, as JSON."""
    picked = [int(s) for s in seeds.split(",") if s.strip()]
    rows = []
    for seed in picked:
        row: dict[str, Any] = {"seed": seed}
        for cooperate in (True, False):
            tag = "coop" if cooperate else "alone"
            summary = run_once(seed, cooperate, out / f"seed{seed}_{tag}", extra or [])
            row.update({f"{tag}_{k}": summary[k] for k in KEYS})
        rows.append(row)
    means = {
        f"{tag}_{k}": float(np.mean([r[f"{tag}_{k}"] for r in rows]))
        for tag in ("coop", "alone")
        for k in KEYS
    }
    means["gain_ap@0.5"] = means["coop_ap@0.5"] - means["alone_ap@0.5"]
    closest = min(rows, key=lambda r: abs(r["coop_ap@0.5"] - means["coop_ap@0.5"]))["seed"]
    result = {
        "runs": rows,
        "mean": means,
        "seed_closest_to_mean": closest,
        "command": "python scripts/main_job_seeds.py " + " ".join(sys.argv[1:]),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    typer.run(main)
