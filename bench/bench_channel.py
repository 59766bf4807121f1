"""Channel benchmark: the shared broadcast medium's events per second, as JSON.

Run: ``python bench/bench_channel.py [--vehicles 7] [--ticks 100] [--repeats 3] [--run 20]``.

Seven vehicles (a 4-way junction: two on each of three arms, one in the middle; all within
carrier-sense range of each other on ``dsrc``) broadcast one message per tick at 10 Hz for 100
ticks and every vehicle listens (all egos), the busiest case: per tick 7 broadcasts queued,
each decided for 6 listeners. Message sizes are those of ``cosim run``'s pillar maps (int8 top
10%: 39,192 B; dense fp16: 102,811 B). Only the channel runs (no payload bytes, no models):
``events`` = broadcasts queued + receptions decided; the time is the best of ``--repeats``.

``--run N`` also runs ``cosim run`` in process (the default scenario, N ticks, all egos) with
each of ``--checkpoints`` (shipped names or paths; default: the main job's; ``early`` sends
points, ``late`` boxes) and reports the channel stage's share of a tick's wall time, the
issue's < 5% target.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import numpy as np

from channel.presets import load_preset

SIZES = {"int8_topk10": 39_192, "fp16_dense": 102_811}


def positions(count: int) -> dict[int, tuple[float, float]]:
    """``count`` vehicles around a junction at the origin (metres, world frame)."""
    spots = [
        (0.0, 0.0),
        (-20.0, -2.0),
        (-45.0, -2.0),
        (2.0, 25.0),
        (2.0, 60.0),
        (30.0, 2.0),
        (70.0, 2.0),
        (-2.0, -30.0),
        (-2.0, -80.0),
    ]
    return {i + 1: spots[i % len(spots)] for i in range(count)}


def simulate(
    preset: str, wire_bytes: int, vehicles: int, ticks: int, seed: int = 0
) -> tuple[float, dict[str, Any]]:
    """Wall seconds of the channel calls for one run, and what happened on the channel."""
    channel = load_preset(preset).make_channel(seed)
    where = positions(vehicles)
    ids = sorted(where)
    dt = 0.1
    t0 = time.perf_counter()
    for k in range(ticks):
        t = round(k * dt, 10)
        channel.update(t, where)
        for s in ids:
            channel.broadcast(wire_bytes, s, t, ids)
        for r in ids:
            channel.arrived(r, t + dt)
        channel.released()
    channel.advance(ticks * dt)
    wall = time.perf_counter() - t0
    log = channel.log_table().to_pydict()
    txs = channel.transmission_table().to_pydict()
    busy = channel.busy_table(dt).column("busy_ratio").to_numpy()
    latency = [a - s for a, s in zip(log["t_arrival"], log["t_send"], strict=True) if a is not None]
    events = len(txs["tx"]) + len(log["seq"])
    return wall, {
        "events": events,
        "queued": len(txs["tx"]),
        "on_air": txs["status"].count("sent"),
        "replaced": txs["status"].count("replaced"),
        "receptions": len(log["seq"]),
        "delivered": sum(
            1
            for d, a in zip(log["dropped"], log["t_delivered"], strict=True)
            if d is None and a is not None
        ),
        "collision": log["dropped"].count("collision"),
        "too_old": log["dropped"].count("too_old"),
        "busy_ratio_mean": float(busy.mean()),
        "latency_p50_ms": float(np.percentile(latency, 50) * 1e3) if latency else None,
        "latency_p99_ms": float(np.percentile(latency, 99) * 1e3) if latency else None,
    }


def run_share(frames: int, checkpoint: str | None = None) -> dict[str, Any]:
    """The channel's share of a tick in ``cosim run`` (in process, all egos) with ``checkpoint``
    (None: the main job's)."""
    from cosim.experiments.sweep import fusion_checkpoint
    from cosim.sim.driver import run_simulation
    from cosim.sim.run_config import RunConfig

    config = RunConfig(frames=frames, executor="inprocess", all_egos=True, render_frames=0)
    if checkpoint is not None:
        config = config.replace(checkpoint=fusion_checkpoint(checkpoint))
    result = run_simulation(config)
    rows = [r for r in result.timings.to_pylist() if r["agent"] == -1]
    channel = [r["seconds"] for r in rows if r["stage"] == "channel"]
    tick = [r["seconds"] for r in rows if r["stage"] == "tick_wall"]
    return {
        "checkpoint": str(config.checkpoint),
        "payload": result.summary["payload"],
        "mean_wire_bytes": result.summary["messages"]["mean_wire_bytes"],
        "ticks": frames,
        "vehicles": len(result.summary["vehicles"]),
        "channel_ms_per_tick": 1e3 * float(np.mean(channel)),
        "tick_wall_ms": 1e3 * float(np.mean(tick)),
        "channel_share": float(np.sum(channel) / np.sum(tick)),
        "busy_ratio_mean": result.summary["medium"]["busy_ratio"]["mean"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=7)
    parser.add_argument("--ticks", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run", type=int, default=0, help="also time N ticks of cosim run")
    parser.add_argument(
        "--checkpoints",
        default="",
        help="comma-separated checkpoints for --run (default: main job's)",
    )
    args = parser.parse_args()
    out: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "vehicles": args.vehicles,
        "ticks": args.ticks,
        "channel": {},
    }
    for preset in ("dsrc", "cv2x"):
        for name, size in SIZES.items():
            walls, stats = [], {}
            for _ in range(args.repeats):
                wall, stats = simulate(preset, size, args.vehicles, args.ticks)
                walls.append(wall)
            best = min(walls)
            out["channel"][f"{preset}/{name}"] = {
                **stats,
                "wall_s": best,
                "events_per_s": stats["events"] / best,
                "ms_per_tick": 1e3 * best / args.ticks,
            }
    if args.run:
        names = [n.strip() for n in args.checkpoints.split(",") if n.strip()] or [None]
        out["cosim_run"] = [run_share(args.run, name) for name in names]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
