"""``cosim dataset ...``: build training shards once from seeded scenarios, and inspect them.

Train and test are separate builds from different seeds, e.g.::

    cosim dataset build --scenario intersection --scenario t_junction --frames 200 \\
        --seeds 0,1,2 --out data/train
    cosim dataset build --scenario intersection --scenario t_junction --frames 200 \\
        --seeds 100,101 --out data/test
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cosim.cli.errors import print_error
from cosim.common.progress import progress_bar
from cosim.training.dataset_build import build_dataset, dataset_info
from models.dataset import DatasetFormatError

app = typer.Typer(no_args_is_help=True, help="Training datasets: build Parquet shards, inspect.")
console = Console()


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) or a mix -> seeds, in order, without repeats."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            values = range(int(low), int(high) + 1) if high else [int(low)]
        except ValueError:
            raise typer.BadParameter(f"--seeds: {part!r} is not an integer nor a-b") from None
        seeds.extend(v for v in values if v not in seeds)
    if not seeds:
        raise typer.BadParameter("--seeds: give at least one seed")
    return seeds


@app.command()
def build(
    scenario: Annotated[
        list[str],
        typer.Option(
            "--scenario", help="Built-in name, scenario YAML or OPV2V folder; repeat for several."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="New or empty folder for the shards.")],
    frames: Annotated[
        int | None,
        typer.Option(
            min=1, help="Frames simulated per scenario and seed (OPV2V: frames read; default all)."
        ),
    ] = None,
    seeds: Annotated[str, typer.Option(help="Seeds, e.g. 0,1,2 (train) or 100,101 (test).")] = "0",
    every: Annotated[int, typer.Option(min=1, help="Store every N-th frame.")] = 1,
    agents: Annotated[
        int | None, typer.Option("--agents", help="Connected vehicles per scenario (synthetic).")
    ] = None,
    shard_frames: Annotated[int, typer.Option(min=1, help="Frames per shard.")] = 200,
) -> None:
    """Simulate (or read) the frames once and store them as zstd Parquet shards."""
    words = [w for s in scenario for w in ("--scenario", s)] + ["--seeds", seeds]
    words += [] if frames is None else ["--frames", str(frames)]
    words += ["--every", str(every)] + ([] if agents is None else ["--agents", str(agents)])
    words += ["--shard-frames", str(shard_frames), "--out", str(out)]
    command = "cosim dataset build " + shlex.join(words)
    with progress_bar(console) as bar:
        task = bar.add_task("frames", total=None)
        try:
            manifest = build_dataset(
                scenario,
                frames,
                out,
                parse_seeds(seeds),
                num_cavs=agents,
                every=every,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                frames_per_shard=shard_frames,
                command=command,
            )
        except (ValueError, KeyError, FileNotFoundError, FileExistsError) as error:
            print_error(console, error)
            raise typer.Exit(2) from error
    size = sum(s.get("bytes", 0) for s in manifest["shards"])
    console.print(
        f"wrote {manifest['num_frames']} frames in {len(manifest['shards'])} shard(s), "
        f"{size / 1e6:.1f} MB, to {out}"
    )


@app.command()
def info(
    root: Annotated[Path, typer.Argument(help="Dataset folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Frames, shards, points per agent and objects per frame of a dataset folder."""
    try:
        summary = dataset_info(root)
    except DatasetFormatError as error:
        print_error(console, error)
        raise typer.Exit(2) from error
    if as_json:
        typer.echo(json.dumps(summary))
        return
    console.print(
        f"[bold]{summary['root']}[/bold]: {summary['frames']} frames, "
        f"{summary['agent_rows']} agent sweeps, {summary['shards']} shard(s), "
        f"{summary['bytes'] / 1e6:.1f} MB"
    )
    console.print(f"scenarios {', '.join(summary['scenarios'])}; seeds {summary['seeds']}")
    console.print(f"made by: {summary['command']}")
    table = Table("per", "min", "mean", "max")
    for label, key in (
        ("points per agent", "points_per_agent"),
        ("objects per frame", "objects_per_frame"),
    ):
        stats = summary[key]
        table.add_row(label, f"{stats['min']:.0f}", f"{stats['mean']:.1f}", f"{stats['max']:.0f}")
    console.print(table)


def register(root: typer.Typer) -> None:
    """Add the ``dataset`` command group to the ``cosim`` app."""
    root.add_typer(app, name="dataset")
