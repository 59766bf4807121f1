"""``cosim robustness CHECKPOINT``: AP under sensor corruptions and communication faults.

Register in ``cosim/cli/app.py`` with ``cli_robustness.register(app)``; it also adds
``cosim robustness-compare RUN...``, one table across several benchmark runs. Writes
``robustness.parquet`` (one row per condition), ``report.md`` (AP@0.5 / AP@0.7 per condition,
RCE per corruption, mRCE), ``faults.png``, ``corruptions.png`` and ``robustness.yaml`` (the
settings) to ``--out``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Annotated

import pyarrow.parquet as pq
import typer
import yaml
from rich.console import Console
from rich.table import Table

from cosim.cli.errors import print_error
from cosim.cli.options import RefineNeighbours, RefineSkipAbove, RefineSteps
from cosim.common.interrupts import EXIT_INTERRUPTED, graceful_stop
from cosim.common.progress import progress_bar

console = Console()


def _severities(text: str) -> tuple[int, ...]:
    """``--severities 2`` -> (2,); a value that is not a whole number is an error naming it."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise ValueError(f"--severities must be whole numbers like 1,2,3, got {text!r}") from err


def robustness_command(
    checkpoint: Annotated[Path, typer.Argument(help="Detector checkpoint (.pt).")],
    data: Annotated[Path, typer.Option(help="Test dataset folder (cosim dataset build).")] = (
        Path("data/test")
    ),
    out: Annotated[
        Path | None, typer.Option(help="Output folder [default: runs/robustness-<model name>]")
    ] = None,
    frames: Annotated[
        int | None, typer.Option(min=1, help="First N frames of each scenario/seed (default: all).")
    ] = None,
    conditions: Annotated[
        str, typer.Option(help="Comma-separated groups: sensor, comm (= pose, latency, loss).")
    ] = "sensor,comm",
    severities: Annotated[
        str, typer.Option(help="Comma-separated corruption severities to run (of 1, 2, 3).")
    ] = "1,2,3",
    parallel: Annotated[
        int, typer.Option(min=0, help="Conditions at once, one CPU each (0 = in-process).")
    ] = 2,
    executor: Annotated[str, typer.Option(help="ray or inprocess.")] = "ray",
    address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of corruptions, pose error, loss.")] = 0,
    threads: Annotated[int, typer.Option(min=1, help="torch threads per condition.")] = 1,
    corrupt: Annotated[
        str,
        typer.Option(help="Who carries a sensor corruption: all, ego or neighbours (RCP-Bench)."),
    ] = "all",
    refine_steps: RefineSteps = None,
    refine_skip_above: RefineSkipAbove = None,
    refine_neighbours: RefineNeighbours = None,
    device: Annotated[
        str,
        typer.Option(
            help="Models on auto (a GPU when the machine or Ray cluster has one), cpu or cuda."
        ),
    ] = "auto",
) -> None:
    """Evaluate a checkpoint clean and under every corruption x severity and channel fault."""
    from cosim.experiments.conditions import build_conditions
    from cosim.experiments.robustness_report import summarize, write_outputs
    from cosim.experiments.robustness_run import BenchmarkConfig, check_conditions, run_benchmark
    from models.checkpoint import read_checkpoint
    from models.dataset import DatasetFormatError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    mode = "inprocess" if parallel == 0 else executor
    try:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
        chosen = build_conditions(
            tuple(p.strip() for p in conditions.split(",") if p.strip()),
            _severities(severities),
        )
        from cosim.experiments.conditions import CORRUPT_TARGETS
        from models.device import DEVICE_CHOICES, resolve_device

        if corrupt not in CORRUPT_TARGETS:
            raise ValueError(
                f"--corrupt must be one of {', '.join(CORRUPT_TARGETS)}, got {corrupt!r}"
            )
        config = BenchmarkConfig(
            data=str(data),
            frames=frames,
            seed=seed,
            threads=threads,
            corrupt=corrupt,
            refine_steps=refine_steps,
            refine_skip_above=refine_skip_above,
            refine_neighbours=bool(refine_neighbours),
            device=device,
        )
        if device not in DEVICE_CHOICES:
            raise ValueError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, got {device!r}")
        if mode == "inprocess":
            resolve_device(device)  # fails here, naming the flag, on a machine without CUDA
        check_conditions(config, chosen)
        if mode not in ("ray", "inprocess"):
            raise ValueError(f"--executor must be ray or inprocess, got {executor!r}")
        name = str(read_checkpoint(checkpoint)["config"].get("name", checkpoint.stem))
    except (FileNotFoundError, ValueError, DatasetFormatError) as err:
        print_error(console, err)
        raise typer.Exit(2) from err
    folder = out or Path("runs") / f"robustness-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    settings = dict(
        dataclasses.asdict(config),
        checkpoint=str(checkpoint),
        executor=mode,
        parallel=parallel,
        conditions=[c.label for c in chosen],
    )
    (folder / "robustness.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    with graceful_stop() as stop:
        with progress_bar(console, transient=True) as progress:
            task = progress.add_task("robustness conditions", total=len(chosen))
            try:
                table = run_benchmark(
                    checkpoint,
                    config,
                    chosen,
                    mode,
                    max(parallel, 1),
                    address,
                    lambda done, _: progress.update(task, completed=done),
                    should_stop=stop,
                )
            except ValueError as err:  # e.g. --device cuda on a cluster without GPUs
                print_error(console, err)
                raise typer.Exit(2) from err
    interrupted = table.num_rows < len(chosen)
    (folder / "robustness_summary.json").write_text(
        json.dumps(
            {
                "interrupted": interrupted,
                "conditions": table.num_rows,
                "conditions_planned": len(chosen),
            },
            indent=2,
        )
    )
    if interrupted:  # keep the finished conditions; the report needs them all
        if table.num_rows:
            pq.write_table(table, folder / "robustness.parquet")
        console.print(
            f"interrupted ({stop.name or 'SIGINT'}): wrote the {table.num_rows} "
            f"finished condition(s) of {len(chosen)} to {folder}",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    written = write_outputs(table, folder, f"robustness of {name} on {data.name}")
    console.print(_summary_table(table.to_pylist()))
    summary = summarize(table)
    console.print(
        f"mRCE@0.5 severity 2: {summary['mrce_sev2']:.4f}; all: {summary['mrce_all']:.4f}"
    )
    console.print("wrote " + ", ".join(str(p) for p in written))


def _summary_table(rows: list[dict]) -> Table:
    table = Table(title="robustness")
    for name in ("condition", "AP@0.5", "AP@0.7", "RCE@0.5", "neighbours"):
        table.add_column(name, justify="left" if name == "condition" else "right")
    for r in rows:
        table.add_row(
            r["label"],
            f"{r['ap@0.5']:.4f}",
            f"{r['ap@0.7']:.4f}",
            f"{r['rce@0.5']:.4f}",
            f"{r['mean_neighbours']:.2f}",
        )
    return table


def compare_command(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Output folders of cosim robustness (each holds robustness.parquet)."),
    ],
    out: Annotated[Path | None, typer.Option(help="Also write the markdown here.")] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Also draw AP@0.5 of every run against each fault level (PNG)."),
    ] = None,
) -> None:
    """One table across benchmark runs: rows are the runs (named by folder, or by the path as
    given where two folders share a name), columns clean AP@0.5, AP@0.5 per corruption at
    severity 2, mRCE, then the communication faults."""

    from cosim.experiments.robustness_report import compare_report, plot_compare

    names = [folder.name for folder in runs]
    tables = {}
    for folder, name in zip(runs, names, strict=True):
        path = folder / "robustness.parquet"
        if not path.is_file():
            print_error(console, f"no robustness.parquet in {folder}")
            raise typer.Exit(2)
        tables[name if names.count(name) == 1 else str(folder)] = pq.read_table(path)
    text = compare_report(tables)
    typer.echo(text, nl=False)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    if plot is not None:
        typer.echo(f"wrote {plot_compare(tables, plot)}")


def register(app: typer.Typer) -> None:
    """Add ``robustness`` and ``robustness-compare`` to the ``cosim`` app."""
    app.command("robustness")(robustness_command)
    app.command("robustness-compare")(compare_command)


if __name__ == "__main__":  # python -m cosim.cli.robustness CHECKPOINT ... (before registration)
    typer.run(robustness_command)
