"""Markdown tables of test reports: the ones shipped checkpoints carry and ``cosim eval --out``
JSON files (e.g. the no-fusion control, which is not shipped).

    python scripts/checkpoint_table.py models/checkpoints/{none,late,early,max,attention}.pt \
        --report "control=runs/sizes_finetune_none/{split}.json"

One table per test split (``data/test``, ``data/test_highway``, ...): AP per-frame and
global sort, recall of the boxes the ego saw and of those only a neighbour saw (IoU 0.5, and
0.7 for the neighbours), truck/bus recall and the boxes kept per frame.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from models.checkpoint import read_checkpoint

COLUMNS = (
    "AP@0.3",
    "AP@0.5",
    "AP@0.7",
    "global AP@0.5 / 0.7",
    "ego-seen recall",
    "neighbour-only recall @0.5 / 0.7",
    "truck/bus recall",
    "boxes / frame",
)


def row(report: dict[str, Any]) -> list[str]:
    """One table row's cells from a ``cosim eval`` report."""
    ap, glob = report["ap"], report["ap_global_sort"]
    seen = report["recall_by_visibility"]
    ego, nbr = seen["ego"], seen["neighbours_only"]
    truck = report["recall_by_size"].get("truck_bus", {}).get("recall", float("nan"))
    return [
        f"{ap['0.3']:.3f}",
        f"{ap['0.5']:.3f}",
        f"{ap['0.7']:.3f}",
        f"{glob['0.5']:.3f} / {glob['0.7']:.3f}",
        f"{ego['recall']:.3f}",
        f"{nbr['recall']:.3f} / {nbr['recall@0.7']:.3f}",
        f"{truck:.3f}",
        f"{report['detections'] / report['frames']:.1f}",
    ]


def shipped_reports(path: Path) -> dict[str, dict[str, Any]]:
    """Split name -> test report stored in a shipped checkpoint (scripts/ship_checkpoint.py)."""
    reports = read_checkpoint(path)["extra"].get("test_reports")
    if not reports:
        raise typer.BadParameter(
            f"{path}: no test_reports in its extra (not shipped by scripts/ship_checkpoint.py)"
        )
    return reports


def main(
    checkpoints: Annotated[list[Path], typer.Argument(help="Shipped checkpoints.")],
    report: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=PATTERN: cosim eval --out JSON files, {split} replaced by the split name."
        ),
    ] = None,
) -> None:
    """Print one markdown table per test split found in the first checkpoint."""
    rows: dict[str, dict[str, dict[str, Any]]] = {
        path.stem: shipped_reports(path) for path in checkpoints
    }
    splits = list(next(iter(rows.values())))
    for item in report or []:
        name, _, pattern = item.partition("=")
        if not pattern:
            raise typer.BadParameter(f"--report {item!r}: expected NAME=PATTERN")
        rows[name] = {s: json.loads(Path(pattern.format(split=s)).read_text()) for s in splits}
    for split in splits:
        first = rows[checkpoints[0].stem][split]
        print(f"\n`{first['data']}` ({first['frames']} frames, {first['num_gt']} GT boxes)\n")
        print("| model | " + " | ".join(COLUMNS) + " |")
        print("|---" * (len(COLUMNS) + 1) + "|")
        for name, by_split in rows.items():
            print(f"| {name} | " + " | ".join(row(by_split[split])) + " |")


if __name__ == "__main__":
    typer.run(main)
