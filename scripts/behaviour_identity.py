"""Checks that a refactor changed no behaviour: two ``cosim run`` folders hold the same results.

Compares every number a run writes (``summary.json``, ``config.yaml``, every ``*.parquet`` log,
the rendered BEV pictures), leaving out what is wall-clock time. Prints one JSON object (what
was compared, each difference) and exits 1 on any difference, 2 on bad input. Any other folder
of JSON / YAML / parquet outputs compares the same way (``cosim eval --out`` reports,
``cosim robustness --out`` folders)::

    # two folders written before and after a change
    python scripts/behaviour_identity.py /tmp/split_before/default /tmp/split_after/default

    # or rerun the reference's own config.yaml (cosim run --config) into a temporary folder
    python scripts/behaviour_identity.py --rerun /tmp/split_before/default

A reference is made with e.g. ``python -m cosim run --frames 3 --executor inprocess --quiet
--out /tmp/split_before/default`` (add ``--checkpoint models/checkpoints/late.pt`` and so on to
cover the other payload kinds).
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import pyarrow.parquet as pq
import typer
import yaml

# summary.json keys that measure wall-clock time, not what was simulated.
WALL_CLOCK_KEYS = frozenset({"wall_s", "startup_s", "frames_per_s", "stage_s_per_tick"})
# Parquet columns that hold wall-clock seconds, per table.
WALL_CLOCK_COLUMNS = {"timings": frozenset({"seconds"}), "robustness": frozenset({"seconds"})}
# Keys holding paths: compared by file name, so a reference from another checkout still matches.
PATH_KEYS = frozenset({"checkpoint"})


def _same(a: Any, b: Any) -> bool:
    """Exact equality, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b) and type(a) is type(b)


def _diff_tree(a: Any, b: Any, where: str, out: list[str]) -> int:
    """Appends each difference between two JSON/YAML trees to ``out``; returns leaves compared."""
    if isinstance(a, dict) and isinstance(b, dict):
        count = 0
        for key in sorted(set(a) | set(b), key=str):
            if key in WALL_CLOCK_KEYS:
                continue
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in {'after' if key in b else 'before'}")
                continue
            x, y = a[key], b[key]
            if key in PATH_KEYS and isinstance(x, str) and isinstance(y, str):
                x, y = Path(x).name, Path(y).name
            count += _diff_tree(x, y, f"{where}.{key}", out)
        return count
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: length {len(a)} != {len(b)}")
            return 1
        pairs = enumerate(zip(a, b, strict=True))
        return sum(_diff_tree(x, y, f"{where}[{i}]", out) for i, (x, y) in pairs)
    if not _same(a, b):
        out.append(f"{where}: {a!r} != {b!r}")
    return 1


def _diff_table(a: Path, b: Path, out: list[str]) -> dict[str, Any]:
    """Row-by-row, column-by-column comparison of two parquet logs (wall-clock columns aside)."""
    ta, tb = pq.read_table(a), pq.read_table(b)
    name = a.stem
    skip = WALL_CLOCK_COLUMNS.get(name, frozenset())
    if ta.schema.names != tb.schema.names:
        out.append(f"{name}: columns {ta.schema.names} != {tb.schema.names}")
    if ta.num_rows != tb.num_rows:
        out.append(f"{name}: {ta.num_rows} rows != {tb.num_rows}")
    columns = [c for c in ta.schema.names if c in tb.schema.names and c not in skip]
    for col in columns:
        xs, ys = ta.column(col).to_pylist(), tb.column(col).to_pylist()
        bad = [i for i, (x, y) in enumerate(zip(xs, ys, strict=False)) if not _same(x, y)]
        if bad:
            i = bad[0]
            out.append(
                f"{name}.{col}: {len(bad)} rows differ, first row {i}: {xs[i]!r} != {ys[i]!r}"
            )
    return {"rows": ta.num_rows, "columns": columns, "skipped": sorted(skip)}


def _names(before: Path, after: Path, patterns: tuple[str, ...]) -> list[str]:
    """Paths (relative, sorted) matching ``patterns`` in either folder."""
    return sorted(
        {
            p.relative_to(folder).as_posix()
            for folder in (before, after)
            for pattern in patterns
            for p in folder.glob(pattern)
        }
    )


def compare(before: Path, after: Path) -> dict[str, Any]:
    """What was compared between two run folders and every difference found."""
    differences: list[str] = []
    compared: dict[str, Any] = {}
    for name in _names(before, after, ("*.json", "*.yaml")):
        a, b = before / name, after / name
        if not a.exists() or not b.exists():
            differences.append(f"{name}: missing in {'before' if not a.exists() else 'after'}")
            continue
        load = json.loads if name.endswith(".json") else yaml.safe_load
        leaves = _diff_tree(load(a.read_text()), load(b.read_text()), name, differences)
        compared[name] = {"leaves": leaves}
    if compared:
        compared["skipped_keys"] = sorted(WALL_CLOCK_KEYS)
    for name in _names(before, after, ("*.parquet",)):
        a, b = before / name, after / name
        if not a.exists() or not b.exists():
            differences.append(f"{name}: missing in {'before' if not a.exists() else 'after'}")
            continue
        compared[name] = _diff_table(a, b, differences)
    pictures = _names(before, after, ("bev/*",))
    for name in pictures:
        a, b = before / name, after / name
        if not a.exists() or not b.exists():
            differences.append(f"{name}: missing in {'before' if not a.exists() else 'after'}")
        elif hashlib.sha256(a.read_bytes()).digest() != hashlib.sha256(b.read_bytes()).digest():
            differences.append(f"{name}: bytes differ")
    if pictures:
        compared["bev"] = {"pictures": len(pictures)}
    return {
        "before": str(before),
        "after": str(after),
        "identical": not differences,
        "compared": compared,
        "differences": differences,
    }


def rerun(reference: Path, into: Path) -> None:
    """``cosim run`` with the reference's own config.yaml, into ``into``, no progress output."""
    command = [
        sys.executable,
        "-m",
        "cosim",
        "run",
        "--config",
        str(reference / "config.yaml"),
        "--out",
        str(into),
        "--quiet",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")


def main(
    before: Annotated[Path, typer.Argument(help="reference output folder")],
    after: Annotated[
        Path | None, typer.Argument(help="run folder to compare; omit with --rerun")
    ] = None,
    rerun_reference: Annotated[
        bool,
        typer.Option(
            "--rerun", help="run cosim run with BEFORE/config.yaml into a temp folder and compare"
        ),
    ] = False,
) -> None:
    """Compare two output folders (or a fresh cosim run rerun of one); exit 1 on a difference."""
    if not before.is_dir() or (after is not None and not after.is_dir()):
        print(json.dumps({"error": f"{before} or {after} is not a folder"}))
        raise typer.Exit(2)
    if rerun_reference and not (before / "config.yaml").exists():
        print(json.dumps({"error": f"--rerun: {before} holds no cosim run config.yaml"}))
        raise typer.Exit(2)
    if rerun_reference == (after is not None):
        print(json.dumps({"error": "give AFTER or --rerun, not both nor neither"}))
        raise typer.Exit(2)
    if after is not None:
        result = compare(before, after)
    else:
        with tempfile.TemporaryDirectory(prefix="behaviour_identity_") as folder:
            rerun(before, Path(folder) / "run")
            result = compare(before, Path(folder) / "run")
            result["after"] = "rerun of " + str(before / "config.yaml")
    print(json.dumps(result, indent=2))
    if not result["identical"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
