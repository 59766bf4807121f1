"""Markdown tables of a ``cosim sweep`` study: one table per channel, a row per message setting,
a column per number of vehicles and ego mode (AP@0.5, mean over the seeds that ran).

    cosim sweep --fusions early,attention,late --vehicles 2,4,7 --egos one,all \
        --dtypes float16,int8 --sparsities none,topk:0.1 --channels dsrc,cv2x \
        --seeds 0,1 --frames 10 --out runs/study
    python scripts/study_table.py runs/study

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


def main(
    sweep: Annotated[Path, typer.Argument(help="cosim sweep --out folder (sweep.parquet)")],
    metric: Annotated[str, typer.Option(help="ap@0.3, ap@0.5 or ap@0.7")] = "ap@0.5",
) -> None:
    """Print the study's tables."""
    path = sweep / "sweep.parquet"
    if not path.is_file():
        print(f"error: {path}: not found (run cosim sweep --out {sweep} first)", file=sys.stderr)
        raise typer.Exit(2)
    print(study_tables(mean_over_seeds(pq.read_table(path)).to_pylist(), metric))


if __name__ == "__main__":
    typer.run(main)
