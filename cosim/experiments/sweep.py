"""The bandwidth-versus-accuracy study: fusions x vehicles x channels x codecs x seeds, on Ray.

Each grid point is one whole simulation run (in-process executor) inside one Ray task of one
CPU, so at most as many runs go at once as the cluster has CPUs (``max_parallel`` caps it
further). A fusion is a checkpoint; what it sends decides its codec axis: feature maps run
every dtype x sparsity, points (early fusion) and boxes (late fusion) have one wire format
each. References per vehicle count, ego mode and seed: *no fusion* (nothing sent, the ego
alone) and, per fusion, *lossless* (its messages over the ideal channel; maps in float32,
dense). The
table has one row per run; the plots show AP against log2(mean wire bytes per message) and
against the number of vehicles, per channel, averaged over seeds.
"""

from __future__ import annotations

import itertools
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
from cosim.common.ray_setup import init_local
from cosim.common.render import save  # noqa: E402
from cosim.experiments.ray_tasks import run_bounded
from cosim.sim.run_config import (  # noqa: E402
    DEFAULT_CHECKPOINT,
    DEFAULT_SCENARIO,
    RunConfig,
    check_checkpoint,
    sparsity_label,
)
from cosim.sim.run_config import parse_sparsity as _parse_sparsity  # noqa: E402

KINDS = ("fusion", "no_fusion", "lossless")
EGO_MODES = ("one", "all")
SHIPPED = DEFAULT_CHECKPOINT.parent


def fusion_checkpoint(name: str) -> str:
    """A shipped strategy name (``max`` -> models/checkpoints/max.pt) or a checkpoint path."""
    path = Path(name) if name.endswith(".pt") or "/" in name else SHIPPED / f"{name}.pt"
    return str(check_checkpoint(path))


def fusion_label(checkpoint: str) -> str:
    """The label a fusion gets in the table: the checkpoint's file stem."""
    return Path(checkpoint).stem


@dataclass(frozen=True)
class SweepConfig:
    """The grid and what every run shares."""

    scenario: str = DEFAULT_SCENARIO
    fusions: tuple[str, ...] = (str(DEFAULT_CHECKPOINT),)  # checkpoint paths
    vehicles: tuple[int | None, ...] = (None,)  # connected vehicles; None: the scenario's
    ego_modes: tuple[str, ...] = ("one",)  # one ego, or every vehicle fuses and is scored
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

    def __post_init__(self) -> None:
        if not self.fusions:
            raise ValueError("sweep: --fusions needs at least one checkpoint")
        unknown = sorted(set(self.ego_modes) - set(EGO_MODES))
        if unknown or not self.ego_modes:
            raise ValueError(f"sweep: --egos takes {', '.join(EGO_MODES)}; got {unknown or '[]'}")
        for count in self.vehicles:
            if count is not None and count < 1:
                raise ValueError(f"sweep: --vehicles must be >= 1, got {count}")


def codec_grid(config: SweepConfig, payload: str) -> list[tuple[str, str]]:
    """The ``(dtype, sparsity)`` settings a run of ``payload`` kind varies: every dtype x
    sparsity for maps; one for points and boxes, whose wire format is fixed
    (:mod:`channel.payload_codec`)."""
    if payload == "map":
        return [(dtype, sparse) for dtype in config.dtypes for sparse in config.sparsities]
    return [(RunConfig.dtype, "none")]


def sweep_runs(config: SweepConfig) -> list[tuple[str, RunConfig]]:
    """``(kind, RunConfig)`` for every run of the sweep, references last: each fusion x channel
    x its codec settings x vehicles x ego mode x seed; per vehicles x ego mode x seed one
    no-fusion run (the first fusion's weights, nothing sent) and per fusion one lossless run
    (ideal channel; maps in float32, dense)."""
    from cosim.sim.driver import detector_config_of

    base = RunConfig(
        scenario=config.scenario,
        frames=config.frames,
        pose_error=config.pose_error,
        corruption=config.corruption,
        severity=config.severity,
        executor="inprocess",
        render_frames=0,
    )
    settings = [
        base.replace(agents=vehicles, all_egos=mode == "all", seed=seed)
        for vehicles in config.vehicles
        for mode in config.ego_modes
        for seed in config.seeds
    ]
    runs = []
    for checkpoint in config.fusions:
        payload = payload_kind(detector_config_of(checkpoint).fusion)
        for channel in config.channels:
            for dtype, sparse in codec_grid(config, payload):
                runs.extend(
                    (
                        "fusion",
                        setting.replace(
                            checkpoint=checkpoint,
                            channel=channel,
                            dtype=dtype,
                            sparsity=_parse_sparsity(sparse),
                        ),
                    )
                    for setting in settings
                )
    if config.references:
        for setting in settings:
            runs.append(
                (
                    "no_fusion",
                    setting.replace(checkpoint=config.fusions[0], channel="ideal", cooperate=False),
                )
            )
            runs.extend(
                (
                    "lossless",
                    setting.replace(
                        checkpoint=checkpoint, channel="ideal", dtype="float32", sparsity=None
                    ),
                )
                for checkpoint in config.fusions
            )
    return runs


def run_row(kind: str, config: RunConfig) -> dict[str, Any]:
    """Run one simulation and reduce it to a table row."""
    from cosim.sim.driver import run_simulation

    summary = run_simulation(config).summary
    m = summary["messages"]
    wire = m["mean_wire_bytes"]
    maps = summary["payload"] == "map"
    return {
        "kind": kind,
        "fusion": fusion_label(config.checkpoint),
        "vehicles": len(summary["vehicles"]),
        "egos": "all" if config.all_egos else "one",
        "channel": config.channel_name,
        "payload": summary["payload"],
        "dtype": config.dtype if maps else "-",
        "sparsity": sparsity_label(config.sparsity) if maps else "-",
        "seed": config.seed,
        "ap@0.3": summary["ap@0.3"],
        "ap@0.5": summary["ap@0.5"],
        "ap@0.7": summary["ap@0.7"],
        "mean_wire_bytes": wire,
        "log2_wire_bytes": math.log2(wire) if wire > 0 else math.nan,
        "median_wire_bytes": m["wire_bytes"]["p50"],
        "sent": m["sent"],
        "delivered": m["delivered"],
        "fused": m["fused"],
        "stale_fused": m["stale_fused"],
        "lost": m["lost"],
        "too_old": m["too_old"],
        "latency_p50_s": m["latency_s"]["p50"],
        "latency_p99_s": m["latency_s"]["p99"],
        "fused_age_p50_s": m["fused_age_s"]["p50"],
        "collision": m["collision"],
        "held_fused": m["held_fused"],
        "replaced": summary["medium"]["replaced"],
        "busy_ratio": summary["medium"]["busy_ratio"]["mean"],
        "frames_per_s": summary["frames_per_s"],
    }


@ray.remote(num_cpus=1)
def _run_task(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    return run_row(kind, RunConfig.from_dict(config))


def run_sweep(
    config: SweepConfig,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    runs: list[tuple[str, RunConfig]] | None = None,
) -> pa.Table:
    """Every run of the sweep as Ray tasks (at most ``max_parallel`` at once); one row each.

    ``runs``: the planned ``sweep_runs(config)`` when the caller already has them (planning
    loads every checkpoint once). Uses the current Ray connection, or starts a local instance
    and shuts it down after. With ``should_stop`` (see :mod:`cosim.common.interrupts`) the sweep can
    end early: the table then holds the complete runs only.
    """
    runs = sweep_runs(config) if runs is None else runs
    started = not ray.is_initialized()
    if started:
        init_local()
    try:
        rows = run_bounded(
            lambda item: _run_task.remote(item[0], item[1].to_dict()),
            runs,
            config.max_parallel,
            progress,
            should_stop,
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
    return {
        k: float(np.nanmean(v)) if not all(map(math.isnan, v)) else math.nan
        for k, v in groups.items()
    }


def setting_label(row: dict[str, Any]) -> str:
    """What a run sent: ``max int8 topk:0.1``, ``early points``, ``late boxes``."""
    return f"{row['fusion']} {codec_label(row['payload'], row['dtype'], row['sparsity'])}"


def _panels(channels: Sequence[str], title: str) -> tuple[Any, list[Any]]:
    figure, panels = plt.subplots(
        1, len(channels), figsize=(6.5 * len(channels), 5), dpi=100, sharey=True, squeeze=False
    )
    figure.suptitle(title)
    return figure, list(panels[0])


def _label(axes: Any, title: str, xlabel: str, metric: str, legend: bool = True) -> None:
    """A panel's title, axis labels, grid and (unless ``legend`` is False) legend."""
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(metric.upper())
    axes.grid(alpha=0.3)
    if legend:
        axes.legend(fontsize=7)


def plot_sweep(table: pa.Table, out: Path, title: str = "", metric: str = "ap@0.5") -> Path:
    """``metric`` against log2(wire bytes per message), one panel per channel, one line per
    vehicle count and ego mode through the message settings; no-fusion references dotted."""
    rows = table.to_pylist()
    fused = [dict(r, setting=setting_label(r)) for r in rows if r["kind"] == "fusion"]
    channels = sorted({r["channel"] for r in fused})
    figure, panels = _panels(channels or ["-"], title or f"{metric.upper()} vs bytes per message")
    keys = ("channel", "vehicles", "egos", "setting")
    ap, wire = _mean_by(fused, keys, metric), _mean_by(fused, keys, "log2_wire_bytes")
    reference = _mean_by(
        [r for r in rows if r["kind"] == "no_fusion"], ("vehicles", "egos"), metric
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    groups = sorted({k[1:3] for k in ap})
    for axes, channel in zip(panels, channels, strict=False):
        for index, (vehicles, egos) in enumerate(groups):
            colour, style = colours[index % len(colours)], "-" if egos == "one" else "--"
            group = (channel, vehicles, egos)
            points = sorted((wire[k], ap[k], k[3]) for k in ap if k[:3] == group)
            axes.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                "o" + style,
                color=colour,
                label=f"{vehicles} vehicles, {egos} ego{'s' if egos == 'all' else ''}",
            )
            for x, y, label in points:
                axes.annotate(label, (x, y), fontsize=6, textcoords="offset points", xytext=(3, 3))
            if (vehicles, egos) in reference:
                axes.axhline(reference[vehicles, egos], color=colour, linestyle=":", linewidth=1)
        _label(axes, f"{channel} (dotted: no fusion)", "log2(mean wire bytes per message)", metric)
    figure.tight_layout()
    return save(figure, out)


def plot_vehicles(table: pa.Table, out: Path, title: str = "", metric: str = "ap@0.5") -> Path:
    """``metric`` (mean over seeds) against the number of vehicles: a row of panels per ego
    mode, a column per channel, a line per message setting; no fusion dotted black, each
    fusion's lossless reference (ideal channel) dashed."""
    rows = mean_over_seeds(table).to_pylist()
    channels = list(dict.fromkeys(r["channel"] for r in rows if r["kind"] == "fusion")) or ["-"]
    egos = list(dict.fromkeys(r["egos"] for r in rows))
    figure, panels = plt.subplots(
        len(egos), len(channels), figsize=(6 * len(channels), 4.2 * len(egos)), squeeze=False
    )
    figure.suptitle(title or f"{metric.upper()} vs vehicles")
    palette = plt.get_cmap("tab10").colors
    for axes_row, ego in zip(panels, egos, strict=True):
        for axes, channel in zip(axes_row, channels, strict=True):
            lines: dict[str, list[tuple[int, float]]] = {}
            for r in rows:
                if r["egos"] == ego and (r["kind"] != "fusion" or r["channel"] == channel):
                    lines.setdefault(reference_label(r), []).append((r["vehicles"], r[metric]))
            colours = itertools.cycle(palette)
            for label, points in lines.items():
                style = ":" if label == "no fusion" else "--" if label.endswith("(ideal)") else "o-"
                colour = "black" if label == "no fusion" else next(colours)
                axes.plot(*zip(*sorted(points), strict=True), style, label=label, color=colour)
            first = axes is panels[0][-1]  # one legend: the lines are the same in every panel
            _label(
                axes,
                f"{channel}, {ego} ego{'s' if ego == 'all' else ''}",
                "connected vehicles",
                metric,
                legend=first,
            )
    figure.tight_layout()
    return save(figure, out)


def reference_label(row: dict[str, Any]) -> str:
    """How a seed-mean row is named in plots and tables: its setting for a fusion run, ``no
    fusion``, or ``<setting> (ideal)`` for a lossless reference."""
    return {"no_fusion": "no fusion", "lossless": f"{row['setting']} (ideal)"}.get(
        row["kind"], row["setting"]
    )


MEAN_COLUMNS = (
    "ap@0.3",
    "ap@0.5",
    "ap@0.7",
    "mean_wire_bytes",
    "median_wire_bytes",
    "busy_ratio",
    "latency_p50_s",
    "fused_age_p50_s",
)


def mean_over_seeds(table: pa.Table) -> pa.Table:
    """One row per kind x setting x channel x vehicles x ego mode: the mean of each metric over
    the seeds that ran (``seeds`` says how many), in the order they first appear."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        key = (row["kind"], setting_label(row), row["channel"], row["vehicles"], row["egos"])
        groups.setdefault(key, []).append(row)
    means = []
    for (kind, setting, channel, vehicles, egos), rows in groups.items():
        mean = {
            "kind": kind,
            "setting": setting,
            "channel": channel,
            "vehicles": vehicles,
            "egos": egos,
            "seeds": len(rows),
        }
        for column in MEAN_COLUMNS:
            values = [r[column] for r in rows if not math.isnan(r[column])]
            mean[column] = float(np.mean(values)) if values else math.nan
        means.append(mean)
    return pa.Table.from_pylist(means)
