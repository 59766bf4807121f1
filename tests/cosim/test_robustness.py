"""The robustness benchmark: condition list, fault application on samples, AP equalities
(level 0 = clean = ``cosim eval``), Ray = in-process, mRCE arithmetic and the CLI outputs."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import typer
from typer.testing import CliRunner

from cosim.cli.robustness import register
from cosim.experiments.conditions import CLEAN, Condition, build_conditions, loss_config
from cosim.experiments.robustness import condition_samples, evaluate_condition, source_runs
from cosim.experiments.robustness_report import compare_report, render_report, summarize, with_rce
from cosim.experiments.robustness_run import BenchmarkConfig, run_benchmark
from cosim.training.dataset_build import build_dataset
from cosim.training.evaluate import evaluate
from models.batch import CooperativeSample
from models.checkpoint import load_checkpoint
from models.dataset import FrameStore
from models.detector import CooperativeDetector
from models.inference import predict
from models.metrics import evaluate_detections
from scenarios.corruptions import CORRUPTION_NAMES
from scenarios.geometry import relative_transform
from tests.agents.helpers import (
    write_small_scenario,
    write_tiny_checkpoint,
    write_tiny_diffkd_checkpoint,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seeds x 6 frames at 10 Hz (16-beam LiDAR, 3 CAVs), the same at 5 Hz, a checkpoint."""
    root = tmp_path_factory.mktemp("robust")
    scenario = write_small_scenario(root / "small.yaml", frames=0.6)
    build_dataset(scenario, None, root / "data", seeds=[0, 1])
    build_dataset(scenario, None, root / "data5hz", seeds=[0], every=2)
    write_tiny_checkpoint(root / "tiny.pt")
    return root


@pytest.fixture(scope="module")
def model(folder: Path) -> Iterator[CooperativeDetector]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_checkpoint(folder / "tiny.pt")[0]
    torch.set_num_threads(before)


def samples(
    folder: Path, model: CooperativeDetector, condition: Condition, seed: int = 0
) -> list[CooperativeSample]:
    return list(condition_samples(FrameStore(folder / "data"), model.grid, condition, seed=seed))


def aps(row: dict) -> tuple[float, float, float]:
    return row["ap@0.3"], row["ap@0.5"], row["ap@0.7"]


def test_condition_list() -> None:
    conditions = build_conditions()
    kinds = [c.kind for c in conditions]
    assert len(conditions) == 34 and conditions[0] == CLEAN
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "clean": 1,
        "sensor": 21,
        "pose": 4,
        "latency": 3,
        "loss": 5,
    }
    assert len({c.label for c in conditions}) == 34
    assert [c.level for c in conditions if c.kind == "pose"] == [0.0, 0.2, 0.4, 0.6]
    assert [c.level for c in conditions if c.kind == "latency"] == [0.0, 100.0, 200.0]
    assert [c.label for c in conditions if c.kind == "loss"] == [
        "none/0%",
        "bernoulli/10%",
        "bernoulli/30%",
        "gilbert_elliott/10%",
        "gilbert_elliott/30%",
    ]
    assert len(build_conditions(("sensor",))) == 22 and len(build_conditions(("comm",))) == 13
    middle = build_conditions(("sensor",), severities=(2,))
    assert [c.label for c in middle] == ["clean"] + [f"{n}/2" for n in CORRUPTION_NAMES]
    with pytest.raises(ValueError, match=r"severities must be among \[1, 2, 3\], got \[4\]"):
        build_conditions(("sensor",), severities=(4,))
    with pytest.raises(ValueError, match="unknown condition group 'radar'"):
        build_conditions(("radar",))
    with pytest.raises(ValueError, match="severity 1-3"):
        Condition("sensor", "fog", 4.0)


def test_gilbert_elliott_matches_bernoulli_mean_with_bursts() -> None:
    for rate in (0.1, 0.3):
        ge = loss_config(Condition("loss", "gilbert_elliott", rate))
        assert ge.stationary_loss() == pytest.approx(rate) and 1 / ge.p_bg == pytest.approx(4)
        assert loss_config(Condition("loss", "bernoulli", rate)).p == rate
    assert loss_config(Condition("loss", "none", 0.0)).model == "none"


def test_clean_equals_cosim_eval(folder: Path, model: CooperativeDetector) -> None:
    row = evaluate_condition(model, folder / "data", CLEAN)
    reference = evaluate(model, folder / "data", progress=False)
    assert aps(row) == (reference[0.3], reference[0.5], reference[0.7])
    assert row["frames"] == 12 and row["num_gt"] > 0 and row["ap@0.3"] > 0


def test_refiner_rows_report_gamma_skips_and_time(folder: Path, tmp_path: Path) -> None:
    """A model with a refiner: each row says its mean gamma, the share of ego maps it skipped
    and its time; skipping every map (threshold 0) gives refinement-off's APs exactly."""
    refined = load_checkpoint(write_tiny_diffkd_checkpoint(tmp_path / "d.pt"))[0]
    skip_all = load_checkpoint(write_tiny_diffkd_checkpoint(tmp_path / "s.pt", skip_above=0.0))[0]
    row = evaluate_condition(refined, folder / "data", CLEAN)
    assert 0 < row["refine_gamma"] < 1 and row["refine_skipped"] == 0.0 and row["refine_ms"] > 0
    skipped = evaluate_condition(skip_all, folder / "data", CLEAN)
    off = evaluate_condition(refined, folder / "data", CLEAN, refine_steps=0)
    assert skipped["refine_skipped"] == 1.0 and aps(skipped) == aps(off)
    assert math.isnan(off["refine_gamma"]) and math.isnan(off["refine_skipped"])
    # Refining the received maps too: the refiner sees every received map beside the ego's
    # (counted by a hook), and the ego's own gamma is the same.
    seen: list[int] = []
    hook = refined.refiner.register_forward_hook(lambda _m, args, _o: seen.append(len(args[0])))
    ego_only = evaluate_condition(refined, folder / "data", CLEAN)
    ego_maps = sum(seen)
    seen.clear()
    both = evaluate_condition(refined, folder / "data", CLEAN, refine_neighbours=True)
    hook.remove()
    assert ego_maps == row["frames"] == ego_only["frames"]
    assert sum(seen) == round(row["frames"] * (1 + both["mean_neighbours"]))
    assert both["mean_neighbours"] > 0 and both["refine_gamma"] == row["refine_gamma"]
    plain = evaluate_condition(load_checkpoint(folder / "tiny.pt")[0], folder / "data", CLEAN)
    assert "refine_ms" not in plain
    table = with_rce([{**row, "kind": "clean"}])
    assert table.column("refine_skipped").to_pylist() == [0.0]
    assert "refiner gamma | skipped | refine ms" in render_report(table, "t")


def test_level_zero_faults_are_clean(folder: Path, model: CooperativeDetector) -> None:
    clean = samples(folder, model, CLEAN)
    clean_row = evaluate_condition(model, folder / "data", CLEAN)
    assert sum(s.num_neighbours for s in clean) > 0
    for condition in (
        Condition("pose", "sigma", 0.0),
        Condition("latency", "latency", 0.0),
        Condition("loss", "none", 0.0),
    ):
        for a, b in zip(clean, samples(folder, model, condition), strict=True):
            assert a.neighbour_ids == b.neighbour_ids
            assert np.array_equal(a.neighbour_to_ego, b.neighbour_to_ego)
            assert all(
                np.array_equal(p, q)
                for p, q in zip(a.neighbour_points, b.neighbour_points, strict=True)
            )
        assert aps(evaluate_condition(model, folder / "data", condition)) == aps(clean_row)


def test_full_loss_equals_no_neighbours(folder: Path, model: CooperativeDetector) -> None:
    lost = Condition("loss", "bernoulli", 1.0)  # a test-only level
    assert all(s.num_neighbours == 0 for s in samples(folder, model, lost))
    alone = [
        CooperativeSample(s.ego_points, (), np.zeros((0, 4, 4)), s.gt_boxes)
        for s in samples(folder, model, CLEAN)
    ]
    detections = [d for k in range(0, len(alone), 4) for d in predict(model, alone[k : k + 4])]
    reference = evaluate_detections(
        (d.boxes, d.scores, s.gt_boxes) for d, s in zip(detections, alone, strict=True)
    )
    row = evaluate_condition(model, folder / "data", lost)
    assert aps(row) == (reference[0.3], reference[0.5], reference[0.7])
    assert row["mean_neighbours"] == 0.0


def test_latency_uses_the_older_frame(folder: Path, model: CooperativeDetector) -> None:
    store = FrameStore(folder / "data")
    clean = samples(folder, model, CLEAN)
    late = samples(folder, model, Condition("latency", "latency", 200.0))  # 2 frames at 10 Hz
    checked = 0
    for _, run in source_runs(store):
        for k, position in enumerate(run):
            now, old = store.frame(position), store.frame(run[max(0, k - 2)])
            sample, reference = late[position], clean[position]
            assert np.array_equal(sample.gt_boxes, reference.gt_boxes)
            assert sample.neighbour_ids == reference.neighbour_ids
            for i, agent in enumerate(sample.neighbour_ids):
                expected = relative_transform(
                    old.agent(agent).lidar_pose, now.agent(now.ego_id).lidar_pose
                )
                assert np.array_equal(sample.neighbour_to_ego[i], expected)
                assert np.array_equal(sample.neighbour_points[i], old.agent(agent).points)
                checked += k >= 2
    assert checked > 0
    with pytest.raises(ValueError, match="frame spacing 200 ms"):
        next(
            condition_samples(
                FrameStore(folder / "data5hz"), model.grid, Condition("latency", "latency", 100.0)
            )
        )


def test_pose_error_moves_only_neighbour_transforms(
    folder: Path, model: CooperativeDetector
) -> None:
    clean = samples(folder, model, CLEAN)
    noisy = samples(folder, model, Condition("pose", "sigma", 0.6))
    shifts = []
    for a, b in zip(clean, noisy, strict=True):
        assert np.array_equal(a.gt_boxes, b.gt_boxes) and np.array_equal(a.ego_points, b.ego_points)
        shifts += [
            float(np.hypot(*(t - u)[:2, 3]))
            for t, u in zip(a.neighbour_to_ego, b.neighbour_to_ego, strict=True)
        ]
    assert shifts and min(shifts) > 0 and max(shifts) < 8.0  # rotation lever arm < 70 m


def test_each_corruption_changes_every_agents_points(
    folder: Path, model: CooperativeDetector
) -> None:
    clean = samples(folder, model, CLEAN)
    count = sum(len(s.ego_points) + sum(map(len, s.neighbour_points)) for s in clean)
    for name in CORRUPTION_NAMES:
        hit = samples(folder, model, Condition("sensor", name, 2.0))
        assert (
            samples(folder, model, Condition("sensor", name, 2.0), seed=0)[0].ego_points.tobytes()
            == hit[0].ego_points.tobytes()
        )  # seeded
        changed = [
            not np.array_equal(p, q)
            for a, b in zip(clean, hit, strict=True)
            for p, q in zip(
                (a.ego_points, *a.neighbour_points),
                (b.ego_points, *b.neighbour_points),
                strict=True,
            )
        ]
        assert all(changed), name
        total = sum(len(s.ego_points) + sum(map(len, s.neighbour_points)) for s in hit)
        assert (total == count) if name == "motion_blur" else (total != count), name


def test_ray_and_inprocess_give_identical_tables(folder: Path) -> None:
    chosen = [
        CLEAN,
        Condition("sensor", "fog", 2.0),
        Condition("pose", "sigma", 0.4),
        Condition("latency", "latency", 100.0),
        Condition("loss", "gilbert_elliott", 0.3),
    ]
    config = BenchmarkConfig(data=str(folder / "data"), frames=4)
    seen: list[int] = []
    ray_table = run_benchmark(
        folder / "tiny.pt",
        config,
        chosen,
        "ray",
        parallel=2,
        progress=lambda done, _: seen.append(done),
    )
    local = run_benchmark(folder / "tiny.pt", config, chosen, "inprocess")
    assert seen == [1, 2, 3, 4, 5]
    drop = ["seconds"]
    assert ray_table.drop(drop).to_pylist() == local.drop(drop).to_pylist()
    assert ray_table.column("frames").to_pylist() == [8] * 5


def test_mrce_arithmetic() -> None:
    rows = [{"kind": "clean", "name": "clean", "level": 0.0, "label": "clean", "ap@0.5": 0.8}]
    rows += [
        {
            "kind": "sensor",
            "name": n,
            "level": float(s),
            "label": f"{n}/{s}",
            "ap@0.5": 0.8 - 0.1 * s - 0.01 * i,
        }
        for i, n in enumerate(CORRUPTION_NAMES)
        for s in (1, 2, 3)
    ]
    rows += [{"kind": "loss", "name": "bernoulli", "level": 0.3, "label": "b", "ap@0.5": 0.6}]
    for r in rows:
        r.update(
            {
                "ap@0.3": r["ap@0.5"],
                "ap@0.7": r["ap@0.5"] / 2,
                "frames": 1,
                "num_gt": 1,
                "mean_neighbours": 1.0,
                "mean_points": 1.0,
                "seconds": 0.0,
            }
        )
    table = with_rce(rows)
    rce = dict(
        zip(table.column("label").to_pylist(), table.column("rce@0.5").to_pylist(), strict=True)
    )
    assert rce["clean"] == 0.0 and rce["b"] == pytest.approx(0.25)
    assert rce["fog/2"] == pytest.approx((0.2 + 0.02) / 0.8)
    summary = summarize(table)
    assert summary["mrce_sev2"] == pytest.approx((0.2 + 0.03) / 0.8)  # mean i = 3
    assert summary["mrce_all"] == pytest.approx((0.2 + 0.03) / 0.8)  # mean severity = 2
    assert summary["rce"]["emi"][3] == pytest.approx((0.3 + 0.04) / 0.8)
    assert f"{(0.2 + 0.03) / 0.8:.4f}" in render_report(table, "t")
    partial = summarize(with_rce([r for r in rows if r["label"] != "fog/2"]))
    assert math.isnan(partial["mrce_sev2"]) and math.isnan(partial["mrce_all"])
    with pytest.raises(ValueError, match="exactly one clean row"):
        with_rce(rows[1:])
    halved = with_rce([{**r, "ap@0.5": r["ap@0.5"] / 2} for r in rows])
    lines = compare_report({"full": table, "half": halved}).splitlines()
    assert lines[0] == (
        "| model | clean | " + " | ".join(CORRUPTION_NAMES) + " | mRCE sev 2 | mRCE all |"
    )
    # clean 0.8, corruption i at severity 2: 0.8 - 0.2 - 0.01 i; halving every AP keeps RCEs
    assert lines[2].startswith("| full | 0.800 | 0.600 | 0.590 | 0.580 |")
    mrces = [float(cell) for cell in lines[2].split("|")[-3:-1]]
    assert mrces == pytest.approx([0.2875, 0.2875], abs=6e-4)
    assert lines[3].startswith("| half | 0.400 |")
    assert lines[5:8] == ["| model | clean | b |", "|---|---|---|", "| full | 0.800 | 0.600 |"]
    assert "| model" not in compare_report({"partial": with_rce(rows[:3])})  # nothing complete
    with pytest.raises(ValueError, match="at least one"):
        compare_report({})


def test_cli_writes_table_report_and_plots(folder: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps "robustness" a sub-command
    runner = CliRunner()
    out = tmp_path / "bench"
    result = runner.invoke(
        app,
        [
            "robustness",
            str(folder / "tiny.pt"),
            "--data",
            str(folder / "data"),
            "--out",
            str(out),
            "--frames",
            "2",
            "--parallel",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(out / "robustness.parquet")
    assert table.num_rows == 34 and table.column("frames").to_pylist() == [4] * 34
    report = (out / "report.md").read_text()
    assert "mRCE (seven corruptions, severity 2)" in report and "| sensor | fog/2 |" in report
    for name in ("faults.png", "corruptions.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    compared = runner.invoke(
        app,
        [
            "robustness-compare",
            str(out),
            "--out",
            str(tmp_path / "compare.md"),
            "--plot",
            str(tmp_path / "compare.png"),
        ],
    )
    assert compared.exit_code == 0, compared.output
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"
    lines = (tmp_path / "compare.md").read_text().splitlines()
    clean_ap = table.column("ap@0.5").to_pylist()[0]
    assert lines[2].startswith(f"| bench | {clean_ap:.3f} |") and "pose/0.6" in lines[4]
    twin = tmp_path / "again" / "bench"
    twin.mkdir(parents=True)
    (twin / "robustness.parquet").write_bytes((out / "robustness.parquet").read_bytes())
    both = runner.invoke(app, ["robustness-compare", str(out), str(twin)])
    assert both.exit_code == 0 and f"| {out} |" in both.output and f"| {twin} |" in both.output
    missing = runner.invoke(app, ["robustness-compare", str(out), str(tmp_path)])
    assert missing.exit_code == 2 and "no robustness.parquet in" in missing.output
    bad = runner.invoke(
        app,
        [
            "robustness",
            str(folder / "tiny.pt"),
            "--data",
            str(folder / "data5hz"),
            "--out",
            str(tmp_path / "x"),
            "--conditions",
            "latency",
            "--parallel",
            "0",
        ],
    )
    assert bad.exit_code == 2 and "frame spacing 200 ms" in bad.output
    sev = runner.invoke(
        app,
        [
            "robustness",
            str(folder / "tiny.pt"),
            "--data",
            str(folder / "data"),
            "--severities",
            "2,x",
        ],
    )
    assert sev.exit_code == 2 and "--severities must be whole numbers" in sev.output
    steps = runner.invoke(
        app,
        [
            "robustness",
            str(folder / "tiny.pt"),
            "--data",
            str(folder / "data"),
            "--refine-steps",
            "11",
        ],
    )
    assert steps.exit_code == 2 and "Invalid value for '--refine-steps'" in steps.output


def test_stop_request_keeps_the_finished_conditions(folder: Path) -> None:
    chosen = [CLEAN, Condition("pose", "sigma", 0.4), Condition("loss", "gilbert_elliott", 0.3)]
    config = BenchmarkConfig(data=str(folder / "data"), frames=2)
    polls: list[int] = []
    table = run_benchmark(
        folder / "tiny.pt",
        config,
        chosen,
        "inprocess",
        should_stop=lambda: polls.append(1) is None and len(polls) > 2,
    )
    assert table.column("label").to_pylist() == [CLEAN.label, chosen[1].label]
    assert table.column("rce@0.5").to_pylist()[0] == 0.0
    first_only = run_benchmark(
        folder / "tiny.pt",
        config,
        chosen[1:],
        "inprocess",
        should_stop=lambda: len(polls) > 3 or polls.append(1) is not None,
    )
    assert first_only.num_rows == 1
    assert math.isnan(first_only.column("rce@0.5").to_pylist()[0])
