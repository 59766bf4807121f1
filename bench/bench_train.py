"""Training throughput on 1 and N Ray Train workers, and the gradient all-reduce per step.

Prints one JSON object: ``samples_per_s`` per worker count (the second epoch of a short run,
so start-up is not counted; the same global batch, split over the workers, and the machine's
cores split between them: ``threads_per_worker``), ``speedup`` over one worker, and
``allreduce_ms``: one all-reduce of every gradient of the model (``gradient_mb``) between the
workers of a Ray Train group (gloo on the CPU, NCCL on CUDA), the communication DDP adds to
each step (it overlaps part of it with the backward pass). One worker is the plain
``cosim train`` loop, no Ray.

Run: ``python bench/bench_train.py [--model cpu_max] [--data DIR] [--steps 6]
[--batch-size 4] [--workers 1,2] [--device auto|cpu|cuda]``. Without ``--data`` it builds 6
frames of the ``intersection`` scenario (seed 0) in a temporary folder first.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from rich.console import Console

from cosim.common.ray_setup import init_local
from cosim.training.dataset_build import build_dataset
from cosim.training.train import train
from cosim.training.train_config import TrainConfig
from cosim.training.train_ray import train_distributed
from models.detector import CooperativeDetector
from models.detector_config import load_detector_config
from models.device import resolve_device

ALLREDUCE_REPEATS = 20


def bench_config(
    model: str, data: Path, out: Path, steps: int, batch: int, threads: int
) -> TrainConfig:
    """Two short epochs of ``steps`` steps at per-worker batch ``batch``, no validation."""
    return TrainConfig.from_dict(
        {
            "model": model,
            "data": {"train": str(data), "egos": "all"},
            "optimizer": {"name": "adamw", "lr": 0.001},
            "schedule": {"name": "onecycle"},
            "epochs": 2,
            "steps_per_epoch": steps,
            "batch_size": batch,
            "seed": 0,
            "threads": threads,
            "out": str(out),
        },
        "bench_train",
    )


def second_epoch_rate(run: Path) -> float:
    with (run / "epochs.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return float(rows[-1]["samples_per_s"])


def _time_allreduce(settings: dict[str, Any]) -> None:
    """Ray Train worker: all-reduce a gradient-sized buffer, report the mean milliseconds."""
    import torch.distributed as dist
    from ray.train.torch import get_device

    device = get_device() if settings["device"] == "cuda" else torch.device("cpu")
    numel = settings["numel"]
    buffer = torch.ones(numel, device=device)
    for _ in range(3):
        dist.all_reduce(buffer)
    dist.barrier()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(ALLREDUCE_REPEATS):
        dist.all_reduce(buffer)
    if device.type == "cuda":
        torch.cuda.synchronize()
    milliseconds = (time.perf_counter() - start) / ALLREDUCE_REPEATS * 1e3
    # Ray Train's result keeps only the metrics reported with a checkpoint: rank 0 writes a file.
    if ray.train.get_context().get_world_rank() == 0:
        Path(settings["out"]).write_text(json.dumps(milliseconds))


def allreduce_ms(workers: int, numel: int, device: str, storage: Path) -> float:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = device == "cuda"
    storage.mkdir(parents=True, exist_ok=True)
    out = storage / "allreduce_ms.json"
    trainer = TorchTrainer(
        _time_allreduce,
        train_loop_config={"numel": numel, "device": device, "out": str(out)},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name="allreduce", storage_path=str(storage)),
    )
    trainer.fit()
    return float(json.loads(out.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cpu_max", help="detector preset or YAML")
    parser.add_argument("--data", type=Path, help="dataset folder (default: build 6 frames)")
    parser.add_argument("--steps", type=int, default=6, help="steps per epoch (2 epochs)")
    parser.add_argument("--batch-size", type=int, default=4, help="global batch per step")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    if any(args.batch_size % w for w in counts):
        parser.error(f"--batch-size {args.batch_size} must split evenly over --workers")
    device = resolve_device(args.device).type
    cores = os.cpu_count() or 1
    scratch = Path(tempfile.mkdtemp(prefix="bench-train-", dir="/tmp"))
    try:
        data = args.data
        if data is None:
            data = scratch / "data"
            build_dataset("intersection", 6, data, seeds=[0])
        quiet = Console(stderr=True, quiet=True)  # stdout carries the JSON only
        rates: dict[str, float] = {}
        threads: dict[str, int] = {}
        init_local(max(counts), _temp_dir=str(scratch / "ray"))
        try:
            for w in counts:
                threads[str(w)] = max(1, cores // w)
                config = bench_config(
                    args.model,
                    data,
                    scratch / f"run{w}",
                    args.steps,
                    args.batch_size // w,
                    threads[str(w)],
                )
                if w == 1:
                    train(config, device=device, console=quiet)
                else:
                    train_distributed(
                        config,
                        w,
                        device=device,
                        storage=scratch / "ray_store",
                        max_failures=0,
                        console=quiet,
                    )
                rates[str(w)] = second_epoch_rate(scratch / f"run{w}")
            model = CooperativeDetector(load_detector_config(args.model))
            numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
            reduce_ms = allreduce_ms(max(counts), numel, device, scratch / "ray_store")
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        json.dumps(
            {
                "machine": platform.machine(),
                "cores": cores,
                "device": device,
                "torch": torch.__version__,
                "model": args.model,
                "global_batch": args.batch_size,
                "steps_timed": args.steps,
                "threads_per_worker": threads,
                "samples_per_s": {w: round(r, 3) for w, r in rates.items()},
                "speedup": {w: round(r / rates[str(counts[0])], 3) for w, r in rates.items()},
                "allreduce_workers": max(counts),
                "gradient_mb": round(numel * 4 / 2**20, 2),
                "allreduce_ms": round(reduce_ms, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
