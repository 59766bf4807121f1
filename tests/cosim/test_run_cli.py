"""``cosim run`` and ``cosim sweep`` end to end on a small scenario with a tiny model."""

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import typer
from typer.testing import CliRunner

from cosim.cli.app import run as cli_run
from cosim.cli.app import sweep as cli_sweep
from cosim.cli.run import build_config
from cosim.sim.run_config import RunConfig
from tests.agents.helpers import write_small_scenario, write_tiny_checkpoint

runner = CliRunner()
app = typer.Typer()


@app.callback()
def _main() -> None:
    """Test app with the two commands registered the way cosim.cli.app registers them."""


cli_run.register(app)
cli_sweep.register(app)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("cli")
    scenario = write_small_scenario(root / "small.yaml")
    return str(scenario), str(write_tiny_checkpoint(root / "tiny.pt"))


def test_run_writes_the_run_directory(
    ray_local: None, inputs: tuple[str, str], tmp_path: Path
) -> None:
    scenario, checkpoint = inputs
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "run",
            scenario,
            "--checkpoint",
            checkpoint,
            "--frames",
            "4",
            "--dtype",
            "int8",
            "--sparsity",
            "topk:0.5",
            "--pose-error",
            "0.2",
            "--render",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "AP@0.5" in result.output and "latency p50" in result.output
    for name in (
        "config.yaml",
        "summary.json",
        "messages.parquet",
        "receptions.parquet",
        "detections.parquet",
        "frames.parquet",
        "timings.parquet",
    ):
        assert (out / name).is_file(), name
    pictures = sorted((out / "bev").glob("*.png"))
    assert [p.name for p in pictures] == ["tick_0000_ego_1.png", "tick_0003_ego_1.png"]
    assert all(p.read_bytes()[:8] == PNG for p in pictures)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["executor"] == "ray" and summary["frames"] == 4
    assert summary["messages"]["sent"] == pq.read_table(out / "messages.parquet").num_rows == 8
    assert summary["codec"] == {"dtype": "int8", "sparsity": {"topk": 0.5}}
    assert set(summary["stage_s_per_tick"]) == {
        "world",
        "sense",
        "encode",
        "codec",
        "channel",
        "decode",
        "refine",
        "fuse",
        "head",
    }
    assert summary["stage_s_per_tick"]["encode"] > 0
    assert summary["stage_s_per_tick"]["world"] > 0  # ray casting the synthetic LiDAR
    config = RunConfig.from_yaml(out / "config.yaml")
    assert config.pose_error == 0.2 and config.sparsity == {"topk": 0.5}
    assert pq.read_table(out / "frames.parquet").num_rows == 4

    # The folder's config.yaml repeats the run (here in process): the same detections.
    again = tmp_path / "again"
    result = runner.invoke(
        app,
        [
            "run",
            "--config",
            str(out / "config.yaml"),
            "--executor",
            "inprocess",
            "--quiet",
            "--out",
            str(again),
        ],
    )
    assert result.exit_code == 0, result.output
    assert pq.read_table(again / "detections.parquet").equals(
        pq.read_table(out / "detections.parquet")
    )


def test_run_without_a_checkpoint_explains(inputs: tuple[str, str], tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["run", inputs[0], "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "r")],
    )
    assert result.exit_code == 2
    assert "checkpoint not found" in result.output


def test_bad_options_are_rejected(inputs: tuple[str, str], tmp_path: Path) -> None:
    for option in (
        ["--sparsity", "topk"],
        ["--dtype", "int4"],
        ["--channel", "wifi"],
        ["--zstd-level", "23"],
    ):
        result = runner.invoke(
            app,
            ["run", inputs[0], "--checkpoint", inputs[1], *option, "--out", str(tmp_path / "r")],
        )
        assert result.exit_code == 2, option
    assert "RunConfig.zstd_level: must be >= -7 and <= 22, got 23" in " ".join(
        result.output.split()
    )
    assert build_config(None, zstd_level=6, dtype=None).codec().zstd_level == 6


def test_a_bad_message_range_names_the_field(inputs: tuple[str, str], tmp_path: Path) -> None:
    """Unparsable, or not containing the tiny model's 64 x 32 m grid: refused before a run."""
    for value in ("1,2", "-20,-80,80,80"):
        result = runner.invoke(
            app,
            [
                "run",
                inputs[0],
                "--checkpoint",
                inputs[1],
                f"--message-range={value}",
                "--out",
                str(tmp_path / "r"),
            ],
        )
        assert result.exit_code == 2, value
        assert "message_range" in result.output, result.output
    assert RunConfig(message_range=[-1, -2, 3, 4]).detector_overrides() == {
        "message_range": (-1.0, -2.0, 3.0, 4.0)
    }
    with pytest.raises(ValueError, match=r"RunConfig\.message_range\[2\]: must be a finite number"):
        RunConfig(message_range=[1, 2, float("nan"), 4])


def test_sweep_writes_table_and_plot(
    ray_local: None, inputs: tuple[str, str], tmp_path: Path
) -> None:
    scenario, checkpoint = inputs
    out = tmp_path / "sweep"
    result = runner.invoke(
        app,
        [
            "sweep",
            scenario,
            "--fusions",
            checkpoint,
            "--frames",
            "2",
            "--dtypes",
            "float16,int8",
            "--sparsities",
            "none",
            "--channels",
            "ideal",
            "--seeds",
            "0",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(out / "sweep.parquet").to_pylist()
    assert [(r["kind"], r["dtype"], r["payload"]) for r in table] == [
        ("fusion", "float16", "map"),
        ("fusion", "int8", "map"),
        ("no_fusion", "int8", "map"),
        ("lossless", "float32", "map"),
    ]
    assert {(r["fusion"], r["vehicles"], r["egos"]) for r in table} == {("tiny", 3, "one")}
    wire = {r["dtype"]: r["mean_wire_bytes"] for r in table if r["sent"]}
    assert wire["int8"] < wire["float16"] < wire["float32"]
    assert table[2]["sent"] == 0 and all(r["fused"] == 2 for r in table if r["sent"])
    for picture in ("sweep.png", "sweep_vehicles.png"):
        assert (out / picture).read_bytes()[:8] == PNG
    assert (out / "sweep.yaml").is_file()
    means = (out / "sweep_means.csv").read_text().splitlines()
    assert len(means) == 5 and means[0].startswith('"kind","setting","channel","vehicles"')
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary == {"interrupted": False, "runs": 4, "runs_planned": 4}


@ray.remote
def _sleepy(i: int) -> int:
    import time

    time.sleep(0.2 if i == 0 else 60.0)
    return i


def test_run_bounded_stops_and_keeps_what_finished(ray_local: None) -> None:
    import time

    from cosim.experiments.ray_tasks import run_bounded

    finished: list[int] = []
    started = time.perf_counter()
    results = run_bounded(
        lambda i: _sleepy.remote(i),
        [0, 1, 2, 3],
        2,
        progress=lambda done, _total: finished.append(done),
        should_stop=lambda: bool(finished),
    )
    assert results == [0, None, None, None]
    assert time.perf_counter() - started < 30


def test_run_with_the_refiner_and_its_flag_errors(tmp_path: Path) -> None:
    from tests.agents.helpers import write_tiny_diffkd_checkpoint

    scenario = write_small_scenario(tmp_path / "small.yaml")
    checkpoint = write_tiny_diffkd_checkpoint(tmp_path / "diffkd.pt", skip_above=1.0)
    out = tmp_path / "run"
    args = [
        "run",
        str(scenario),
        "--checkpoint",
        str(checkpoint),
        "--frames",
        "2",
        "--executor",
        "inprocess",
        "--render",
        "0",
    ]
    result = runner.invoke(app, [*args, "--refine-steps", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "refine (ms / tick" in result.output and "refiner steps asked" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["refine"]["steps"] == 3 and summary["refine"]["mean_steps_run"] == 3.0
    assert summary["refine"]["skip_above"] == 1.0 and summary["refine"]["skipped_fraction"] == 0
    frames = pq.read_table(out / "frames.parquet").to_pylist()
    assert [f["refine_steps"] for f in frames] == [3, 3]
    assert all(0.0 < f["refine_gamma"] < 1.0 for f in frames)
    skipped = runner.invoke(app, [*args, "--refine-skip-above", "0", "--out", str(tmp_path / "s")])
    assert skipped.exit_code == 0, skipped.output
    refine = json.loads((tmp_path / "s" / "summary.json").read_text())["refine"]
    assert refine["skip_above"] == 0.0 and refine["skipped_fraction"] == 1.0
    assert refine["mean_steps_run"] == 0.0 and 0.0 < refine["gamma_mean"] < 1.0
    bad = runner.invoke(app, [*args, "--refine-steps", "11", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2
    words = " ".join(bad.output.split())
    assert "Invalid value for '--refine-steps': Input should be less than or equal to 10" in words


def test_the_committed_default_run_config_is_the_default() -> None:
    """configs/run/default.yaml says what `cosim run` does with no option (it drifted once)."""
    repo = Path(__file__).resolve().parents[2]
    written = RunConfig.from_yaml(repo / "configs" / "run" / "default.yaml").to_dict()
    default = RunConfig().to_dict()
    # the file names the shipped checkpoint relative to the repository, the code absolutely
    assert Path(default.pop("checkpoint")).parts[-3:] == Path(written.pop("checkpoint")).parts
    assert written == default
