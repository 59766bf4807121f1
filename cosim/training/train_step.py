"""One training step's loss (head loss, or the Diff-KD loss with a teacher) as a module DDP can
wrap, and one epoch of steps over this worker's share of a seeded shuffle."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from cosim.common.progress import progress_bar
from cosim.training.replica import Replica
from cosim.training.train_config import TrainConfig
from cosim.training.train_log import LOG_EVERY, STEP_FIELDS, append_rows
from cosim.training.train_schedule import steps_per_epoch
from models.dataset import CooperativeDataset
from models.detector import CooperativeDetector
from models.distill import DistillWeights, TrustTarget, distill_loss, teacher_maps
from models.head import Normaliser


@dataclass
class StepLoss:
    """One step's loss to backpropagate, its named parts for steps.csv, and the positives."""

    total: torch.Tensor
    parts: dict[str, float]
    num_positive: int


def step_loss(
    model: CooperativeDetector,
    batch: list[Any],
    config: TrainConfig,
    teacher: CooperativeDetector | None,
    normaliser_of: Normaliser | None = None,
) -> StepLoss:
    """The head loss, or with a ``corrupt``/``distill`` section the Diff-KD loss;
    ``normaliser_of`` divides the detection terms (:meth:`Replica.normaliser`)."""
    if config.corrupt is None and config.distill is None:
        loss = model.loss(batch, model(batch), normaliser_of)
        parts = {"cls": loss.cls, "reg": loss.reg, "direction": loss.direction}
        return StepLoss(
            loss.total, {k: float(v.detach()) for k, v in parts.items()}, loss.num_positive
        )
    distill = config.distill
    maps = None  # a teacher is only loaded with a distill section (train.load_teacher)
    if teacher is not None and distill is not None:
        maps = teacher_maps(teacher, batch, model.fuse_at, distill.teacher_input)
    loss = distill_loss(
        model,
        batch,
        maps,
        distill.weights if distill else DistillWeights(),
        None if distill is None else distill.refine_steps,
        normaliser_of,
        "ego_view" if distill is None else distill.region,
        TrustTarget()
        if distill is None
        else TrustTarget(distill.reliability_target, distill.harm_temperature),
    )
    return StepLoss(loss.total, loss.row(), loss.num_positive)


class TrainStep(torch.nn.Module):
    """One step's loss as a module's forward, so DistributedDataParallel sees the whole
    Diff-KD step (student forward, teacher maps, distillation terms) as one forward. The
    frozen teacher is held outside the module tree: DDP neither syncs nor wraps it."""

    def __init__(
        self,
        model: CooperativeDetector,
        config: TrainConfig,
        teacher: CooperativeDetector | None,
        replica: Replica,
    ) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.frozen = (teacher,)
        self.replica = replica

    def forward(self, batch: list[Any]) -> StepLoss:
        return step_loss(self.model, batch, self.config, self.frozen[0], self.replica.normaliser)


def train_epoch(
    step_fn: torch.nn.Module,
    dataset: CooperativeDataset,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    epoch: int,
    step: int,
    console: Console,
    replica: Replica,
    before_step: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], int]:
    """One pass over a seeded shuffle of the samples (this worker's share of it); returns the
    epoch row (losses averaged over the workers, samples counted over all) and the step."""
    torch.manual_seed(config.seed * 100_003 + epoch + 1_000_003 * replica.rank)
    dataset.set_epoch(epoch)
    order = np.random.default_rng([config.seed, epoch]).permutation(len(dataset))
    mine = replica.shard(order)
    n_steps = steps_per_epoch(config, len(dataset), replica.world)
    parameters = [p for p in step_fn.parameters() if p.requires_grad]
    rows, losses, samples_seen = [], [], 0
    start = time.perf_counter()
    with progress_bar(console, disable=not replica.chief) as bar:
        task = bar.add_task(f"epoch {epoch}/{config.epochs}", total=n_steps)
        for k in range(n_steps):
            if before_step is not None:
                before_step(epoch, k + 1)
            picks = mine[k * config.batch_size : (k + 1) * config.batch_size]
            batch = [dataset[int(i)] for i in picks]
            loss = step_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            step += 1
            samples_seen += len(batch) * replica.world
            names = list(loss.parts)
            logged = replica.mean(
                torch.tensor(
                    [
                        float(loss.total.detach()),
                        float(loss.num_positive),
                        *(loss.parts[n] for n in names),
                    ],
                    dtype=torch.float64,
                )
            )
            value = float(logged[0])
            losses.append(value)
            rows.append(
                {
                    "epoch": epoch,
                    "step": k + 1,
                    "global_step": step,
                    "lr": lr,
                    "loss": value,
                    **{n: float(v) for n, v in zip(names, logged[2:], strict=True)},
                    "pos": float(logged[1]) * replica.world,
                    "max_severity": 0
                    if config.corrupt is None
                    else config.corrupt.max_severity(epoch),
                }
            )
            if len(rows) == LOG_EVERY or k == n_steps - 1:
                if replica.chief:
                    append_rows(Path(config.out) / "steps.csv", STEP_FIELDS, rows)
                rows = []
            recent = float(np.mean(losses[-20:]))
            label = f"epoch {epoch}/{config.epochs} loss {recent:.3f}"
            bar.update(task, advance=1, description=label)
    seconds = time.perf_counter() - start
    row = {
        "epoch": epoch,
        "loss": float(np.mean(losses)),
        "samples": samples_seen,
        "seconds": seconds,
        "samples_per_s": samples_seen / seconds,
        "ap30": math.nan,
        "ap50": math.nan,
        "ap70": math.nan,
    }
    return row, step
