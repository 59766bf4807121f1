"""The bandwidth-versus-accuracy study: codec settings x channel presets x seeds, on Ray.

Each grid point is one whole simulation run (in-process executor) inside one Ray task of one
CPU, so at most as many runs go at once as the cluster has CPUs (``max_parallel`` caps it
further). Two references per seed: *no fusion* (nothing sent, the ego alone) and *lossless
fusion* (float32, dense, ideal channel). An early or late fusion checkpoint sends points or
boxes, whose wire format is fixed: its grid is channels x seeds, and its lossless reference the
same messages over the ideal channel. The table has one row per run; the plot shows AP@0.5
and AP@0.7 against log2(mean wire bytes per message), averaged over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import ray  # noqa: E402

from agents.payloads import payload_kind
from cosim.ray_setup import init_local
from cosim.ray_tasks import run_bounded
from cosim.render import save  # noqa: E402
from cosim.run_config import DEFAULT_CHECKPOINT, DEFAULT_SCENARIO, RunConfig, sparsity_label  # noqa: E402
from cosim.run_config import parse_sparsity as _parse_sparsity  # noqa: E402

KINDS = ("fusion", "no_fusion", "lossless")


@dataclass(frozen=True)
class SweepConfig:
    """The grid and what every run shares."""

    scenario: str = DEFAULT_SCENARIO
    checkpoint: str = str(DEFAULT_CHECKPOINT)
    agents: int | None = None
    frames: int = 10
    dtypes: tuple[str, ...] = ("float16", "int8")
    sparsities: tuple[str, ...] = ("none", "topk:0.1")
    channels: tuple[str, ...] = ("dsrc", "cv2x")
    seeds: tuple[int, ...] = (0, 1)
    pose_error: float | None = None
    corruption: str | None = None
    severity: int = 2
    references: bool = True
    max_parallel: int = 2


def codec_grid(config: SweepConfig, payload: str) -> list[tuple[str, str]]:
    """The ``(dtype, sparsity)`` settings a run of ``payload`` kind varies: every dtype x
    sparsity for maps; one for points and boxes, whose wire format is fixed
    (:mod:`channel.payload_codec`)."""
    if payload == "map":
        return [(dtype, sparse) for dtype in config.dtypes for sparse in config.sparsities]
    return [(RunConfig.dtype, "none")]


def sweep_runs(config: SweepConfig) -> list[tuple[str, RunConfig]]:
    """``(kind, RunConfig)`` for every run of the sweep, references last. An early or late
    fusion checkpoint sends points or boxes: one fusion run per channel and seed."""
    from cosim.driver import detector_config_of

    payload = payload_kind(detector_config_of(config.checkpoint).fusion)
    base = RunConfig(
        scenario=config.scenario, checkpoint=config.checkpoint, agents=config.agents,
        frames=config.frames, pose_error=config.pose_error, corruption=config.corruption,
        severity=config.severity, executor="inprocess", render_frames=0,
    )
    runs = [
        ("fusion", base.replace(channel=channel, dtype=dtype, sparsity=_parse_sparsity(sparse),
                                seed=seed))
        for channel in config.channels for dtype, sparse in codec_grid(config, payload)
        for seed in config.seeds
    ]
    if config.references:
        for seed in config.seeds:
            runs.append(("no_fusion", base.replace(channel="ideal", cooperate=False, seed=seed)))
            runs.append(("lossless", base.replace(channel="ideal", dtype="float32", sparsity=None,
                                                   seed=seed)))
    return runs


def run_row(kind: str, config: RunConfig) -> dict[str, Any]:
    """Run one simulation and reduce it to a table row."""
    from cosim.driver import run_simulation

    summary = run_simulation(config).summary
    m = summary["messages"]
    wire = m["mean_wire_bytes"]
    maps = summary["payload"] == "map"
    return {
        "kind": kind, "channel": config.channel_name, "payload": summary["payload"],
        "dtype": config.dtype if maps else "-",
        "sparsity": sparsity_label(config.sparsity) if maps else "-", "seed": config.seed,
        "ap@0.3": summary["ap@0.3"], "ap@0.5": summary["ap@0.5"], "ap@0.7": summary["ap@0.7"],
        "mean_wire_bytes": wire, "log2_wire_bytes": math.log2(wire) if wire > 0 else math.nan,
        "median_wire_bytes": m["wire_bytes"]["p50"],
        "sent": m["sent"], "delivered": m["delivered"], "fused": m["fused"],
        "stale_fused": m["stale_fused"], "lost": m["lost"], "too_old": m["too_old"],
        "latency_p50_s": m["latency_s"]["p50"], "latency_p99_s": m["latency_s"]["p99"],
        "fused_age_p50_s": m["fused_age_s"]["p50"], "collision": m["collision"],
        "held_fused": m["held_fused"], "replaced": summary["medium"]["replaced"],
        "busy_ratio": summary["medium"]["busy_ratio"]["mean"],
        "frames_per_s": summary["frames_per_s"],
    }


@ray.remote(num_cpus=1)
def _run_task(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    return run_row(kind, RunConfig.from_dict(config))


def run_sweep(
    config: SweepConfig, progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> pa.Table:
    """Every run of the sweep as Ray tasks (at most ``max_parallel`` at once); one row each.

    Uses the current Ray connection, or starts a local instance and shuts it down after.
    With ``should_stop`` (see :mod:`cosim.interrupts`) the sweep can end early: the table then
    holds the complete runs only.
    """
    runs = sweep_runs(config)
    started = not ray.is_initialized()
    if started:
        init_local()
    try:
        rows = run_bounded(
            lambda item: _run_task.remote(item[0], item[1].to_dict()),
            runs, config.max_parallel, progress, should_stop,
        )
    finally:
        if started:
            ray.shutdown()
    return pa.Table.from_pylist([row for row in rows if row is not None])


def codec_label(payload: str, dtype: str, sparsity: str) -> str:
    """How a run's message is coded: ``int8 topk:0.1`` for maps, else ``points`` / ``boxes``."""
    return f"{dtype} {sparsity}" if payload == "map" else payload


def _mean_by(rows: Sequence[dict[str, Any]], keys: Sequence[str], value: str) -> dict[tuple, float]:
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row[value])
    return {k: float(np.nanmean(v)) if not all(map(math.isnan, v)) else math.nan
            for k, v in groups.items()}


def plot_sweep(table: pa.Table, out: Path, title: str = "") -> Path:
    """AP@0.5 and AP@0.7 against log2(wire bytes per message), one line per channel."""
    rows = table.to_pylist()
    fused = [r for r in rows if r["kind"] == "fusion"]
    figure, panels = plt.subplots(1, 2, figsize=(13, 5), dpi=100, sharex=True)
    for axes, metric in zip(panels, ("ap@0.5", "ap@0.7"), strict=True):
        keys = ("channel", "payload", "dtype", "sparsity")
        ap, wire = _mean_by(fused, keys, metric), _mean_by(fused, keys, "log2_wire_bytes")
        for channel in sorted({k[0] for k in ap}):
            points = sorted((wire[k], ap[k], codec_label(*k[1:])) for k in ap if k[0] == channel)
            axes.plot([p[0] for p in points], [p[1] for p in points], "o-", label=channel)
            for x, y, label in points:
                axes.annotate(label, (x, y), fontsize=7, textcoords="offset points",
                              xytext=(3, 3))
        for kind, style in (("no_fusion", "--"), ("lossless", ":")):
            ref = [r[metric] for r in rows if r["kind"] == kind and not math.isnan(r[metric])]
            if ref:
                axes.axhline(float(np.mean(ref)), color="0.3", linestyle=style,
                             label=kind.replace("_", " ") + " (ref.)")
        axes.set_xlabel("log2(mean wire bytes per message)")
        axes.set_ylabel(metric.upper())
        axes.set_title(metric.upper())
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(title or "bandwidth vs accuracy")
    figure.tight_layout()
    return save(figure, out)

