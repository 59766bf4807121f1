"""Time one frame of the synthetic world (default scenario) by stage; prints JSON.

Runs on one core: BLAS/OpenMP/TBB thread counts are set to 1 before numpy and Embree load, and
the process is pinned to a single CPU with ``sched_setaffinity`` (Linux), which also confines
Embree's TBB worker threads. Usage: ``python bench/bench_synthetic.py [--frames 40] [--scenario
intersection] [--cavs 4]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TBB_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from scenarios.synthetic import SyntheticSource  # noqa: E402


def _stats(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1000.0
    return {
        "median_ms": round(float(np.median(ms)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", default="intersection")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--cavs", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    pinned = False
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        pinned = True
    src = SyntheticSource.from_scenario(
        args.scenario, num_cavs=args.cavs, num_frames=args.frames + args.warmup
    )
    stages: dict[str, list[float]] = {
        k: [] for k in ("total", "traffic_step", "mesh_build", "ray_setup", "ray_cast", "hit_count")
    }
    points: list[int] = []
    for index in range(args.frames + args.warmup):
        start = time.perf_counter()
        frame = src.frame(index)
        total = time.perf_counter() - start
        if index < args.warmup:
            continue
        t = src.lidar.timings
        for key, value in (
            ("total", total),
            ("traffic_step", src.last_traffic_seconds),
            ("mesh_build", t.mesh_build),
            ("ray_setup", t.ray_setup),
            ("ray_cast", t.ray_cast),
            ("hit_count", t.hit_count),
        ):
            stages[key].append(value)
        points += [len(obs.points) for obs in frame.agents.values()]
    report = {
        "scenario": args.scenario,
        "frames": args.frames,
        "agents": len(src.agent_ids),
        "vehicles": len(frame.objects),
        "rays_per_agent": src.lidar.rays_per_sweep,
        "one_core": {"pinned_affinity": pinned, "threads_env": os.environ["OMP_NUM_THREADS"]},
        **{key: _stats(values) for key, values in stages.items()},
        "points_per_agent": {
            "median": int(np.median(points)),
            "min": int(np.min(points)),
            "max": int(np.max(points)),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
