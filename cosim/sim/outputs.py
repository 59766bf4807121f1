"""A run directory on disk, the rich summary table, and the BEV pictures of a few ticks.

Layout of a run directory::

    config.yaml          the resolved RunConfig (``RunConfig.from_yaml`` reads it back)
    summary.json         AP, message counts and sizes, latency percentiles, stage times, faults
    messages.parquet     the channel log, one row per broadcast and listener: a reception
                         (channel.LOG_SCHEMA; ``tx`` names the broadcast)
    transmissions.parquet  one row per broadcast: queued, on the air (start, end, frames,
                         back-off) or replaced unsent (channel.TX_SCHEMA)
    channel_busy.parquet per tick and vehicle: the fraction of the tick the medium it senses
                         is busy (channel.BUSY_SCHEMA)
    receptions.parquet   what each ego did with each delivered message (fused, stale, errors)
    detections.parquet   every detection, ego LiDAR frame
    frames.parquet       per tick and ego: detections, GT, true positives at 0.3/0.5/0.7
    timings.parquet      per tick, agent (-1 = driver) and stage: wall seconds
    bev/tick_NNNN_ego_E.png   ego points, received-feature coverage, detections vs GT
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from rich.table import Table  # noqa: E402

from cosim.common.render import draw_boxes, save  # noqa: E402
from cosim.sim.results import RenderItem, SimulationResult  # noqa: E402
from cosim.sim.scoring import STAGES  # noqa: E402
from models.grid import GridSpec  # noqa: E402

TABLES = ("messages", "receptions", "detections", "frames", "timings")


def default_run_dir(name: str | None = None, root: Path = Path("runs")) -> Path:
    """``runs/<name>`` or ``runs/<YYYYmmdd-HHMMSS>``."""
    return root / (name or datetime.now().strftime("%Y%m%d-%H%M%S"))


def plain_json(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> numbers, recursively, for strict JSON."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_run(result: SimulationResult, out: Path, grid: GridSpec | None = None) -> Path:
    """Write the run directory ``out`` (created); returns it."""
    out.mkdir(parents=True, exist_ok=True)
    result.config.to_yaml(out / "config.yaml")
    for name in TABLES:
        pq.write_table(getattr(result, name), out / f"{name}.parquet")
    if result.transmissions is not None:
        pq.write_table(result.transmissions, out / "transmissions.parquet")
    if result.busy is not None:
        pq.write_table(result.busy, out / "channel_busy.parquet")
    (out / "summary.json").write_text(json.dumps(plain_json(result.summary), indent=2))
    if grid is not None:
        for item in result.renders:
            name = f"tick_{item.frame.index:04d}_ego_{item.ego_id}.png"
            render_tick(item, grid, out / "bev" / name)
    return out


def render_tick(item: RenderItem, grid: GridSpec, out: Path) -> Path:
    """Ego points, how many received maps cover each cell, detections (blue) vs GT (red)."""
    x0, y0, _, x1, y1, _ = grid.point_range
    figure, axes = plt.subplots(figsize=(10, 10 * (y1 - y0) / (x1 - x0) + 1), dpi=100)
    if item.result is not None and item.result.coverage.any():
        shown = axes.imshow(
            item.result.coverage,
            origin="lower",
            extent=(x0, x1, y0, y1),
            cmap="Greens",
            alpha=0.5,
            vmin=0,
            vmax=max(1, int(item.result.coverage.max())),
            interpolation="nearest",
        )
        figure.colorbar(shown, ax=axes, shrink=0.6, label="received maps covering the cell")
    points = item.frame.agent(item.ego_id).points
    inside = (points[:, 0] >= x0) & (points[:, 0] < x1) & (points[:, 1] >= y0) & (points[:, 1] < y1)
    axes.scatter(
        points[inside, 0], points[inside, 1], s=0.3, c="0.3", linewidths=0, rasterized=True
    )
    draw_boxes(axes, item.gt, "red", label="ground truth")
    fused = 0
    if item.result is not None:
        draw_boxes(axes, item.result.boxes, "tab:blue", label="detections")
        fused = sum(1 for r in item.result.receptions if r.status == "fused")
    axes.set_xlim(x0, x1)
    axes.set_ylim(y0, y1)
    axes.set_aspect("equal")
    axes.set_xlabel("x (m, ego LiDAR frame)")
    axes.set_ylabel("y (m)")
    axes.set_title(
        f"tick {item.frame.index}  t = {item.frame.timestamp:.1f} s  ego {item.ego_id}"
        f"  fused {fused} neighbour message(s)"
    )
    handles, _ = axes.get_legend_handles_labels()
    if handles:
        axes.legend(loc="upper right", fontsize=8)
    return save(figure, out)


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def summary_table(summary: dict[str, Any]) -> Table:
    """The end-of-run table: AP, bytes, message fates, latency, stage times."""
    table = Table(
        title=f"{summary['scenario']}: {summary['frames']} frames, "
        f"{summary['executor']}, {summary['model']} ({summary['fusion']})"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("ap@0.3", "ap@0.5", "ap@0.7"):
        table.add_row(key.upper(), _fmt(summary[key]))
    m = summary["messages"]
    table.add_row(
        f"wire bytes / message, {summary.get('payload', 'map')} (mean / median)",
        f"{_fmt(m['mean_wire_bytes'], ',.0f')} / {_fmt(m['wire_bytes']['p50'], ',.0f')}",
    )
    table.add_row("compression vs float32", _fmt(m["compression_ratio"], ".1f") + "x")
    medium = summary.get("medium")
    if medium is not None:
        table.add_row(
            "broadcasts on the air / replaced unsent",
            f"{medium['transmissions']} / {medium['replaced']}",
        )
        busy = medium["busy_ratio"]
        table.add_row(
            "channel busy ratio mean / max",
            f"{_fmt(busy['mean'], '.2f')} / {_fmt(busy['max'], '.2f')}",
        )
    table.add_row("receptions (broadcast x listener)", str(m["sent"]))
    table.add_row(
        "delivered / fused (held over)", f"{m['delivered']} / {m['fused']} ({m['held_fused']})"
    )
    table.add_row("late (stale when fused) / too old", f"{m['late_delivered']} / {m['too_old']}")
    table.add_row(
        "lost / out of range / collision", f"{m['lost']} / {m['out_of_range']} / {m['collision']}"
    )
    table.add_row("undecodable or rejected", str(m["codec_errors"]))
    lat = m["latency_s"]
    table.add_row(
        "latency p50 / p90 / p99 (ms)",
        " / ".join(
            _fmt(None if v is None else 1e3 * v, ".1f")
            for v in (lat["p50"], lat["p90"], lat["p99"])
        ),
    )
    stages = summary["stage_s_per_tick"]
    for stage in STAGES:
        table.add_row(f"{stage} (ms / tick, all agents)", _fmt(1e3 * stages[stage], ".1f"))
    refine = summary.get("refine")
    if refine is not None:
        table.add_row(
            "refiner steps asked / mean run",
            f"{refine['steps']} / " + _fmt(refine["mean_steps_run"], ".2f"),
        )
        table.add_row("refiner skipped (adaptive)", _fmt(refine["skipped_fraction"], ".0%"))
        table.add_row("refiner gamma mean", _fmt(refine["gamma_mean"], ".3f"))
    table.add_row("frames / s (wall)", _fmt(summary["frames_per_s"], ".2f"))
    failed = summary["failed_vehicles"]
    table.add_row("vehicle failures", ", ".join(map(str, failed)) if failed else "none")
    if summary["lost_vehicles"]:
        table.add_row("vehicles lost for good", ", ".join(map(str, summary["lost_vehicles"])))
    return table
