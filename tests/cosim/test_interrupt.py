"""SIGINT/SIGTERM during a run: the complete ticks are kept and written, ``summary.json`` says
``"interrupted": true``, the command exits 130; a second signal abandons the tick under way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cosim.common.interrupts import graceful_stop
from cosim.sim.driver import run_simulation
from cosim.sim.outputs import write_run
from cosim.sim.run_config import RunConfig
from tests.agents.helpers import write_small_scenario, write_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    root = tmp_path_factory.mktemp("interrupt")
    return RunConfig(
        scenario=str(write_small_scenario(root / "small.yaml", frames=2.0)),
        checkpoint=str(write_tiny_checkpoint(root / "tiny.pt")),
        frames=8,
        channel="ideal",
        executor="inprocess",
        render_frames=0,
    )


def _signal_at(tick: int, times: int = 1):
    def hook(t: int, _executor: object) -> None:
        if t == tick:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)

    return hook


def test_first_signal_finishes_the_tick_and_stops(base: RunConfig, tmp_path: Path) -> None:
    with graceful_stop() as stop:
        result = run_simulation(base, on_tick=_signal_at(2), should_stop=stop)
    assert stop.name == "SIGINT"
    s = result.summary
    assert s["interrupted"] is True and s["frames"] == 3 and s["frames_planned"] == 8
    assert result.frames.column("tick").to_pylist() == [0, 1, 2]
    assert max(result.messages.column("t_send").to_pylist()) <= 0.2 + 1e-9
    out = write_run(result, tmp_path / "run")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["frames"] == 3
    assert pq.read_table(out / "frames.parquet").num_rows == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_second_signal_abandons_the_tick(base: RunConfig) -> None:
    with graceful_stop() as stop:
        result = run_simulation(base, on_tick=_signal_at(2, times=2), should_stop=stop)
    assert result.summary["interrupted"] is True and result.summary["frames"] == 2
    assert set(result.frames.column("tick").to_pylist()) == {0, 1}
    assert set(result.timings.column("tick").to_pylist()) <= {0, 1}
    clean = run_simulation(base.replace(frames=2))
    for key in ("ap@0.3", "ap@0.5", "ap@0.7"):
        assert result.summary[key] == pytest.approx(clean.summary[key], nan_ok=True)
    assert clean.summary["interrupted"] is False


CLI_WITH_SIGTERM = r"""
import os, signal, sys
import cosim.sim.driver as driver
from cosim.cli.app import app

step = driver.Simulation.step
def step_then_sigterm(self, tick, frame, render=False):
    step(self, tick, frame, render)
    if tick == 1:
        os.kill(os.getpid(), signal.SIGTERM)
driver.Simulation.step = step_then_sigterm
app(sys.argv[1:], prog_name="cosim")
"""


def test_cosim_run_exits_130_with_a_readable_folder(base: RunConfig, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CLI_WITH_SIGTERM,
            "run",
            base.scenario,
            "--checkpoint",
            base.checkpoint,
            "--executor",
            "inprocess",
            "--frames",
            "8",
            "--channel",
            "ideal",
            "--render",
            "0",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 130, done.stdout[-2000:] + done.stderr[-2000:]
    assert "interrupted (SIGTERM): wrote the 2 complete tick(s) of 8 to" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["frames"] == 2
    assert RunConfig.from_yaml(out / "config.yaml").frames == 8
    for name in ("messages", "receptions", "detections", "frames", "timings"):
        pq.read_table(out / f"{name}.parquet")
