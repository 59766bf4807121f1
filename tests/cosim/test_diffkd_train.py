"""Diff-KD end to end on a tiny world: a clean early-fusion teacher, then a student (AGF + PKD
refiner) trained on corrupted/clean pairs; its loss falls, the teacher is recorded, and the
checkpoint runs without the teacher."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cosim.training.evaluate import eval_dataset
from cosim.training.train import train
from cosim.training.train_config import TrainConfig, TrainConfigError
from models.checkpoint import load_checkpoint, read_checkpoint
from models.detector import CooperativeDetector
from models.distill import file_sha256
from models.inference import predict
from tests.cosim.test_train import TINY_MODEL

TEACHER = {**TINY_MODEL, "name": "tiny_early", "fusion": "early"}
STUDENT = {
    **TINY_MODEL,
    "name": "tiny_diffkd",
    "fusion": "agf",
    "fuse_at": "encoder",
    "fusion_options": {"key_channels": 8, "hidden": 8},
    "refiner": {
        "latent_channels": 8,
        "hidden": 16,
        "blocks": 1,
        "ae_stride": 4,
        "patch": 1,
        "steps": 2,
    },
}


def base_config(data: Path, out: Path, model: dict[str, Any], **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "model": model,
        "data": {"train": str(data), "egos": "all"},
        "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0},
        "schedule": {"name": "cosine", "warmup_fraction": 0.0},
        "epochs": 1,
        "batch_size": 4,
        "steps_per_epoch": 3,
        "augment": "off",
        "seed": 1,
        "out": str(out),
    }
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def teacher(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    train(TrainConfig.from_dict(base_config(tiny_data, out, TEACHER)))
    return out / "last.pt"


def student_config(data: Path, out: Path, teacher: Path, **changes: Any) -> TrainConfig:
    corrupt = {
        "corruptions": ["beam_missing"],
        "clean_fraction": 0.0,
        "target": "all",
        "pose_error_levels": [0.0],
        "curriculum": [1, 2],
    }
    distill = {"teacher": str(teacher), "refine_steps": 1}
    settings = {
        "epochs": 6,
        "steps_per_epoch": 2,
        "corrupt": corrupt,
        "distill": distill,
        **changes,
    }
    return TrainConfig.from_dict(base_config(data, out, STUDENT, **settings))


def test_student_loss_falls_and_records_its_teacher(
    tiny_data: Path, teacher: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    result = train(student_config(tiny_data, tmp_path / "student", teacher))
    losses = [row["loss"] for row in result.epochs]
    assert losses[-1] < 0.85 * losses[0], losses  # the refiner starts at identity: less to fall
    with (tmp_path / "student" / "steps.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {"diffusion", "feature", "autoencoder", "adapter", "detection"} <= set(rows[0])
    assert float(rows[0]["diffusion"]) > 0 and float(rows[0]["feature"]) > 0
    # Progressive: the curriculum caps severity at 1 in epoch 1, 2 afterwards.
    assert [int(r["max_severity"]) for r in rows[::2]] == [1, 2, 2, 2, 2, 2]
    payload = read_checkpoint(tmp_path / "student" / "last.pt")
    recorded = payload["extra"]["teacher"]
    assert recorded == {"path": str(teacher), "sha256": file_sha256(teacher), "name": "tiny_early"}


def test_student_runs_without_its_teacher_and_k0_is_the_bare_model(
    tiny_data: Path, teacher: Path, tmp_path: Path
) -> None:
    own_teacher = tmp_path / "teacher.pt"
    own_teacher.write_bytes(teacher.read_bytes())
    train(student_config(tiny_data, tmp_path / "s", own_teacher, epochs=1, steps_per_epoch=1))
    recorded = read_checkpoint(tmp_path / "s" / "last.pt")["extra"]["teacher"]["path"]
    assert recorded == str(own_teacher)
    own_teacher.unlink()  # the teacher the checkpoint names is gone: inference never needs it
    model, config, _ = load_checkpoint(tmp_path / "s" / "last.pt")
    samples = [eval_dataset(model, tiny_data)[i] for i in range(2)]
    refined = predict(model, samples, score_threshold=0.0, refine_steps=2)
    off = predict(model, samples, score_threshold=0.0, refine_steps=0)
    bare = CooperativeDetector(dataclasses.replace(config, refiner=None))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("refiner.")}
    bare.load_state_dict(state, strict=True)
    want = predict(bare, samples, score_threshold=0.0)
    for got, expect in zip(off, want, strict=True):
        np.testing.assert_array_equal(got.boxes, expect.boxes)
        np.testing.assert_array_equal(got.scores, expect.scores)
    assert any(not np.array_equal(a.scores, b.scores) for a, b in zip(refined, off, strict=True))
    with pytest.raises(ValueError, match="steps"):
        predict(model, samples, refine_steps=11)


def test_distill_without_corruption_teaches_the_clean_sample(
    tiny_data: Path, teacher: Path, tmp_path: Path
) -> None:
    """No ``corrupt`` section: the student's own (clean) points are the teacher's view."""
    config = TrainConfig.from_dict(
        base_config(tiny_data, tmp_path / "plain", STUDENT, distill={"teacher": str(teacher)})
    )
    result = train(config)
    with (tmp_path / "plain" / "steps.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert all(float(r["feature"]) > 0 and int(r["max_severity"]) == 0 for r in rows)
    assert len(result.epochs) == 1


def test_distill_config_errors(tiny_data: Path, teacher: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainConfigError, match="corrupt.*unknown key.*'fog'"):
        TrainConfig.from_dict(base_config(tiny_data, tmp_path, STUDENT, corrupt={"fog": 1}))
    with pytest.raises(
        TrainConfigError, match=r"distill\.refine_steps: must be >= 0 and <= 10 or null, got 12"
    ):
        TrainConfig.from_dict(
            base_config(
                tiny_data, tmp_path, STUDENT, distill={"teacher": str(teacher), "refine_steps": 12}
            )
        )
    with pytest.raises(ValueError, match="distill.teacher is needed"):
        train(
            TrainConfig.from_dict(
                base_config(
                    tiny_data,
                    tmp_path / "x",
                    STUDENT,
                    distill={"refine_steps": 1},
                    corrupt={"clean_fraction": 0.5},
                )
            )
        )
    # A feature-fusion teacher must fuse where the student does (TINY_MODEL: the backbone).
    other = tmp_path / "max_teacher"
    train(TrainConfig.from_dict(base_config(tiny_data, other, TINY_MODEL)))
    with pytest.raises(ValueError, match="teacher must fuse every agent's clean data"):
        train(
            TrainConfig.from_dict(
                base_config(
                    tiny_data,
                    tmp_path / "y",
                    STUDENT,
                    distill={"teacher": str(other / "last.pt")},
                    corrupt={"clean_fraction": 0.5},
                )
            )
        )


def test_refiner_trains_alone_on_a_frozen_student(
    tiny_data: Path, teacher: Path, tmp_path: Path
) -> None:
    """``train_only: [refiner.]``: every other weight and BatchNorm statistic stays the
    student's, so refinement off reproduces the student exactly; the refiner itself learns."""
    train(student_config(tiny_data, tmp_path / "stage1", teacher, epochs=1, steps_per_epoch=1))
    start = tmp_path / "stage1" / "last.pt"
    config = student_config(
        tiny_data,
        tmp_path / "stage2",
        teacher,
        epochs=1,
        steps_per_epoch=2,
        init_from=str(start),
        train_only=["refiner."],
    )
    train(config)
    before = read_checkpoint(start)["state_dict"]
    after = read_checkpoint(tmp_path / "stage2" / "last.pt")["state_dict"]
    frozen = [k for k in before if not k.startswith("refiner.")]
    assert any("running_mean" in k for k in frozen)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(
        not torch.equal(before[k], after[k]) for k in before if k.startswith("refiner.denoiser")
    )
    # Clean intermediate fusion as the teacher: the frozen student itself on the clean sample.
    from models.distill import teacher_maps

    frozen_student, _, _ = load_checkpoint(start)
    samples = [eval_dataset(frozen_student, tiny_data)[i] for i in range(2)]
    corrupted = [dataclasses.replace(s, ego_points=s.ego_points[::3], clean=s) for s in samples]
    maps = teacher_maps(frozen_student.eval(), corrupted, "encoder")
    with torch.no_grad():
        fused = frozen_student.forward_pass(samples, refine_steps=0).fused.features
    torch.testing.assert_close(maps, fused, rtol=0, atol=0)
    # The ego alone (distill.teacher_input: ego): the student's own map of the clean points.
    ego_only = teacher_maps(frozen_student, corrupted, "encoder", "ego")
    with torch.no_grad():
        own, _ = frozen_student.encode_samples(samples)
    torch.testing.assert_close(ego_only, own, rtol=0, atol=0)
    assert not torch.equal(ego_only, maps)
    train(
        dataclasses.replace(
            config,
            out=str(tmp_path / "self_teacher"),
            distill=dataclasses.replace(config.distill, teacher=str(start)),
        )
    )
    recorded = read_checkpoint(tmp_path / "self_teacher" / "last.pt")["extra"]["teacher"]
    assert recorded["name"] == "tiny_diffkd"
    with pytest.raises(ValueError, match=r"train_only: \['refiner_typo.'\] name no parameter"):
        train(dataclasses.replace(config, train_only=("refiner_typo.",)))
    with pytest.raises(TrainConfigError, match="train_only"):
        TrainConfig.from_dict(base_config(tiny_data, tmp_path, STUDENT, train_only=[]))


def test_ego_view_mask_marks_the_cells_of_the_ego_points(tiny_data: Path) -> None:
    from models.distill import ego_view_mask

    model = CooperativeDetector(
        TrainConfig.from_dict(base_config(tiny_data, Path("x"), STUDENT)).model
    )
    grid = model.grid
    x0, y0, size = grid.point_range[0], grid.point_range[1], grid.voxel_size[0]
    sample = eval_dataset(model, tiny_data)[0]

    def at(cells: list[tuple[int, int]]) -> np.ndarray:
        """Points at the centres of (row, column) cells, plus one outside the grid."""
        pts = [[x0 + (c + 0.5) * size, y0 + (r + 0.5) * size, -1.0, 0.5] for r, c in cells]
        return np.array([*pts, [x0 - 5.0, y0, 0.0, 0.5]], dtype=np.float32)

    clean = dataclasses.replace(sample, ego_points=at([(0, 0), (3, 7)]), clean=None)
    corrupted = dataclasses.replace(clean, ego_points=at([(3, 7), (5, 2), (5, 2)]), clean=clean)
    mask = ego_view_mask(model, [corrupted, clean])
    assert mask.shape == (2, 1, grid.ny, grid.nx)  # fuse_at encoder: the pillar grid
    assert {tuple(i) for i in mask[0, 0].nonzero().tolist()} == {(0, 0), (3, 7), (5, 2)}
    assert {tuple(i) for i in mask[1, 0].nonzero().tolist()} == {(0, 0), (3, 7)}


def test_agf_reliability_target_trains_without_a_teacher(tiny_data: Path, tmp_path: Path) -> None:
    """AGF alone with a reliability score and a ``distill`` section holding only weights: the
    steps log the BCE of the fresh score (logit 0) against fogged neighbours' cleanliness 0.5,
    i.e. ln 2 times the weight, beside the detection loss."""
    model = {k: v for k, v in STUDENT.items() if k != "refiner"}
    model["fusion_options"] = {"key_channels": 8, "hidden": 8, "reliability": 2}
    corrupt = {
        "corruptions": ["fog"],
        "severities": [2],
        "clean_fraction": 0.0,
        "target": "neighbours",
        "pose_error_levels": [0.0],
        "curriculum": [2],
    }
    settings = {
        "steps_per_epoch": 2,
        "corrupt": corrupt,
        "distill": {"weights": {"reliability": 0.5}},
    }
    train(TrainConfig.from_dict(base_config(tiny_data, tmp_path / "agf", model, **settings)))
    with (tmp_path / "agf" / "steps.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[0]["reliability"]) == pytest.approx(0.5 * np.log(2.0), rel=1e-5)
    assert float(rows[0]["detection"]) > 0 and float(rows[0]["diffusion"]) == 0.0
