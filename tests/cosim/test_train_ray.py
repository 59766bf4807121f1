"""Ray Train (``cosim train --workers N``): DDP equals one big batch, a failed worker resumes
from the last checkpoint, and the run folder is the single-process one."""

from __future__ import annotations

import csv
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import torch
import yaml
from typer.testing import CliRunner

from cosim.cli.app import app
from cosim.common.ray_setup import init_local
from cosim.training.replica import Replica
from cosim.training.train import train
from cosim.training.train_config import TrainConfig
from cosim.training.train_ray import train_distributed
from models.checkpoint import read_checkpoint
from models.detector import CooperativeDetector
from tests.cosim.test_train import config_dict


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A private loopback Ray instance (own temp dir, so no one else's ``ray.init`` joins it)."""
    temp = tempfile.mkdtemp(prefix="r15t-", dir="/tmp")
    init_local(3, _temp_dir=temp)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _config(data: Path, out: Path, batch_size: int, **changes: object) -> TrainConfig:
    raw = config_dict(data, out, batch_size=batch_size, **changes)
    raw["data"] = {"train": str(data), "egos": "all"}  # no validation: only the step counts
    return TrainConfig.from_dict(raw, "test config")


def test_replica_shard_covers_the_global_batch() -> None:
    order = torch.randperm(11).numpy()
    shards = [Replica(r, 2).shard(order) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 6  # padded by wrapping, as DistributedSampler
    first_step = sorted([*shards[0][:2], *shards[1][:2]])
    assert first_step == sorted(order[:4])
    assert (Replica(0, 1).shard(order) == order).all()


def test_two_workers_batch_two_take_the_single_process_batch_four_step(
    tiny_data: Path, tmp_path: Path, local_ray: None
) -> None:
    one = _config(tiny_data, tmp_path / "one", 4, epochs=1, steps_per_epoch=1)
    two = _config(tiny_data, tmp_path / "two", 2, epochs=1, steps_per_epoch=1)
    train(one, device="cpu")
    train_distributed(two, 2, device="cpu", max_failures=0)
    single = read_checkpoint(tmp_path / "one" / "last.pt")
    ddp = read_checkpoint(tmp_path / "two" / "last.pt")
    assert single["optimizer_state"]["step"] == ddp["optimizer_state"]["step"] == 1
    moved = 0
    for name, weight in single["state_dict"].items():
        torch.testing.assert_close(
            ddp["state_dict"][name], weight, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}"
        )
        moved += 1
    assert moved > 10
    # Both runs really stepped: the weights left their (shared, seed 3) initialisation.
    torch.manual_seed(3)
    init = CooperativeDetector(one.model).state_dict()
    changed = [
        k
        for k, v in init.items()
        if v.is_floating_point() and not torch.allclose(v, single["state_dict"][k])
    ]
    assert len(changed) > 10
    with (tmp_path / "two" / "steps.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    with (tmp_path / "one" / "steps.csv").open() as handle:
        single_rows = list(csv.DictReader(handle))
    assert float(rows[0]["loss"]) == pytest.approx(float(single_rows[0]["loss"]), rel=1e-4)
    assert float(rows[0]["pos"]) == float(single_rows[0]["pos"])


def test_a_worker_that_fails_once_resumes_from_the_last_checkpoint(
    tiny_data: Path, tmp_path: Path, local_ray: None
) -> None:
    marker = tmp_path / "failed_once"

    def fail_once(rank: int, epoch: int, step: int) -> None:
        if rank == 1 and epoch == 2 and step == 2 and not marker.exists():
            marker.write_text("raised")
            raise RuntimeError("injected worker failure")

    config = _config(tiny_data, tmp_path / "run", 2, epochs=3, steps_per_epoch=2)
    result = train_distributed(config, 2, device="cpu", max_failures=1, before_step=fail_once)
    assert marker.read_text() == "raised"
    run = tmp_path / "run"
    with (run / "epochs.csv").open() as handle:
        epochs = [int(r["epoch"]) for r in csv.DictReader(handle)]
    assert epochs == [1, 2, 3]  # epoch 2 ran again from epoch 1's checkpoint, once in the log
    with (run / "steps.csv").open() as handle:
        steps = [int(r["global_step"]) for r in csv.DictReader(handle)]
    assert steps == [1, 2, 3, 4, 5, 6]
    last = read_checkpoint(run / "last.pt")
    assert last["epoch"] == 3 and last["optimizer_state"]["step"] == 6
    assert (run / "best.pt").is_file() and [r["epoch"] for r in result.epochs] == [1, 2, 3]
    reported = sorted((run / "ray").glob("*/checkpoint_*"))
    assert reported, "Ray Train persisted no checkpoint under the storage path"


def test_cluster_flags_need_more_than_one_worker(tmp_path: Path, tiny_data: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_dict(tiny_data, tmp_path / "run")))
    result = CliRunner().invoke(app, ["train", str(path), "--address", "auto"])
    assert result.exit_code == 2
    assert "--address need --workers 2 or more" in " ".join(result.output.split())
    result = CliRunner().invoke(
        app, ["train", str(path), "--workers", "2", "--gpus-per-worker", "1.5"]
    )
    assert result.exit_code == 2 and "--gpus-per-worker 1.5" in result.output
    assert not (tmp_path / "run").exists()


def test_diffkd_teacher_student_training_runs_on_two_workers(
    tiny_data: Path, tmp_path: Path, local_ray: None
) -> None:
    from tests.cosim.test_diffkd_train import TEACHER, base_config, student_config

    teacher = tmp_path / "teacher"
    train(
        TrainConfig.from_dict(base_config(tiny_data, teacher, TEACHER, steps_per_epoch=1)),
        device="cpu",
    )
    config = student_config(
        tiny_data,
        tmp_path / "student",
        teacher / "last.pt",
        epochs=1,
        steps_per_epoch=2,
        batch_size=2,
    )
    train_distributed(config, 2, device="cpu", max_failures=0)
    last = read_checkpoint(tmp_path / "student" / "last.pt")
    assert last["extra"]["teacher"]["path"] == str((teacher / "last.pt").absolute())
    with (tmp_path / "student" / "steps.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and all(float(r["diffusion"]) > 0 for r in rows)
    assert all(float(r["feature"]) > 0 and float(r["max_severity"]) >= 1 for r in rows)
