"""The optimiser, its learning-rate schedule and the steps an epoch takes, from a TrainConfig."""

from __future__ import annotations

import math

import torch

from cosim.training.train_config import ScheduleConfig, TrainConfig


def lr_factor(schedule: ScheduleConfig, step: int, total: int) -> float:
    """Learning-rate multiplier at optimiser step ``step`` of ``total``.

    ``onecycle``: cosine warm-up from 0.1 to 1 over the warm-up steps, then cosine down to
    ``min_lr_ratio`` (OneCycleLR's shape, without momentum cycling). ``cosine``: linear warm-up
    from 0 then cosine down to ``min_lr_ratio``.
    """
    warm = int(round(schedule.warmup_fraction * total))
    low = schedule.min_lr_ratio
    if step < warm:
        t = (step + 1) / warm
        if schedule.name == "cosine":
            return t
        return 0.1 + 0.9 * 0.5 * (1.0 - math.cos(math.pi * t))
    t = min(1.0, (step - warm) / max(1, total - warm))
    return low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or Adam over every trainable parameter (``train_only`` freezes the rest)."""
    opt = config.optimizer
    cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
    trainable = [p for p in model.parameters() if p.requires_grad]
    return cls(trainable, lr=opt.lr, weight_decay=opt.weight_decay)


def steps_per_epoch(config: TrainConfig, num_samples: int, world: int = 1) -> int:
    """Optimiser steps in one epoch (full batches and the last partial one, capped);
    ``batch_size`` is per worker, each of ``world`` workers takes its share of the samples."""
    steps = math.ceil(math.ceil(num_samples / world) / config.batch_size)
    return steps if config.steps_per_epoch is None else min(steps, config.steps_per_epoch)
