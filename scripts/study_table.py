"""Markdown tables of a ``cosim sweep`` study: one table per channel, a row per message setting,
a column per number of vehicles and ego mode (AP@0.5, mean over the seeds that ran).

    cosim sweep --fusions attention,early,late --vehicles 2,4,7 --egos one,all \
        --dtypes float16,int8 --sparsities none,topk:0.1,topk:0.006 --channels dsrc,cv2x \
        --seeds 0,1 --frames 10 --out runs/study
    python scripts/study_table.py runs/study --plot docs/study_vehicles.png

The references (``no fusion``: nothing sent; ``... (ideal)``: the lossless float32 dense maps,
points or boxes over the ideal channel) ran once per vehicles x ego mode x seed and appear
under every channel. ``--plot`` draws the figure ``cosim sweep`` writes as sweep_vehicles.png.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import pyarrow.parquet as pq
import typer

from cosim.experiments.sweep import mean_over_seeds, plot_vehicles, reference_label


def _cell(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3f}"


def _mean_bytes(rows: Iterable[dict[str, Any]]) -> str:
    sizes = [r["mean_wire_bytes"] for r in rows]
    value = sum(sizes) / len(sizes)
    return "0" if math.isnan(value) or value == 0 else f"{value:,.0f}"


def _channels(rows: list[dict[str, Any]]) -> list[str]:
    """The channels the fusion runs used, in the order they ran."""
    return list(dict.fromkeys(r["channel"] for r in rows if r["kind"] == "fusion"))


def _on(rows: Iterable[dict[str, Any]], channel: str) -> list[dict[str, Any]]:
    """The fusion rows of ``channel`` and every reference (those ran once, on the ideal
    channel, and belong under each channel)."""
    return [r for r in rows if r["kind"] != "fusion" or r["channel"] == channel]


def study_tables(rows: list[dict[str, Any]], metric: str = "ap@0.5") -> str:
    """One markdown table per channel from the seed means of a sweep."""
    columns = sorted(
        {(r["vehicles"], r["egos"]) for r in rows}, key=lambda c: (c[0], c[1] != "one")
    )
    header = (
        "| message | wire bytes | " + " | ".join(f"{v} veh, {e} ego" for v, e in columns) + " |"
    )
    out = []
    for channel in _channels(rows):
        cells: dict[str, dict[tuple[int, str], dict[str, Any]]] = {}
        for r in _on(rows, channel):
            cells.setdefault(reference_label(r), {})[(r["vehicles"], r["egos"])] = r
        out += [f"**{channel}** ({metric}, mean of seeds)", "", header]
        out.append("|---|---|" + "---|" * len(columns))
        for label, by_column in cells.items():
            values = [_cell(by_column[c][metric]) if c in by_column else "—" for c in columns]
            out.append(
                f"| {label} | {_mean_bytes(by_column.values())} | " + " | ".join(values) + " |"
            )
        out.append("")
    return "\n".join(out)


def compact_table(rows: list[dict[str, Any]], metric: str = "ap@0.5") -> str:
    """The README's table: a row per message setting (references last), a column per channel
    and ego mode whose cells list the metric at each number of vehicles."""
    vehicles = sorted({r["vehicles"] for r in rows})
    egos = list(dict.fromkeys(r["egos"] for r in rows))
    columns = [(c, e) for c in _channels(rows) for e in egos]
    counts = " / ".join(map(str, vehicles))
    header = "| message | wire bytes | " + " | ".join(
        f"{c} {e} ego{'s' if e == 'all' else ''} ({counts} veh)" for c, e in columns
    )
    lines = [header + " |", "|---|---|" + "---|" * len(columns)]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(reference_label(r), []).append(r)
    for label, chosen in groups.items():
        cells = []
        for channel, ego in columns:
            by_count = {r["vehicles"]: r[metric] for r in _on(chosen, channel) if r["egos"] == ego}
            values = (_cell(by_count.get(v, math.nan)).removeprefix("0") for v in vehicles)
            cells.append(" / ".join(values))
        lines.append(f"| {label} | {_mean_bytes(chosen)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(
    sweep: Annotated[Path, typer.Argument(help="cosim sweep --out folder (sweep.parquet)")],
    metric: Annotated[str, typer.Option(help="ap@0.3, ap@0.5 or ap@0.7")] = "ap@0.5",
    plot: Annotated[
        Path | None, typer.Option(help="also draw AP against vehicles here (as cosim sweep does)")
    ] = None,
    compact: Annotated[bool, typer.Option(help="the README's one-table form instead")] = False,
) -> None:
    """Print the study's tables."""
    path = sweep / "sweep.parquet"
    if not path.is_file():
        print(f"error: {path}: not found (run cosim sweep --out {sweep} first)", file=sys.stderr)
        raise typer.Exit(2)
    table = pq.read_table(path)
    rows = mean_over_seeds(table).to_pylist()
    print(compact_table(rows, metric) if compact else study_tables(rows, metric))
    if plot is not None:
        print(f"wrote {plot_vehicles(table, plot, metric=metric)}")


if __name__ == "__main__":
    typer.run(main)
