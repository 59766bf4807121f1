"""Run the robustness conditions: one Ray task per condition, or all in this process.

Each Ray task takes one CPU, gets the checkpoint *bytes* through the object store (``ray.put``
once, so workers on other nodes need not see the driver's disk) and the dataset path (which
they must see), and returns one table row. At most ``parallel`` tasks run at once; ``progress``
is called as each finishes (``ray.wait``). Both executors set torch to ``threads`` threads per
condition, so they give identical numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import torch

from cosim.common.ray_setup import connect, init_local
from cosim.experiments.conditions import Condition
from cosim.experiments.ray_tasks import run_bounded
from cosim.experiments.robustness import evaluate_condition, frame_spacing, latency_lag
from cosim.experiments.robustness_report import as_table, with_rce
from models.checkpoint import load_checkpoint
from models.dataset import FrameStore
from models.device import cluster_device, resolve_device

EXECUTORS = ("ray", "inprocess")


@dataclass(frozen=True)
class BenchmarkConfig:
    """What every condition shares: data, frames per source, seed, batch, torch threads, who
    carries a sensor corruption (``corrupt``: all, ego, neighbours) and the refiner's DDIM
    steps (None: the checkpoint's), adaptive-steps threshold and whether received maps are
    refined too; ``device`` the models run on (auto, cpu, cuda)."""

    data: str
    frames: int | None = None
    seed: int = 0
    batch_size: int = 4
    threads: int = 1
    corrupt: str = "all"
    refine_steps: int | None = None
    refine_skip_above: float | None = None
    refine_neighbours: bool = False
    device: str = "auto"


def check_conditions(config: BenchmarkConfig, conditions: Sequence[Condition]) -> None:
    """Fail before any work: the data must load and its spacing divide every latency."""
    store = FrameStore(config.data)
    if any(c.kind == "latency" and c.level > 0 for c in conditions):
        spacing = frame_spacing(store)
        for condition in conditions:
            latency_lag(condition, spacing)


def _evaluate(model: Any, config: BenchmarkConfig, condition: Condition) -> dict[str, Any]:
    if config.refine_skip_above is not None:
        model.set_refine_skip(config.refine_skip_above)
    before = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return evaluate_condition(
            model,
            config.data,
            condition,
            config.frames,
            config.seed,
            config.batch_size,
            target=config.corrupt,
            refine_steps=config.refine_steps,
            refine_neighbours=config.refine_neighbours,
        )
    finally:
        torch.set_num_threads(before)


@ray.remote(num_cpus=1)
def _condition_task(
    blob: bytes, config: dict[str, Any], condition: dict[str, Any]
) -> dict[str, Any]:
    from agents.steps import load_model_bytes

    settings = BenchmarkConfig(**config)
    return _evaluate(
        load_model_bytes(blob, settings.device), settings, Condition.from_dict(condition)
    )


def run_inprocess(
    checkpoint: str | Path,
    config: BenchmarkConfig,
    conditions: Sequence[Condition],
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[dict[str, Any]]:
    """Every condition in order, in this process, with one model (until ``should_stop``)."""
    model, _, _ = load_checkpoint(checkpoint, map_location=resolve_device(config.device))
    rows = []
    for done, condition in enumerate(conditions, 1):
        if should_stop is not None and should_stop():
            break
        rows.append(_evaluate(model, config, condition))
        if progress is not None:
            progress(done, len(conditions))
    return rows


def run_ray(
    checkpoint: str | Path,
    config: BenchmarkConfig,
    conditions: Sequence[Condition],
    parallel: int = 2,
    address: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[dict[str, Any]]:
    """Every condition as a Ray task, ``parallel`` at once; rows in condition order (only the
    finished ones when ``should_stop`` ends it early).

    Connects to ``address`` when given; else uses the current connection, or starts a local
    instance with ``parallel`` CPUs and shuts it down after. On a CUDA device (``cuda``, or
    ``auto`` on a cluster with GPUs) the ``parallel`` tasks share the cluster's GPUs equally.
    """
    started = not ray.is_initialized()
    if started and address is not None:
        connect(address)
    elif started:
        init_local(max(1, parallel))
    try:
        gpus = ray.cluster_resources().get("GPU", 0.0)
        device = cluster_device(config.device, gpus)
        task = _condition_task.options(
            num_gpus=min(1.0, gpus / max(1, parallel)) if device == "cuda" else 0
        )
        blob = ray.put(Path(checkpoint).read_bytes())
        settings = {k: getattr(config, k) for k in BenchmarkConfig.__dataclass_fields__}
        settings["device"] = device
        rows = run_bounded(
            lambda condition: task.remote(blob, settings, condition.to_dict()),
            conditions,
            parallel,
            progress,
            should_stop,
        )
        return [row for row in rows if row is not None]
    finally:
        if started:
            ray.shutdown()


def run_benchmark(
    checkpoint: str | Path,
    config: BenchmarkConfig,
    conditions: Sequence[Condition],
    executor: str = "ray",
    parallel: int = 2,
    address: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> pa.Table:
    """The result table (one row per condition, with RCE@0.5 against the clean row).

    ``should_stop`` (see :mod:`cosim.common.interrupts`) may end it early: the table then holds the
    finished conditions only (RCE NaN when the clean one is not among them)."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    check_conditions(config, conditions)
    if executor == "inprocess":
        rows = run_inprocess(checkpoint, config, conditions, progress, should_stop)
    else:
        rows = run_ray(checkpoint, config, conditions, parallel, address, progress, should_stop)
    if len(rows) < len(conditions) and sum(r["kind"] == "clean" for r in rows) != 1:
        return as_table([{**r, "rce@0.5": math.nan} for r in rows])
    return with_rce(rows)
