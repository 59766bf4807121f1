"""Training config validation, a tiny end-to-end train / resume / eval, and the CLI commands."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from cosim.cli.train import eval_command, train_command
from cosim.training.evaluate import EVAL_DATA, eval_dataset, evaluate
from cosim.training.train import train, warm_start
from cosim.training.train_config import ScheduleConfig, TrainConfig, TrainConfigError
from cosim.training.train_schedule import lr_factor
from models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from models.detector import CooperativeDetector, build_detector
from models.detector_config import load_detector_config
from models.distill import check_teacher

# A 51.2 m x 32 m grid and a narrow backbone: a training step takes a fraction of a second.
TINY_MODEL: dict[str, Any] = {
    "name": "tiny_max",
    "grid": {
        "point_range": [-25.6, -16.0, -3.0, 25.6, 16.0, 1.0],
        "voxel_size": [0.4, 0.4, 4.0],
        "feature_stride": 2,
    },
    "features": {
        "preset": "cpu",
        "pillar": {"num_filters": [16]},
        "backbone": {
            "layer_nums": [1, 1, 1],
            "layer_strides": [2, 2, 2],
            "num_filters": [16, 32, 32],
            "upsample_strides": [1, 2, 4],
            "num_upsample_filters": [16, 16, 16],
        },
    },
    "fusion": "max",
    "max_neighbours": 2,
}


def config_dict(folder: Path, out: Path, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": TINY_MODEL,
        "data": {"train": str(folder), "val": str(folder), "egos": "all", "val_frames": 4},
        "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01},
        "schedule": {"name": "onecycle", "warmup_fraction": 0.2},
        "epochs": 3,
        "batch_size": 4,
        "steps_per_epoch": 3,
        "augment": "off",
        "seed": 3,
        "out": str(out),
    }
    base.update(changes)
    return base


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---- config validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochz": 3}, "unknown key(s) ['epochz']"),
        (
            {"optimizer": {"name": "sgd", "lr": 0.1}},
            "optimizer.name: must be 'adamw' or 'adam', got 'sgd'",
        ),
        ({"optimizer": {"name": "adam"}}, "optimizer: missing required key(s) ['lr']"),
        ({"schedule": {"name": "cosine", "warmup": 3}}, "schedule: unknown key(s) ['warmup']"),
        ({"batch_size": 0}, "batch_size: must be >= 1, got 0"),
        ({"epochs": 2.5}, "epochs: must be a valid integer (allowed: >= 1), got 2.5"),
        (
            {"data": {"train": "x", "egos": "some"}},
            "data.egos: must be 'first' or 'all', got 'some'",
        ),
        ({"augment": {"scale": [1.1, 0.9]}}, "augment.scale: need low <= high, got [1.1, 0.9]"),
        ({"augment": {"flip_prob": 1.5}}, "augment.flip_prob: must be >= 0.0 and <= 1.0, got 1.5"),
        ({"model": "cpu_nope"}, "unknown detector preset 'cpu_nope'"),
        (
            {"model": {**TINY_MODEL, "fusion": "blend"}},
            "model.fusion: must be 'agf', 'attention', 'early', 'late', 'max' or 'none', "
            "got 'blend'",
        ),
    ],
)
def test_invalid_config_names_key_and_file(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    path = write_config(tmp_path / "bad.yaml", config_dict(tmp_path, tmp_path / "run", **change))
    with pytest.raises(TrainConfigError) as err:
        TrainConfig.from_yaml(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_missing_required_key_and_file(tmp_path: Path) -> None:
    data = config_dict(tmp_path, tmp_path / "run")
    del data["out"]
    path = write_config(tmp_path / "no_out.yaml", data)
    with pytest.raises(TrainConfigError, match=r"no_out.yaml: missing required key\(s\) \['out'\]"):
        TrainConfig.from_yaml(path)
    with pytest.raises(FileNotFoundError, match="absent.yaml"):
        TrainConfig.from_yaml(tmp_path / "absent.yaml")


def test_repo_configs_load_and_override() -> None:
    repo = Path(__file__).resolve().parents[2]
    root = repo / "configs" / "train"
    names = sorted(p.stem for p in root.glob("cpu_*.yaml"))
    assert names == [
        "cpu_agf",
        "cpu_attention",
        "cpu_attention_pkd",
        "cpu_diffkd",
        "cpu_diffkd_ego",
        "cpu_diffkd_flat",
        "cpu_diffkd_noae",
        "cpu_early",
        "cpu_late",
        "cpu_max",
        "cpu_none",
    ]
    distilled = (
        "cpu_attention_pkd",
        "cpu_diffkd",
        "cpu_diffkd_ego",
        "cpu_diffkd_flat",
        "cpu_diffkd_noae",
    )
    fusion = {name: "agf" for name in distilled} | {"cpu_attention_pkd": "attention"}
    for name in names:
        cfg = TrainConfig.from_yaml(root / f"{name}.yaml")
        assert cfg.model.fusion == fusion.get(name, name.removeprefix("cpu_"))
        assert cfg.data.egos == "all"
        diffkd_family = name in distilled or name == "cpu_agf"  # retrained on the per-size head
        assert cfg.data.train == ("data/train3" if diffkd_family else "data/train")
        assert cfg.out == f"runs/{name}"
        if diffkd_family:
            assert len(cfg.model.head.anchors) == 3 and cfg.model.message_range is not None
        if name == "cpu_agf":
            assert cfg.init_from == "models/checkpoints/base/sizes_early.pt"
        if name in distilled:  # a refiner trained on a frozen committed student
            student = "attention.pt" if name == "cpu_attention_pkd" else "base/agf_gen5.pt"
            assert cfg.init_from == f"models/checkpoints/{student}"
            assert cfg.train_only == ("refiner.",) and cfg.init_skip == ("refiner.",)
            warm_start(build_detector(cfg.model), str(repo / cfg.init_from), cfg.init_skip)
            # the teacher is the frozen student itself on clean data (clean intermediate
            # fusion), so its maps are in the student's own feature space
            assert cfg.distill.teacher == cfg.init_from
            assert cfg.distill.teacher_input == (
                "ego" if name == "cpu_diffkd_ego" else "all_agents"
            )
            teacher, _, _ = load_checkpoint(repo / cfg.distill.teacher)
            check_teacher(teacher, build_detector(cfg.model))
        assert (cfg.model.refiner is not None) == (name in distilled)
        # a teacher exactly for the refiners; cpu_agf's distill section holds loss weights only
        has_teacher = cfg.distill is not None and cfg.distill.teacher is not None
        assert has_teacher == (name in distilled)
        if name == "cpu_agf":
            assert cfg.distill is not None and cfg.distill.weights.reliability > 0
        assert (cfg.corrupt is not None) == diffkd_family
        if cfg.corrupt is not None:
            assert cfg.corrupt.progressive == (name != "cpu_diffkd_flat")
    moved = cfg.with_overrides(data_train="/d/train", epochs=7)
    assert (moved.data.train, moved.epochs, moved.raw["data"]["train"]) == (
        "/d/train",
        7,
        "/d/train",
    )


def test_warm_start_skips_a_new_head(tmp_path: Path) -> None:
    """A single-car-anchor checkpoint warm-starts the per-size preset's feature net; its head
    (2 anchors a cell, not 6) is skipped, or refused by name when not skipped."""
    single = CooperativeDetector(load_detector_config("cpu_none"))
    shipped = tmp_path / "none.pt"
    save_checkpoint(shipped, single, single.config, {})
    model = CooperativeDetector(load_detector_config("cpu_none_sizes"))
    fresh_head = model.anchor_head.cls.weight.detach().clone()
    warm_start(model, str(shipped), ("anchor_head.",))
    start, _, _ = load_checkpoint(shipped)
    torch.testing.assert_close(
        model.features.backbone.state_dict(), start.features.backbone.state_dict()
    )
    torch.testing.assert_close(model.anchor_head.cls.weight, fresh_head)
    with pytest.raises(ValueError, match=r"(?s)init_from .*none.pt.*size mismatch"):
        warm_start(CooperativeDetector(load_detector_config("cpu_none_sizes")), str(shipped))
    with pytest.raises(TrainConfigError, match="init_skip: must be a list, got 'anchor_head.'"):
        TrainConfig.from_dict({**config_dict(Path("a"), Path("b")), "init_skip": "anchor_head."})


def test_schedules_warm_up_then_decay() -> None:
    one = ScheduleConfig("onecycle", 0.2, 0.01)
    values = [lr_factor(one, s, 100) for s in range(100)]
    assert values[0] == pytest.approx(0.1, abs=0.01) and max(values) == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.01, abs=0.002) and values.index(max(values)) == 19
    cos = ScheduleConfig("cosine", 0.1, 0.0)
    assert lr_factor(cos, 0, 100) == pytest.approx(0.1) and lr_factor(cos, 99, 100) < 1e-3


# ---- end to end ----------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_train_resume_and_evaluate(tiny_data: Path, tmp_path: Path) -> None:
    full = TrainConfig.from_dict(config_dict(tiny_data, tmp_path / "full"), "full")
    result = train(full, command="test")
    steps = read_rows(tmp_path / "full" / "steps.csv")
    assert len(steps) == 9 and [int(r["global_step"]) for r in steps] == list(range(1, 10))
    losses = [r["loss"] for r in result.epochs]
    assert losses[-1] < losses[0]  # the loss goes down
    for name in ("last.pt", "best.pt", "epochs.csv", "config.yaml", "summary.json"):
        assert (tmp_path / "full" / name).is_file()
    payload = read_checkpoint(tmp_path / "full" / "last.pt")
    assert payload["epoch"] == 3 and payload["optimizer_state"]["step"] == 9
    assert "build_dataset(" in payload["extra"]["data_commands"]["train"]
    assert 0.0 <= payload["metrics"]["ap50"] <= 1.0

    # Interrupted after epoch 2, resumed: epoch 3 continues the same schedule and shuffles.
    part = TrainConfig.from_dict(config_dict(tiny_data, tmp_path / "part"), "part")
    train(part, stop_after=2)
    assert read_checkpoint(tmp_path / "part" / "last.pt")["epoch"] == 2
    resumed = train(part, resume=True)
    assert [r["epoch"] for r in resumed.epochs] == [3]
    after = read_checkpoint(tmp_path / "part" / "last.pt")
    assert after["epoch"] == 3 and after["optimizer_state"]["step"] == 9
    for key, value in payload["state_dict"].items():
        torch.testing.assert_close(after["state_dict"][key], value, rtol=1e-4, atol=1e-5)
    part_steps = read_rows(tmp_path / "part" / "steps.csv")
    assert [float(r["lr"]) for r in part_steps] == pytest.approx([float(r["lr"]) for r in steps])

    model, _, _ = load_checkpoint(tmp_path / "full" / "best.pt")
    aps = evaluate(model, tiny_data, progress=False)
    assert sorted(aps) == [0.3, 0.5, 0.7]
    assert all(0.0 <= v <= 1.0 for v in aps.values())
    assert aps[0.3] >= aps[0.5] >= aps[0.7]


def test_eval_ground_truth_does_not_depend_on_the_model(tiny_data: Path) -> None:
    none = TrainConfig.from_dict(
        config_dict(tiny_data, Path("unused"), model={**TINY_MODEL, "fusion": "none"}), "x"
    ).model
    from models.detector import CooperativeDetector

    a = eval_dataset(CooperativeDetector(none), tiny_data)
    b = eval_dataset(
        CooperativeDetector(
            TrainConfig.from_dict(config_dict(tiny_data, Path("unused")), "x").model
        ),
        tiny_data,
    )
    assert EVAL_DATA["egos"] == "first" and len(a) == 4
    for i in range(len(a)):
        assert len(a[i].neighbour_points) == 2
        assert (a[i].gt_ids == b[i].gt_ids).all()


# ---- CLI -----------------------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("train")(train_command)
    app.command("eval")(eval_command)
    return app


def test_cli_train_then_eval(tiny_data: Path, tmp_path: Path) -> None:
    data = config_dict(Path("elsewhere"), Path("ignored"), epochs=1, steps_per_epoch=1)
    path = write_config(tmp_path / "cfg.yaml", data)
    runner = CliRunner()
    run_dir = tmp_path / "run"
    args = ["train", str(path), "--out", str(run_dir), "--train-data", str(tiny_data)]
    res = runner.invoke(cli(), [*args, "--val-data", str(tiny_data)])
    assert res.exit_code == 0, res.output
    assert (run_dir / "best.pt").is_file() and "best val" in res.output
    resume = [*args, "--epochs", "2", "--resume", "--threads", "1", "--val-data", str(tiny_data)]
    res = runner.invoke(cli(), resume)
    assert res.exit_code == 0, res.output
    assert read_checkpoint(run_dir / "last.pt")["epoch"] == 2
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["threads"] == 1

    report_path = tmp_path / "eval" / "report.json"
    res = runner.invoke(
        cli(),
        ["eval", str(run_dir / "best.pt"), "--data", str(tiny_data), "--out", str(report_path)],
    )
    assert res.exit_code == 0, res.output
    assert "AP@0.5" in res.output and "global sort" in res.output
    report = json.loads(report_path.read_text())
    assert report["frames"] == 4 and set(report["ap"]) == {"0.3", "0.5", "0.7"}
    assert all(0.0 <= v <= 1.0 for v in report["ap"].values() if not math.isnan(v))
    by_class = report["recall_by_visibility"]
    assert set(by_class) == {"ego", "neighbours_only", "sparse"} and "neighbours only" in res.output
    assert sum(row["gt"] for row in by_class.values()) == report["num_gt"]
    assert all(row["found@0.7"] <= row["found"] for row in by_class.values())
    by_size = report["recall_by_size"]
    assert set(by_size) == {"car", "van", "truck_bus"} and "truck bus" in res.output
    assert sum(row["gt"] for row in by_size.values()) == report["num_gt"]
    assert sum(row["found"] for row in by_size.values()) == sum(
        row["found"] for row in by_class.values()
    )
    assert "median_centre_error_m" in by_size["car"]
    assert 0 <= report["false_positives"]["0.5"] <= report["detections"]
    assert f"{report['detections']} detections at score >=" in res.output
    res = runner.invoke(
        cli(), ["eval", str(run_dir / "best.pt"), "--data", str(tiny_data), "--json"]
    )
    assert res.exit_code == 0 and json.loads(res.output)["ap"] == report["ap"]
    assert (
        report["score_threshold"]
        == read_checkpoint(run_dir / "best.pt")["config"]["head"]["score_threshold"]
    )
    res = runner.invoke(
        cli(),
        [
            "eval",
            str(run_dir / "best.pt"),
            "--data",
            str(tiny_data),
            "--json",
            "--score-threshold",
            "1.0",
        ],
    )
    strict = json.loads(res.output)  # nothing scores above 1: no detection, AP 0, recall 0
    assert strict["score_threshold"] == 1.0 and set(strict["ap"].values()) <= {0.0, None}
    assert strict["detections"] == 0 and strict["vote_iou"] == 0.0
    res = runner.invoke(
        cli(),
        ["eval", str(run_dir / "best.pt"), "--data", str(tiny_data), "--json", "--vote-iou", "0.3"],
    )
    voted = json.loads(res.output)
    assert voted["vote_iou"] == 0.3 and voted["detections"] == report["detections"]
    assert all(row["found"] == 0 for row in strict["recall_by_visibility"].values())


def test_cli_errors_name_the_missing_file(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = tmp_path / "nope.pt"
    res = runner.invoke(cli(), ["eval", str(missing), "--data", str(tmp_path)])
    assert res.exit_code == 2 and "checkpoint not found" in res.output and "nope.pt" in res.output
    res = runner.invoke(cli(), ["train", str(tmp_path / "absent.yaml")])
    assert res.exit_code == 2 and "absent.yaml" in res.output
    path = write_config(tmp_path / "c.yaml", config_dict(tmp_path, tmp_path / "fresh"))
    res = runner.invoke(cli(), ["train", str(path), "--resume"])
    assert res.exit_code == 2 and "last.pt" in res.output


def test_size_head_configs_cover_all_three_worlds() -> None:
    root = Path(__file__).resolve().parents[2] / "configs" / "train"
    names = sorted(p.stem for p in (root / "sizes").glob("*.yaml"))
    assert names == ["attention", "early", "finetune_none", "max", "none"]
    for name in names:
        cfg = TrainConfig.from_yaml(root / "sizes" / f"{name}.yaml")
        assert len(cfg.model.head.anchor_set) == 3 and cfg.model.head.vote_iou > 0
        assert (cfg.data.train, cfg.data.val) == ("data/train3", "data/val3")
        assert "--scenario highway" in (root / "sizes" / f"{name}.yaml").read_text()
    compare = {
        name: TrainConfig.from_yaml(root / "head_compare" / f"{name}.yaml")
        for name in ("single", "sizes", "center", "center_axis")
    }

    def protocol(cfg: TrainConfig) -> dict[str, Any]:
        return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)} | {
            "model": None,
            "out": None,
            "source": None,  # the file read and its raw mapping: bookkeeping
            "raw": None,
        }

    for name, cfg in compare.items():
        assert cfg.init_skip == ("anchor_head.",) and cfg.threads == 1
        assert str(cfg.init_from) == "runs/none_gen1.pt"  # the file the README rows used
        # Only the model and the run folder differ: the same data, warm start, steps, seed.
        assert protocol(cfg) == protocol(compare["sizes"]), name
    assert compare["center"].model.head.type == "center"
    assert compare["center_axis"].model.head.center.axis_yaw


def test_stop_request_ends_training_after_the_epoch(tiny_data: Path, tmp_path: Path) -> None:
    import json

    config = TrainConfig.from_dict(config_dict(tiny_data, tmp_path / "stop"), "stop")
    polls: list[int] = []
    result = train(config, should_stop=lambda: polls.append(1) is None and len(polls) >= 2)
    assert result.interrupted and [r["epoch"] for r in result.epochs] == [1, 2]
    assert read_checkpoint(tmp_path / "stop" / "last.pt")["epoch"] == 2
    summary = json.loads((tmp_path / "stop" / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["epochs_done"] == 2


def test_trust_experiment_configs_chain() -> None:
    """configs/train/trust: AGF with a trust, then the trust alone, then the refiner, each
    warm-started from the stage before, all on the same AGF options."""
    root = Path(__file__).resolve().parents[2] / "configs" / "train" / "trust"
    agf, score, diffkd = (
        TrainConfig.from_yaml(root / f"{n}.yaml") for n in ("agf", "agf_score", "diffkd")
    )
    assert agf.init_from == "models/checkpoints/base/sizes_early.pt"
    assert score.init_from == f"{agf.out}/best.pt" and score.train_only == ("fusion.reliability.",)
    assert diffkd.init_from == diffkd.distill.teacher == f"{score.out}/best.pt"
    assert diffkd.train_only == ("refiner.",)
    options = agf.model.fusion_options
    assert options["shut_out"] and options["profile"] and options["drop_below"] == 0.5
    assert score.model.fusion_options == diffkd.model.fusion_options == options


def test_wide_trust_configs_keep_the_shipped_agf_but_its_score() -> None:
    """configs/train/trust_wide: a fresh trust alone on the fifth-generation agf.pt (its
    gate, no shut_out, drop below 0.5), the AGF options of the cpu_diffkd_trust_wide preset
    its graft into diffkd.pt is built under."""
    root = Path(__file__).resolve().parents[2] / "configs" / "train" / "trust_wide"
    agf = TrainConfig.from_yaml(root / "agf.yaml")
    assert agf.init_from == "models/checkpoints/base/agf_gen5.pt"
    assert agf.init_skip == ("fusion.reliability",)
    assert agf.train_only == ("fusion.reliability.",)
    shipped = TrainConfig.from_yaml(root.parent / "cpu_agf.yaml").model.fusion_options
    options = agf.model.fusion_options
    assert {k: options[k] for k in shipped} == shipped
    assert options["profile"] and not options.get("shut_out") and options["drop_below"] == 0.5
    assert load_detector_config("cpu_diffkd_trust_wide").fusion_options == options
