"""``cosim train CONFIG`` and ``cosim eval CHECKPOINT --data DIR``.

Register in ``cosim/cli/app.py`` with ``app.command("train")(cli_train.train_command)`` and
``app.command("eval")(cli_train.eval_command)`` (top-level commands, not a sub-app).
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cosim.cli.errors import print_error
from cosim.cli.options import RefineSkipAbove, RefineSteps
from cosim.common.interrupts import EXIT_INTERRUPTED, graceful_stop
from cosim.training.evaluate import EvalOptions, evaluate_report
from cosim.training.train import train
from cosim.training.train_config import TrainConfig
from models.checkpoint import load_checkpoint
from models.dataset import DatasetFormatError
from models.detector_config import parse_message_range
from models.device import resolve_device

console = Console()


def _fail(message: str) -> typer.Exit:
    print_error(console, message)
    return typer.Exit(2)


def train_command(
    config: Annotated[Path, typer.Argument(help="Training config YAML (configs/train/*.yaml).")],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from <out>/last.pt (epoch, schedule).")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: config's out).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Override epochs.")] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="Override threads (torch CPU threads per process)."),
    ] = None,
    train_data: Annotated[
        Path | None, typer.Option("--train-data", help="Training dataset folder (data.train).")
    ] = None,
    val_data: Annotated[
        Path | None, typer.Option("--val-data", help="Validation dataset folder (data.val).")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Data-parallel Ray Train workers (DDP); batch_size is per worker. "
            "1: this process, no Ray.",
        ),
    ] = 1,
    gpus_per_worker: Annotated[
        float,
        typer.Option("--gpus-per-worker", help="GPUs each Ray Train worker reserves on CUDA."),
    ] = 1.0,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Ray cluster for --workers N: auto, host:6379 (default: a local instance).",
        ),
    ] = None,
    storage: Annotated[
        Path | None,
        typer.Option(
            "--storage",
            help="Where Ray Train keeps reported checkpoints: a folder every node "
            "sees (default: <out>/ray).",
        ),
    ] = None,
    max_failures: Annotated[
        int,
        typer.Option(
            "--max-failures",
            min=-1,
            help="Restarts from the latest checkpoint after a worker fails (-1: no limit).",
        ),
    ] = 3,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA when there is a GPU), cpu, cuda or cuda:N.")
    ] = "auto",
) -> None:
    """Train a detector; checkpoints last.pt / best.pt and step logs go to the run folder.

    With --resume, --epochs may extend a finished run: the schedule is stretched to the new
    total from the current step (the learning rate rises again if it had decayed). With
    --workers N the same loop runs on N Ray Train workers (cosim/training/train_ray.py).
    """
    try:
        cfg = TrainConfig.from_yaml(config)
    except (ValueError, FileNotFoundError) as error:
        raise _fail(str(error)) from error
    changes: dict[str, object] = {}
    if out is not None:
        changes["out"] = str(out)
    if epochs is not None:
        changes["epochs"] = epochs
    if threads is not None:
        changes["threads"] = threads
    if train_data is not None:
        changes["data_train"] = str(train_data)
    if val_data is not None:
        changes["data_val"] = str(val_data)
    cfg = cfg.with_overrides(**changes)
    if resume and not (Path(cfg.out) / "last.pt").is_file():
        raise _fail(f"--resume: no checkpoint {Path(cfg.out) / 'last.pt'}")
    command = "cosim train " + shlex.join(
        sys.argv[2:] if sys.argv[1:2] == ["train"] else [str(config)]
    )
    if workers == 1:
        given = [
            flag
            for flag, value in (("--address", address), ("--storage", storage))
            if value is not None
        ]
        if given:
            raise _fail(
                f"{' and '.join(given)} need --workers 2 or more (Ray Train); "
                "--workers 1 trains in this process"
            )
    stopped_by = ""
    try:
        if workers > 1:
            from cosim.training.train_ray import train_distributed

            result = train_distributed(
                cfg,
                workers,
                device=device,
                gpus_per_worker=gpus_per_worker,
                address=address,
                storage=storage,
                resume=resume,
                max_failures=max_failures,
                command=command,
                console=console,
            )
        else:
            with graceful_stop() as stop:
                result = train(
                    cfg,
                    resume=resume,
                    console=console,
                    command=command,
                    should_stop=stop,
                    device=device,
                )
            stopped_by = stop.name or "SIGINT"
    except (DatasetFormatError, FileNotFoundError, ValueError, ConnectionError) as error:
        raise _fail(str(error)) from error
    console.print(
        f"done: {result.run_dir}; best val AP@0.5 {result.best_ap50:.4f} "
        f"(epoch {result.best_epoch})"
    )
    if result.interrupted:
        console.print(
            f"interrupted ({stopped_by}) after {len(result.epochs)} complete "
            f"epoch(s); `cosim train --resume` goes on from last.pt",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED)


def eval_command(
    checkpoint: Annotated[Path, typer.Argument(help="Detector checkpoint (.pt).")],
    data: Annotated[Path, typer.Option("--data", help="Dataset folder to evaluate on.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write the JSON report here.")] = None,
    frames: Annotated[int | None, typer.Option(min=1, help="First N frames only.")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch threads.")] = 2,
    score_threshold: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Drop detections below this score (default: the config's)."
        ),
    ] = None,
    refine_steps: RefineSteps = None,
    refine_skip_above: RefineSkipAbove = None,
    vote_iou: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Box voting after NMS at this IoU, 0 off (default: the config's).",
        ),
    ] = None,
    device: Annotated[
        str,
        typer.Option(
            help="Run the model on auto (CUDA when torch sees a GPU), cpu, cuda or cuda:N."
        ),
    ] = "auto",
    message_range: Annotated[
        str | None,
        typer.Option(
            help="Window each neighbour encodes and sends, x_min,y_min,x_max,y_max in m "
            "(e.g. --message-range=-80,-80,80,80; default: the checkpoint's)."
        ),
    ] = None,
) -> None:
    """AP@0.3/0.5/0.7 of a checkpoint on a dataset (OPV2V protocol, fixed GT for all fusions),
    and recall of the boxes the ego saw, only its neighbours saw, or nobody saw well."""
    import torch

    torch.set_num_threads(threads)
    if not checkpoint.is_file():
        raise _fail(f"checkpoint not found: {checkpoint}")
    try:
        overrides = (
            None if message_range is None else {"message_range": parse_message_range(message_range)}
        )
        model, config, payload = load_checkpoint(
            checkpoint, map_location=resolve_device(device), overrides=overrides
        )
        if refine_skip_above is not None:
            model.set_refine_skip(refine_skip_above)
        if vote_iou is not None:
            model.anchor_head.config = replace(model.anchor_head.config, vote_iou=vote_iou)
        options = EvalOptions(
            frames=frames, score_threshold=score_threshold, refine_steps=refine_steps
        )
        report = evaluate_report(model, data, options, progress=not as_json, console=console)
    except (DatasetFormatError, ValueError) as error:
        raise _fail(str(error)) from error
    report.update(checkpoint=str(checkpoint), model=config.name, epoch=payload["epoch"])
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(report))
        return
    table = Table(title=f"{config.name} ({config.fusion}) on {data}: {report['frames']} frames")
    table.add_column("protocol")
    for t in report["ap"]:
        table.add_column(f"AP@{t}", justify="right")
    for label, key in (("OPV2V (per-frame sort)", "ap"), ("global sort", "ap_global_sort")):
        values = report[key].values()
        table.add_row(label, *("n/a" if v is None else f"{v:.4f}" for v in values))
    console.print(table)
    voting = f", box voting at IoU {report['vote_iou']:g}" if report["vote_iou"] else ""
    console.print(
        f"{report['detections']} detections at score >= {report['score_threshold']:g}"
        f"{voting} "
        f"({report['detections'] / max(report['frames'], 1):.1f} per frame), "
        f"{report['false_positives']['0.5']} false positives at IoU 0.5"
    )
    for key, title, first_column in (
        ("recall_by_visibility", "recall by who saw the box (>= 5 LiDAR points)", "seen by"),
        (
            "recall_by_size",
            "recall by size (length: car <= 4.9 m < van <= 6 m < truck/bus)",
            "size",
        ),
    ):
        console.print(recall_table(report[key], title, first_column))
    if out is not None:
        console.print(f"wrote {out}")


def recall_table(rows: dict[str, dict[str, Any]], title: str, first_column: str) -> Table:
    """One row per GT class: boxes, found and recall at IoU 0.5, recall at 0.7, and the median
    yaw / centre / length / width errors of the matches at 0.5."""

    def number(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    table = Table(title=title, caption="median errors of the matches at IoU 0.5")
    for column in (
        first_column,
        "boxes",
        "found@0.5",
        "R@0.5",
        "R@0.7",
        "yaw deg",
        "centre m",
        "length m",
        "width m",
    ):
        first = column == first_column
        table.add_column(column, justify="left" if first else "right", no_wrap=first)
    for name, row in rows.items():
        table.add_row(
            name.replace("_", " "),
            str(row["gt"]),
            str(row["found"]),
            number(row["recall"], ".3f"),
            number(row["recall@0.7"], ".3f"),
            number(row["median_yaw_error_deg"], ".1f"),
            number(row["median_centre_error_m"], ".2f"),
            number(row["median_length_error_m"], ".2f"),
            number(row["median_width_error_m"], ".2f"),
        )
    return table


def register(root: typer.Typer) -> None:
    """Add ``train`` and ``eval`` to the ``cosim`` app."""
    root.command("train")(train_command)
    root.command("eval")(eval_command)
