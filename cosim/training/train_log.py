"""The CSV logs of a training run folder: ``steps.csv`` (one row per optimiser step) and
``epochs.csv`` (one row per epoch), appended as training goes and cut back on resume."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

STEP_FIELDS = [
    "epoch",
    "step",
    "global_step",
    "lr",
    "loss",
    "cls",
    "reg",
    "direction",
    "pos",
    "detection",
    "diffusion",
    "feature",
    "autoencoder",
    "adapter",
    "reliability",
    "max_severity",
]
LOG_EVERY = 20  # steps.csv is appended every this many steps
EPOCH_FIELDS = ["epoch", "loss", "samples", "seconds", "samples_per_s", "ap30", "ap50", "ap70"]


def append_rows(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` to a CSV log, writing its header first when the file is new."""
    new = not path.is_file()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def truncate_log(path: Path, key: str, limit: int) -> None:
    """Keep only rows with ``key <= limit`` (a resumed run drops what followed its last.pt)."""
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = [r for r in reader if int(r[key]) <= limit]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
