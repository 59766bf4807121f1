"""Markdown tables of a ``cosim sweep`` study: one table per channel, a row per message setting,
a column per number of vehicles and ego mode (AP@0.5, mean over the seeds that ran).

    cosim sweep --fusions early,attention,late --vehicles 2,4,7 --egos one,all \
        --dtypes float16,int8 --sparsities none,topk:0.1 --channels dsrc,cv2x \
        --seeds 0,1 --frames 10 --out runs/study
    python scripts/study_table.py runs/study --plot docs/study_vehicles.png

The references (no fusion: nothing sent; lossless: float32 dense maps, points or boxes over
the ideal channel) ran once per vehicles x ego mode x seed and appear under every channel.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import pyarrow.parquet as pq
import typer

from cosim.experiments.sweep import mean_over_seeds


def _cell(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3f}"


def _bytes(value: float) -> str:
    return "0" if math.isnan(value) or value == 0 else f"{value:,.0f}"


def study_tables(rows: list[dict[str, Any]], metric: str = "ap@0.5") -> str:
    """One markdown table per channel from the seed means of a sweep."""
    columns = sorted(
        {(r["vehicles"], r["egos"]) for r in rows}, key=lambda c: (c[0], c[1] != "one")
    )
    channels = list(dict.fromkeys(r["channel"] for r in rows if r["kind"] == "fusion"))
    header = (
        "| message | wire bytes | " + " | ".join(f"{v} veh, {e} ego" for v, e in columns) + " |"
    )
    rule = "|---|---|" + "---|" * len(columns)
    out = []
    for channel in channels:
        cells: dict[str, dict[tuple[int, str], dict[str, Any]]] = {}
        for r in rows:
            if r["kind"] == "fusion" and r["channel"] != channel:
                continue
            label = r["setting"] if r["kind"] == "fusion" else f"{r['kind']}: {r['setting']}"
            if r["kind"] == "no_fusion":
                label = "no fusion (reference)"
            elif r["kind"] == "lossless":
                label = f"{r['setting']} lossless, ideal channel (reference)"
            cells.setdefault(label, {})[(r["vehicles"], r["egos"])] = r
        out += [f"**{channel}** ({metric}, mean of seeds)", "", header, rule]
        for label, by_column in cells.items():
            sizes = [c["mean_wire_bytes"] for c in by_column.values()]
            size = sum(sizes) / len(sizes)
            values = [_cell(by_column[c][metric]) if c in by_column else "—" for c in columns]
            out.append(f"| {label} | {_bytes(size)} | " + " | ".join(values) + " |")
        out.append("")
    return "\n".join(out)


def compact_table(rows: list[dict[str, Any]], metric: str = "ap@0.5") -> str:
    """The README's table: a row per message setting (references last), a column per channel
    and ego mode whose cells list the metric at each number of vehicles."""
    vehicles = sorted({r["vehicles"] for r in rows})
    channels = list(dict.fromkeys(r["channel"] for r in rows if r["kind"] == "fusion"))
    egos = list(dict.fromkeys(r["egos"] for r in rows))
    columns = [(c, e) for c in channels for e in egos]
    counts = " / ".join(map(str, vehicles))
    header = "| message | wire bytes | " + " | ".join(
        f"{c} {e} ego{'s' if e == 'all' else ''} ({counts} veh)" for c, e in columns
    )
    lines = [header + " |", "|---|---|" + "---|" * len(columns)]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        label = {"no_fusion": "no fusion (reference)"}.get(r["kind"], r["setting"])
        if r["kind"] == "lossless":
            label = f"{r['setting']} lossless, ideal channel (reference)"
        groups.setdefault(label, []).append(r)
    for label, chosen in groups.items():
        cells = []
        for channel, ego in columns:
            by_count = {
                r["vehicles"]: r[metric]
                for r in chosen
                if r["egos"] == ego and (r["kind"] != "fusion" or r["channel"] == channel)
            }
            values = (_cell(by_count.get(v, math.nan)).removeprefix("0") for v in vehicles)
            cells.append(" / ".join(values))
        size = sum(r["mean_wire_bytes"] for r in chosen) / len(chosen)
        lines.append(f"| {label} | {_bytes(size)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_study(rows: list[dict[str, Any]], out: Path, metric: str = "ap@0.5") -> Path:
    """AP against connected vehicles: a row of panels per ego mode, a column per channel; every
    fusion setting a line, the no-fusion and lossless references in black and grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    channels = list(dict.fromkeys(r["channel"] for r in rows if r["kind"] == "fusion"))
    egos = list(dict.fromkeys(r["egos"] for r in rows))
    figure, panels = plt.subplots(
        len(egos), len(channels), figsize=(6 * len(channels), 4.2 * len(egos)), squeeze=False
    )
    for i, ego in enumerate(egos):
        for j, channel in enumerate(channels):
            axes = panels[i][j]
            lines: dict[str, list[tuple[int, float]]] = {}
            for r in rows:
                if r["egos"] != ego or (r["kind"] == "fusion" and r["channel"] != channel):
                    continue
                label = {"no_fusion": "no fusion", "lossless": f"{r['setting']} (ideal)"}.get(
                    r["kind"], r["setting"]
                )
                if r["kind"] == "lossless" and not label.startswith("attention"):
                    continue
                lines.setdefault(label, []).append((r["vehicles"], r[metric]))
            palette = [c for k, c in enumerate(plt.get_cmap("tab10").colors) if k != 7]  # no grey
            for k, (label, points) in enumerate(lines.items()):
                points.sort()
                style = {"no fusion": ":", "attention float32 none (ideal)": "--"}.get(label, "o-")
                color = {"no fusion": "black", "attention float32 none (ideal)": "grey"}.get(
                    label, palette[k % len(palette)]
                )
                axes.plot(*zip(*points, strict=True), style, color=color, label=label)
            axes.set_title(f"{channel}, {ego} ego{'s' if ego == 'all' else ''}")
            axes.set_xlabel("connected vehicles")
            axes.set_ylabel(metric.upper())
            axes.grid(alpha=0.3)
    panels[0][-1].legend(fontsize=7, loc="best")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def main(
    sweep: Annotated[Path, typer.Argument(help="cosim sweep --out folder (sweep.parquet)")],
    metric: Annotated[str, typer.Option(help="ap@0.3, ap@0.5 or ap@0.7")] = "ap@0.5",
    plot: Annotated[Path | None, typer.Option(help="also draw AP against vehicles here")] = None,
    compact: Annotated[bool, typer.Option(help="the README's one-table form instead")] = False,
) -> None:
    """Print the study's tables."""
    path = sweep / "sweep.parquet"
    if not path.is_file():
        print(f"error: {path}: not found (run cosim sweep --out {sweep} first)", file=sys.stderr)
        raise typer.Exit(2)
    rows = mean_over_seeds(pq.read_table(path)).to_pylist()
    print(compact_table(rows, metric) if compact else study_tables(rows, metric))
    if plot is not None:
        print(f"wrote {plot_study(rows, plot, metric)}")


if __name__ == "__main__":
    typer.run(main)
