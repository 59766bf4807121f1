"""``cosim train --workers N``: the same training loop on N Ray Train workers (DDP).

:class:`ray.train.torch.TorchTrainer` starts N workers (one CPU each, plus ``gpus_per_worker``
GPUs on CUDA) and a torch process group between them (gloo on the CPU, NCCL on CUDA); each runs
:func:`cosim.training.train.run_training` as rank r of N.

Data: each worker builds the same :class:`~models.dataset.CooperativeDataset` over the Parquet
shards and takes its share of every epoch's seeded shuffle
(:meth:`cosim.training.replica.Replica.shard`,
a DistributedSampler). Chosen over Ray Data's ``read_parquet`` because a training sample is
not a row: it is an ego and its neighbours cut from one frame's agent rows, with seeded
augmentation and Diff-KD corruption applied per sample, which the dataset already does (and
caches); a sampler keeps that one code path, the seeded order of one process, and so the
exact equivalence of W workers x batch B with one worker x batch W*B.

Batch: ``batch_size`` in the config is per worker; the global batch is ``workers x
batch_size`` (the learning rate is the config's, not scaled). BatchNorm statistics span the
global batch (:mod:`models.global_norm`) and the loss normaliser counts its positives, so one
optimiser step of W workers equals one of a single process with the global batch.

Checkpoints: after each epoch worker 0 writes ``last.pt`` (and ``best.pt``, ``steps.csv``,
``epochs.csv``) to the run folder exactly as a single process does, and reports it with
``ray.train.report(metrics, checkpoint=...)``; Ray persists it under ``storage`` (a local
folder, or a volume every node mounts). When a worker dies or raises, Ray Train restarts the
group (up to ``max_failures`` times) and every worker resumes from the latest reported
checkpoint. On a multi-node cluster the run folder and data paths must be the same on every
node (the compose file's shared ``data/`` and ``runs/`` volumes); relative paths are made
absolute against the driver's working directory.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from rich.console import Console

from cosim.common.ray_setup import DEFAULT_CONNECT_TIMEOUT_S, start_ray
from cosim.training.replica import Replica
from cosim.training.train import TrainResult, run_training
from cosim.training.train_config import TrainConfig
from models.device import check_gpu_fraction, cluster_device

DEFAULT_MAX_FAILURES = 3
CHECKPOINT_FILE = "last.pt"
# (rank, epoch, step) -> None, run by every worker before each optimiser step.
StepHook = Callable[[int, int, int], None]


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """The config with its data, output, warm-start and teacher paths absolute (against this
    directory), so workers in other processes and nodes read and write the same places."""

    def absolute(path: str | None) -> str | None:
        return None if path is None else str(Path(path).absolute())

    changes: dict[str, Any] = {
        "out": absolute(config.out),
        "data_train": absolute(config.data.train),
    }
    if config.data.val is not None:
        changes["data_val"] = absolute(config.data.val)
    if config.init_from is not None:
        changes["init_from"] = absolute(config.init_from)
    out = config.with_overrides(**changes)
    if config.distill is not None and config.distill.teacher is not None:
        distill = dataclasses.replace(config.distill, teacher=absolute(config.distill.teacher))
        out = dataclasses.replace(out, distill=distill)
    return out


def _report(metrics: dict[str, Any], last_pt: Path | None) -> None:
    """Every worker reports each epoch (a barrier); worker 0 attaches its ``last.pt``."""
    from ray.train import Checkpoint

    if last_pt is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy2(last_pt, Path(folder) / CHECKPOINT_FILE)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))


def _worker_loop(settings: dict[str, Any]) -> None:
    """One Ray Train worker: rank and device from Ray, resume from Ray's latest checkpoint
    (after a failure) or the run folder's ``last.pt`` (``--resume``), then the loop."""
    from ray.train.torch import get_device

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = get_device() if settings["device"] == "cuda" else torch.device("cpu")
    config: TrainConfig = settings["config"]
    resume_from = Path(config.out) / CHECKPOINT_FILE if settings["resume"] else None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restart after a failure: the last reported epoch
        local = Path(tempfile.mkdtemp(prefix="cosim-resume-"))
        with checkpoint.as_directory() as folder:
            shutil.copy2(Path(folder) / CHECKPOINT_FILE, local / CHECKPOINT_FILE)
        resume_from = local / CHECKPOINT_FILE
    hook = settings["before_step"]
    run_training(
        config,
        Replica(rank, world, device),
        resume_from,
        command=settings["command"],
        report=_report,
        before_step=None if hook is None else functools.partial(hook, rank),
    )


def _epochs(run: Path) -> list[dict[str, Any]]:
    """The rows of ``epochs.csv`` (numbers, as :func:`cosim.training.train.train` returns them) when
    this machine sees the run folder, else none."""
    path = run / "epochs.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [
            {k: int(v) if k in ("epoch", "samples") else float(v) for k, v in row.items()}
            for row in csv.DictReader(handle)
        ]


def train_distributed(
    config: TrainConfig,
    workers: int,
    *,
    device: str = "auto",
    gpus_per_worker: float = 1.0,
    address: str | None = None,
    storage: str | Path | None = None,
    resume: bool = False,
    max_failures: int = DEFAULT_MAX_FAILURES,
    command: str = "",
    console: Console | None = None,
    before_step: StepHook | None = None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> TrainResult:
    """Train ``config`` on ``workers`` Ray Train workers (module docstring).

    ``address``: join that cluster (``auto``, ``host:port``); None starts a local loopback
    instance with at least ``workers`` CPUs and stops it after. ``device``: ``auto`` (CUDA
    when the cluster has GPUs), ``cpu`` or ``cuda``; on CUDA each worker reserves
    ``gpus_per_worker``. ``storage``: where Ray keeps the reported checkpoints (default
    ``<out>/ray``). ``max_failures``: worker-group restarts from the latest checkpoint.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if workers < 2:
        raise ValueError(
            f"--workers {workers}: distributed training needs at least 2 (1 trains in this process)"
        )
    if max_failures < -1:
        raise ValueError(f"--max-failures {max_failures}: must be >= 0, or -1 for no limit")
    check_gpu_fraction(gpus_per_worker, "--gpus-per-worker")
    console = console or Console()
    config = absolute_paths(config)
    run = Path(config.out)
    storage_path = Path(storage).absolute() if storage is not None else run / "ray"
    started = not ray.is_initialized()
    if started:
        start_ray(
            address,
            num_cpus=None if address else max(workers, os.cpu_count() or 1),
            connect_timeout_s=connect_timeout_s,
        )
    try:
        chosen = cluster_device(device, ray.cluster_resources().get("GPU", 0.0))
        use_gpu = chosen == "cuda"
        resources: dict[str, float] = {"CPU": 1.0}
        if use_gpu:
            resources["GPU"] = gpus_per_worker
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={
                "config": config,
                "device": chosen,
                "resume": resume,
                "command": command,
                "before_step": before_step,
            },
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources
            ),
            run_config=RunConfig(
                name=run.name,
                storage_path=str(storage_path),
                failure_config=FailureConfig(max_failures=max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
            ),
        )
        console.print(
            f"training on {workers} Ray Train workers ({chosen}), checkpoints in "
            f"{storage_path / run.name}"
        )
        outcome = trainer.fit()
    finally:
        if started:
            ray.shutdown()
    metrics = outcome.metrics or {}
    return TrainResult(
        run, _epochs(run), float(metrics.get("best_ap50", -1.0)), int(metrics.get("best_epoch", 0))
    )
