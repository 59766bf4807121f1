"""``cosim run`` replays an OPV2V folder written by the project's own writer: the run's seed
(default 0 included) drives the channel and pose noise only, never the recorded frames."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cosim.cli.app import app
from cosim.sim.driver import run_simulation
from cosim.sim.run_config import RunConfig
from scenarios.opv2v_writer import write_opv2v
from scenarios.source import is_recorded_source, open_source
from tests.agents.helpers import write_small_scenario, write_tiny_checkpoint


@pytest.fixture(scope="module")
def folder_and_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("opv2v_run")
    source = open_source(write_small_scenario(root / "small.yaml"), num_frames=3)
    folder = root / "opv2v" / "test" / "small_seed0"
    write_opv2v(list(source.frames(0, 3)), folder)
    return folder, write_tiny_checkpoint(root / "tiny.pt")


def test_recorded_source_detection(folder_and_model: tuple[Path, Path]) -> None:
    folder, _ = folder_and_model
    assert is_recorded_source(folder) and not is_recorded_source("intersection")


def test_run_replays_a_written_folder_with_the_default_seed(
    folder_and_model: tuple[Path, Path],
) -> None:
    folder, model = folder_and_model
    config = RunConfig(
        scenario=str(folder),
        checkpoint=str(model),
        channel="ideal",
        executor="inprocess",
        render_frames=0,
    )
    assert config.seed == 3 and config.frames == 20  # the defaults that used to be refused
    result = run_simulation(config)
    assert result.summary["frames"] == 3 == result.frames.num_rows
    assert result.summary["messages"]["delivered"] > 0


def test_cli_run_on_a_folder_exits_zero(
    folder_and_model: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, model = folder_and_model
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "run",
            str(folder),
            "--checkpoint",
            str(model),
            "--executor",
            "inprocess",
            "--channel",
            "ideal",
            "--render",
            "0",
            "--seed",
            "3",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (out / "summary.json").is_file() and (out / "messages.parquet").is_file()


def test_agents_flag_is_still_refused_for_a_folder(folder_and_model: tuple[Path, Path]) -> None:
    folder, model = folder_and_model
    res = CliRunner().invoke(
        app,
        [
            "run",
            str(folder),
            "--checkpoint",
            str(model),
            "--executor",
            "inprocess",
            "--agents",
            "2",
        ],
    )
    assert res.exit_code == 2
    assert "--seed and --agents apply to synthetic scenarios only" in res.output
