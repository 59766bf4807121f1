"""Turn a training run's best.pt into a shipped checkpoint that carries its own provenance.

The shipped file keeps the run's weights and the ``extra`` that ``cosim train`` recorded (its
config, command, data commands, teacher) and adds the strategy name, what it derives from, the
training time and a ``cosim eval`` report on each test split, so
``models.checkpoint.read_checkpoint(path)["extra"]`` answers how it was made and how it scores.

    python scripts/ship_checkpoint.py runs/sizes_none models/checkpoints/none.pt \
        --strategy none --test data/test --test data/test_highway
    python scripts/ship_checkpoint.py runs/sizes_none models/checkpoints/late.pt \
        --strategy late --as-model cpu_late_sizes --test data/test --test data/test_highway

RUN may also be a checkpoint file (e.g. a committed ``models/checkpoints/base/*.pt`` whose run
folder is gone): its weights ship as they are, with the timings its ``extra`` holds, if any.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console

from cosim.training.evaluate import evaluate_report
from models.checkpoint import load_checkpoint, save_checkpoint
from models.detector import build_detector

console = Console()


def run_timings(run: Path) -> dict[str, Any]:
    """Seconds and best epoch from the run's summary.json (written when training ends); none
    for a checkpoint file (its ``extra`` keeps what it recorded)."""
    if run.is_file():
        return {}
    summary = run / "summary.json"
    if not summary.is_file():
        raise typer.BadParameter(f"{summary} missing: the run has not finished")
    data = json.loads(summary.read_text())
    return {"train_seconds": data["seconds"], "best_epoch": data["best_epoch"]}


def main(
    run: Annotated[
        Path,
        typer.Argument(
            help="Training run folder (holds best.pt, summary.json), or a checkpoint file."
        ),
    ],
    out: Annotated[Path, typer.Argument(help="Shipped checkpoint to write.")],
    strategy: Annotated[str, typer.Option(help="Fusion strategy name recorded in extra.")],
    test: Annotated[list[Path], typer.Option(help="Test split to evaluate on; repeat.")],
    as_model: Annotated[
        str | None,
        typer.Option(
            help="Ship the weights under this detector preset instead (same weights, e.g. late "
            "fusion of a no-fusion run)."
        ),
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch threads for the evaluation.")] = 2,
) -> None:
    """Copy RUN/best.pt (or the checkpoint RUN) to OUT with provenance and test reports in its
    ``extra``."""
    torch.set_num_threads(threads)
    source = run if run.is_file() else run / "best.pt"
    timings = run_timings(run)  # refuses an unfinished run before anything is evaluated
    model, config, payload = load_checkpoint(source)
    if as_model is not None:
        rehomed = build_detector(as_model)
        rehomed.load_state_dict(model.state_dict(), strict=True)
        model, config = rehomed.eval(), rehomed.config
    extra = dict(payload["extra"])
    extra.update(
        timings,
        strategy=strategy,
        derived_from=f"{source}" + (f" under {as_model}" if as_model else ""),
    )
    reports = {}
    for split in test:
        console.print(f"evaluating {out.name} on {split}")
        report = evaluate_report(model, split, console=console)
        report.update(checkpoint=str(out), model=config.name, epoch=payload["epoch"])
        reports[split.name] = report
        ap, ap_global = report["ap"], report["ap_global_sort"]
        console.print(
            f"  AP@0.3/0.5/0.7 {ap['0.3']:.3f} / {ap['0.5']:.3f} / {ap['0.7']:.3f}"
            f"  (global sort {ap_global['0.5']:.3f} @0.5)"
        )
    extra["test_reports"] = reports
    extra["eval_commands"] = [f"cosim eval {out} --data {split}" for split in test]
    save_checkpoint(out, model, config, payload["metrics"], None, payload["epoch"], extra)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)
