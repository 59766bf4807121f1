"""``cosim sweep``: the bandwidth-versus-accuracy study (fusion x vehicles x channel x codec x
seeds) on Ray.

Register on the main app with ``cli_sweep.register(app)``. Writes ``sweep.parquet`` (one row
per run), ``sweep_means.csv`` (mean over seeds per setting), ``sweep.png`` (AP@0.5 against
log2 wire bytes per channel), ``sweep_vehicles.png`` (AP@0.5 against the number of vehicles)
and ``sweep.yaml`` (the grid) to ``--out``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Annotated

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import typer
import yaml
from rich.console import Console
from rich.table import Table

from cosim.cli.errors import print_error
from cosim.common.interrupts import EXIT_INTERRUPTED, graceful_stop
from cosim.common.progress import progress_bar
from cosim.common.ray_setup import connect
from cosim.sim.run_config import DEFAULT_SCENARIO

console = Console()


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _integers(text: str, option: str) -> tuple[int, ...]:
    """Comma-separated integers, or a ValueError naming the option and the bad part."""
    values = []
    for part in _split(text):
        try:
            values.append(int(part))
        except ValueError:
            raise ValueError(f"{option}: {part!r} is not an integer") from None
    return tuple(values)


def sweep(
    scenario: Annotated[str, typer.Argument(help="scenario name, YAML or OPV2V folder")] = (
        DEFAULT_SCENARIO
    ),
    fusions: Annotated[
        str,
        typer.Option(
            help="comma-separated checkpoints: shipped names (early, late, max, attention, none) "
            "or .pt paths; early sends points, late boxes (a fixed format: --dtypes and "
            "--sparsities apply to map-sending checkpoints only)"
        ),
    ] = "attention",
    vehicles: Annotated[
        str | None,
        typer.Option(
            help="comma-separated numbers of connected vehicles (synthetic) [default: the "
            "scenario's]"
        ),
    ] = None,
    egos: Annotated[
        str,
        typer.Option(
            help="comma-separated ego modes: one (one ego is scored), all (every vehicle fuses "
            "and is scored)"
        ),
    ] = "one",
    frames: Annotated[int, typer.Option(help="ticks per run")] = 10,
    dtypes: Annotated[str, typer.Option(help="comma-separated codec dtypes")] = "float16,int8",
    sparsities: Annotated[
        str, typer.Option(help="comma-separated: none, topk:F, threshold:T")
    ] = "none,topk:0.1",
    channels: Annotated[str, typer.Option(help="comma-separated channel presets")] = "dsrc,cv2x",
    seeds: Annotated[str, typer.Option(help="comma-separated seeds")] = "0,1",
    pose_error: Annotated[float | None, typer.Option(help="pose error sigma")] = None,
    corruption: Annotated[str | None, typer.Option(help="sensor corruption name")] = None,
    severity: Annotated[int, typer.Option(help="corruption severity 1-3")] = 2,
    references: Annotated[
        bool, typer.Option(help="also run no-fusion and lossless-fusion references")
    ] = True,
    parallel: Annotated[int, typer.Option(help="runs at once (one CPU each)")] = 2,
    address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
    out: Annotated[Path | None, typer.Option(help="output folder [default: runs/sweep-<time>]")] = (
        None
    ),
) -> None:
    """Bandwidth versus accuracy: AP against wire bytes over codec settings and channels."""
    import ray

    from cosim.experiments.sweep import (
        SweepConfig,
        fusion_checkpoint,
        mean_over_seeds,
        plot_sweep,
        plot_vehicles,
        run_sweep,
        sweep_runs,
    )
    from cosim.sim.outputs import default_run_dir

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        config = SweepConfig(
            scenario=scenario,
            fusions=tuple(fusion_checkpoint(f) for f in _split(fusions)),
            vehicles=(None,) if vehicles is None else tuple(_integers(vehicles, "--vehicles")),
            ego_modes=_split(egos),
            frames=frames,
            dtypes=_split(dtypes),
            sparsities=_split(sparsities),
            channels=_split(channels),
            seeds=_integers(seeds, "--seeds"),
            pose_error=pose_error,
            corruption=corruption,
            severity=severity,
            references=references,
            max_parallel=parallel,
        )
        runs = sweep_runs(config)  # validates every run's settings before starting
        total = len(runs)
    except (FileNotFoundError, ValueError) as err:
        print_error(console, err)
        raise typer.Exit(2) from err
    folder = out or default_run_dir(None).with_name("sweep-" + default_run_dir(None).name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    if address is not None:
        connect(address)
    with graceful_stop() as stop:
        try:
            with progress_bar(console, transient=True) as progress:
                task = progress.add_task("sweep runs", total=total)
                table = run_sweep(
                    config,
                    lambda done, _: progress.update(task, completed=done),
                    should_stop=stop,
                    runs=runs,
                )
        finally:
            if address is not None:
                ray.shutdown()
    interrupted = stop.signal is not None and table.num_rows < total
    (folder / "sweep_summary.json").write_text(
        json.dumps(
            {"interrupted": interrupted, "runs": table.num_rows, "runs_planned": total}, indent=2
        )
    )
    if table.num_rows:
        pq.write_table(table, folder / "sweep.parquet")
        means = mean_over_seeds(table)
        pa_csv.write_csv(means, folder / "sweep_means.csv")
        plot_sweep(table, folder / "sweep.png", f"{scenario}: AP@0.5 vs bytes per message")
        plot_vehicles(table, folder / "sweep_vehicles.png", f"{scenario}: AP@0.5 vs vehicles")
        console.print(_table(means.to_pylist()))
    console.print(f"sweep folder: [bold]{folder}[/bold]")
    if interrupted:
        console.print(
            f"interrupted ({stop.name}): wrote the {table.num_rows} complete run(s) "
            f"of {total} to {folder}",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED)


def _table(means: list[dict]) -> Table:
    table = Table(title="sweep: mean over seeds")
    for name in (
        "kind",
        "setting",
        "channel",
        "vehicles",
        "egos",
        "seeds",
        "wire B",
        "AP@0.5",
        "AP@0.7",
        "busy",
    ):
        table.add_column(name)
    for r in means:
        table.add_row(
            r["kind"],
            r["setting"],
            r["channel"],
            str(r["vehicles"]),
            r["egos"],
            str(r["seeds"]),
            f"{r['mean_wire_bytes']:,.0f}",
            f"{r['ap@0.5']:.3f}",
            f"{r['ap@0.7']:.3f}",
            f"{r['busy_ratio']:.2f}",
        )
    return table


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to the ``cosim`` app."""
    app.command("sweep")(sweep)
