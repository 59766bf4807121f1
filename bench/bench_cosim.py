"""Co-simulation benchmark: end-to-end frames/s, Ray versus in process, and the per-stage split.

Run: ``python bench/bench_cosim.py [--frames 20] [--checkpoint PATH] [--channel dsrc]``.

The default scenario (intersection, 4 connected vehicles, one ego) with the default codec
(int8, top 10% of cells) on the DSRC preset. Both executors run the same code with one torch
thread per vehicle and give the same detections (checked). The in-process executor runs the
vehicles one after another; the Ray executor runs one actor per vehicle (0.25 CPU each) in
parallel, so on 2 cores it can be faster than in process despite its messaging.

Without ``--checkpoint`` it uses the main job's shipped checkpoint
(``models/checkpoints/diffkd.pt``) if present, else an untrained ``cpu_diffkd`` model (the
timings do not depend on the weights much, the APs do; ``trained_model`` in the JSON says
which). Frames/s exclude start-up (Ray, actors, model loading); ``steady_frames_per_s``
also leaves out the first tick (lazy initialisation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cosim.sim.driver import run_simulation
from cosim.sim.results import SimulationResult
from cosim.sim.run_config import DEFAULT_CHECKPOINT, RunConfig
from cosim.sim.scoring import STAGES
from models.checkpoint import save_checkpoint
from models.detector import build_detector


def _checkpoint(path: str | None, folder: Path) -> tuple[str, bool]:
    if path is not None:
        return path, True
    if DEFAULT_CHECKPOINT.is_file():
        return str(DEFAULT_CHECKPOINT), True
    torch.manual_seed(0)
    model = build_detector("cpu_diffkd")
    return str(save_checkpoint(folder / "untrained.pt", model, model.config, {})), False


def _figures(result: SimulationResult) -> dict[str, Any]:
    s = result.summary
    rows = result.timings.to_pylist()
    driver: dict[str, list[float]] = {}
    for r in rows:
        if r["agent"] == -1:
            driver.setdefault(r["stage"], []).append(r["seconds"])
    ticks = [a + b for a, b in zip(driver["tick_wall"], driver["source_wait"], strict=True)]
    return {
        "frames_per_s": s["frames_per_s"],
        "steady_frames_per_s": (len(ticks) - 1) / sum(ticks[1:]) if len(ticks) > 1 else None,
        "wall_s": s["wall_s"],
        "startup_s": s["startup_s"],
        "stage_ms_per_tick_all_agents": {k: 1e3 * s["stage_s_per_tick"][k] for k in STAGES},
        "driver_ms_per_tick": {k: 1e3 * float(np.mean(v)) for k, v in driver.items()},
        "ap@0.5": s["ap@0.5"],
        "mean_wire_bytes": s["messages"]["mean_wire_bytes"],
        "fused": s["messages"]["fused"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--channel", default="dsrc")
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint, trained = _checkpoint(args.checkpoint, Path(folder))
        config = RunConfig(
            checkpoint=checkpoint,
            frames=args.frames,
            agents=args.agents,
            channel=args.channel,
            render_frames=0,
        )
        in_process = run_simulation(config.replace(executor="inprocess"))
        on_ray = run_simulation(config.replace(executor="ray"))
    a, b = _figures(in_process), _figures(on_ray)
    report = {
        "bench": "cosim end to end",
        "scenario": in_process.summary["scenario"],
        "frames": args.frames,
        "vehicles": len(in_process.summary["vehicles"]),
        "channel": args.channel,
        "codec": in_process.summary["codec"],
        "checkpoint": checkpoint,
        "trained_model": trained,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch_threads_per_vehicle": config.torch_threads,
        "same_detections": on_ray.detections.equals(in_process.detections),
        "inprocess": a,
        "ray": b,
        # > 0: Ray slower than in process (s per frame, start-up excluded); target <= 0.15.
        "ray_overhead": a["frames_per_s"] / b["frames_per_s"] - 1.0,
        "ray_overhead_steady": (
            a["steady_frames_per_s"] / b["steady_frames_per_s"] - 1.0
            if a["steady_frames_per_s"] and b["steady_frames_per_s"]
            else None
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
