"""Train a cooperative detector from a :class:`~cosim.training.train_config.TrainConfig`.

A run folder (``config.out``) holds ``config.yaml`` (the config as read), ``steps.csv`` (one row
per optimiser step: losses, positives, learning rate), ``epochs.csv`` (one row per epoch: mean
loss, samples/s, validation APs), ``last.pt`` (every epoch: weights, config, metrics, optimizer
and scheduler state, the epoch) and ``best.pt`` (the epoch of highest validation AP@0.5).
``train(config, resume=True)`` continues from ``last.pt``: the epoch count, the schedule, the
shuffles and augmentation draws (seeded by ``(seed, epoch)``) carry on as if never stopped.

:func:`run_training` is the loop itself, for one process (:func:`train`) or for each worker of a
Ray Train run (:mod:`cosim.training.train_ray`): a :class:`~cosim.training.replica.Replica` says
which worker it
is, and only worker 0 writes the run folder. The parts it runs: the optimiser and schedule
(:mod:`cosim.training.train_schedule`), one step and one epoch (:mod:`cosim.training.train_step`),
the CSV logs
(:mod:`cosim.training.train_log`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel

from cosim.training.dataset_build import source_lidars
from cosim.training.evaluate import EvalOptions, evaluate_report
from cosim.training.replica import Replica
from cosim.training.train_config import TrainConfig
from cosim.training.train_log import EPOCH_FIELDS, append_rows, truncate_log
from cosim.training.train_schedule import build_optimizer, lr_factor, steps_per_epoch
from cosim.training.train_step import TrainStep, train_epoch
from models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from models.dataset import CooperativeDataset, read_manifest
from models.detector import CooperativeDetector
from models.device import resolve_device
from models.distill import check_teacher, file_sha256
from models.global_norm import use_global_batch_norm
from models.pairs import PairMaker


@dataclass
class TrainResult:
    """What a finished run reports: its folder, per-epoch rows and the best validation AP@0.5."""

    run_dir: Path
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_ap50: float = -1.0
    best_epoch: int = 0
    interrupted: bool = False


def data_commands(config: TrainConfig) -> dict[str, str]:
    """The ``cosim dataset build`` command recorded in each data folder's manifest."""
    out = {"train": read_manifest(config.data.train).get("command", "")}
    if config.data.val is not None:
        out["val"] = read_manifest(config.data.val).get("command", "")
    return out


def warm_start(model: CooperativeDetector, checkpoint: str, skip: tuple[str, ...] = ()) -> None:
    """Load ``checkpoint``'s weights into ``model``, except parameters whose names start with
    one of ``skip`` (they keep their fresh initialisation: a new head on a trained feature
    net). Every other parameter must exist on both sides with the same shape."""
    start_model, _, _ = load_checkpoint(checkpoint)
    state = {k: v for k, v in start_model.state_dict().items() if not k.startswith(skip)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape mismatch (e.g. another head: add it to init_skip)
        raise ValueError(f"init_from {checkpoint}: {err}") from err
    missing = [k for k in missing if not k.startswith(skip)]
    if missing or unexpected:
        raise ValueError(
            f"init_from {checkpoint}: parameters missing {missing}, unexpected {unexpected}"
        )


def make_dataset(config: TrainConfig, model: CooperativeDetector) -> CooperativeDataset:
    """The training samples (``data`` section; neighbours default to the model's), as Diff-KD
    pairs when the config has a ``corrupt`` section."""
    dataset = CooperativeDataset(
        config.data.train,
        model.grid,
        egos=config.data.egos,  # type: ignore[arg-type]
        max_neighbours=config.max_neighbours,
        comm_range=config.comm_range,
        min_points=config.data.min_points,
        augment=None if config.augment is None else config.augment.build(),
        seed=config.seed,
    )
    if config.corrupt is not None:  # the scenarios' LiDARs come from the store's manifest
        dataset.pairs = PairMaker(config.corrupt, source_lidars(dataset.store))
    return dataset


def freeze_except(model: CooperativeDetector, prefixes: tuple[str, ...] | None) -> None:
    """Only parameters whose names start with one of ``prefixes`` train (None: all); a prefix
    that names no parameter is an error (a typo would silently train nothing)."""
    if prefixes is None:
        return
    names = [name for name, _ in model.named_parameters()]
    unused = [p for p in prefixes if not any(n.startswith(p) for n in names)]
    if unused:
        raise ValueError(f"train_only: {unused} name no parameter of model {model.config.name!r}")
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefixes))


def train_mode(model: CooperativeDetector, prefixes: tuple[str, ...] | None) -> None:
    """``model.train()``, except that BatchNorm layers outside ``prefixes`` keep their
    statistics (eval mode): a frozen part must compute exactly what it did before."""
    model.train()
    if prefixes is None:
        return
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not (
            name + "."
        ).startswith(prefixes):
            module.eval()


def load_teacher(config: TrainConfig, model: CooperativeDetector) -> CooperativeDetector | None:
    """The frozen Diff-KD teacher, checked against the student; None without one."""
    if config.distill is None or config.distill.teacher is None:
        if model.refiner is not None and config.distill is not None:
            raise ValueError(f"{config.source}: distill.teacher is needed to train a refiner")
        return None
    teacher, _, _ = load_checkpoint(config.distill.teacher, map_location=model.device)
    check_teacher(teacher, model)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher.eval()


def train(
    config: TrainConfig,
    resume: bool = False,
    stop_after: int | None = None,
    console: Console | None = None,
    command: str = "",
    should_stop: Callable[[], bool] | None = None,
    device: str = "auto",
) -> TrainResult:
    """Train per ``config`` in this process; with ``resume`` continue from ``<out>/last.pt``.

    ``stop_after``: end after that epoch (the schedule still spans ``config.epochs``), as an
    interrupted run would. ``command`` is stored in the checkpoints' ``extra``.
    ``should_stop`` (see :mod:`cosim.common.interrupts`) is polled after each epoch's checkpoint:
    the
    run then ends there with ``interrupted`` in the result and ``summary.json``; a
    ``KeyboardInterrupt`` abandons the epoch under way (``last.pt`` keeps the previous one).
    ``device``: ``auto``, ``cpu`` or ``cuda[:N]`` (:func:`models.device.resolve_device`).
    """
    replica = Replica(device=resolve_device(device))
    resume_from = Path(config.out) / "last.pt" if resume else None
    return run_training(config, replica, resume_from, stop_after, console, command, should_stop)


EpochReport = Callable[[dict[str, Any], Path | None], None]


def run_training(
    config: TrainConfig,
    replica: Replica,
    resume_from: Path | None = None,
    stop_after: int | None = None,
    console: Console | None = None,
    command: str = "",
    should_stop: Callable[[], bool] | None = None,
    report: EpochReport | None = None,
    before_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """The training loop of one worker (see :func:`train` for the arguments they share).

    ``resume_from``: a ``last.pt`` to continue from. With ``replica.world > 1`` the model is
    wrapped in DistributedDataParallel with BatchNorm over the global batch
    (:mod:`models.global_norm`) and each step reads this worker's share of the shuffled
    samples (:meth:`Replica.shard`); only worker 0 writes the run folder and evaluates.
    ``report(metrics, last_pt)`` is called by every worker after each epoch (``last_pt`` is
    the epoch's checkpoint on worker 0, None elsewhere); ``before_step(epoch, step)`` before
    each optimiser step.
    """
    console = console or Console(quiet=not replica.chief)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    run = Path(config.out)
    if replica.chief:
        run.mkdir(parents=True, exist_ok=True)
    model = CooperativeDetector(config.model)
    if config.init_from and resume_from is None:
        warm_start(model, config.init_from, config.init_skip)
    if replica.world > 1:  # before the optimizer is built: it holds the new norms' parameters
        use_global_batch_norm(model)
    freeze_except(model, config.train_only)
    model.to(replica.device)
    teacher = load_teacher(config, model)
    train_mode(model, config.train_only)
    dataset = make_dataset(config, model)
    per_epoch = steps_per_epoch(config, len(dataset), replica.world)
    total_steps = per_epoch * config.epochs
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(config.schedule, s, total_steps)
    )
    result = TrainResult(run)
    first_epoch, step, elapsed = 1, 0, 0.0
    if resume_from is not None:
        payload = read_checkpoint(resume_from)
        model.load_state_dict(payload["state_dict"])
        state = payload["optimizer_state"]
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        first_epoch, step = payload["epoch"] + 1, int(state["step"])
        result.best_ap50, result.best_epoch = state["best_ap50"], state["best_epoch"]
        elapsed = float(state["elapsed_s"])
        if replica.chief:
            truncate_log(run / "steps.csv", "global_step", step)
            truncate_log(run / "epochs.csv", "epoch", payload["epoch"])
        console.print(f"resuming {run} at epoch {first_epoch} (step {step})")
    elif replica.chief:
        for name in ("steps.csv", "epochs.csv"):
            (run / name).unlink(missing_ok=True)
    step_fn = TrainStep(model, config, teacher, replica)
    if replica.world > 1:
        step_fn = DistributedDataParallel(
            step_fn, find_unused_parameters=True, broadcast_buffers=False
        )
    extra = {
        "train_config": config.raw,
        "train_config_file": config.source,
        "train_command": command,
        "data_commands": data_commands(config),
    }
    if teacher is not None and config.distill is not None and config.distill.teacher:
        extra["teacher"] = {
            "path": config.distill.teacher,
            "sha256": file_sha256(config.distill.teacher),
            "name": teacher.config.name,
        }
    if replica.chief:
        (run / "config.yaml").write_text(yaml.safe_dump(config.raw, sort_keys=False))
    last_epoch = config.epochs if stop_after is None else min(stop_after, config.epochs)
    try:
        for epoch in range(first_epoch, last_epoch + 1):
            row, step = train_epoch(
                step_fn,
                dataset,
                optimizer,
                scheduler,
                config,
                epoch,
                step,
                console,
                replica,
                before_step,
            )
            elapsed += row["seconds"]
            if (
                replica.chief
                and config.data.val is not None
                and (epoch % config.eval_every == 0 or epoch == config.epochs)
            ):
                report_ = evaluate_report(
                    model,
                    config.data.val,
                    EvalOptions(frames=config.data.val_frames),
                    console=console,
                )
                train_mode(model, config.train_only)
                aps = {k: math.nan if v is None else v for k, v in report_["ap"].items()}
                row.update(ap30=aps["0.3"], ap50=aps["0.5"], ap70=aps["0.7"])
            result.epochs.append(row)
            aps = f"{row['ap30']:.3f} / {row['ap50']:.3f} / {row['ap70']:.3f}"
            console.print(
                f"epoch {epoch}/{config.epochs}: loss {row['loss']:.4f}, "
                f"{row['samples_per_s']:.2f} samples/s, val AP@0.3/0.5/0.7 {aps}"
            )
            metrics = {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
            metrics["train_seconds_total"] = elapsed
            ap50 = row.get("ap50", math.nan)
            improved = not math.isnan(ap50) and ap50 > result.best_ap50
            if improved or (config.data.val is None and epoch == last_epoch):
                result.best_ap50, result.best_epoch = (ap50 if improved else -1.0), epoch
                if replica.chief:
                    save_checkpoint(
                        run / "best.pt", model, config.model, metrics, None, epoch, extra
                    )
            last_pt = None
            if replica.chief:
                append_rows(run / "epochs.csv", EPOCH_FIELDS, [row])
                state = {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "best_ap50": result.best_ap50,
                    "best_epoch": result.best_epoch,
                    "elapsed_s": elapsed,
                }
                last_pt = save_checkpoint(
                    run / "last.pt", model, config.model, metrics, state, epoch, extra
                )
            if report is not None:
                report(
                    {**metrics, "best_ap50": result.best_ap50, "best_epoch": result.best_epoch},
                    last_pt,
                )
            if should_stop is not None and should_stop():
                result.interrupted = True  # last.pt holds this epoch: --resume goes on
                break
    except KeyboardInterrupt:  # a second signal: the epoch under way is abandoned
        result.interrupted = True
    if replica.chief:
        (run / "summary.json").write_text(
            json.dumps(
                {
                    "best_ap50": result.best_ap50,
                    "best_epoch": result.best_epoch,
                    "seconds": elapsed,
                    "epochs_done": len(result.epochs),
                    "interrupted": result.interrupted,
                    "workers": replica.world,
                },
                indent=2,
            )
        )
    return result
