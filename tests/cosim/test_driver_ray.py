"""The driver on Ray: same detections as in process, and a vehicle actor killed mid-run."""

import time
from collections.abc import Iterator

import pytest
import ray

from cosim.sim.driver import run_simulation
from cosim.sim.executors import Executor, RayExecutor
from cosim.sim.run_config import RunConfig
from tests.agents.helpers import (
    write_small_scenario,
    write_tiny_checkpoint,
    write_tiny_diffkd_checkpoint,
)

NEIGHBOUR = 3  # the vehicle within the ego's comm range in the small scenario


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    root = tmp_path_factory.mktemp("driver_ray")
    return RunConfig(
        scenario=str(write_small_scenario(root / "small.yaml")),
        checkpoint=str(write_tiny_checkpoint(root / "tiny.pt")),
        frames=5,
        channel="dsrc",
        dtype="int8",
        sparsity={"topk": 0.5},
        pose_error=0.2,
        corruption="fog",
        severity=2,
        executor="ray",
        render_frames=0,
    )


def test_ray_and_in_process_give_the_same_results(ray_local: None, base: RunConfig) -> None:
    on_ray = run_simulation(base)
    in_process = run_simulation(base.replace(executor="inprocess"))
    assert on_ray.summary["executor"] == "ray" and in_process.summary["executor"] == "inprocess"
    assert on_ray.detections.num_rows > 0
    assert on_ray.detections.equals(in_process.detections)
    assert on_ray.messages.equals(in_process.messages)
    assert on_ray.receptions.equals(in_process.receptions)
    for key in ("ap@0.3", "ap@0.5", "ap@0.7"):
        assert on_ray.summary[key] == pytest.approx(in_process.summary[key], nan_ok=True)


def test_ray_and_in_process_agree_with_refinement_on(
    ray_local: None, base: RunConfig, tmp_path_factory: pytest.TempPathFactory
) -> None:
    checkpoint = write_tiny_diffkd_checkpoint(tmp_path_factory.mktemp("dk") / "diffkd.pt")
    config = base.replace(checkpoint=str(checkpoint), refine_steps=2, refine_neighbours=True)
    on_ray = run_simulation(config)
    in_process = run_simulation(config.replace(executor="inprocess"))
    assert on_ray.detections.num_rows > 0
    assert on_ray.detections.equals(in_process.detections)
    assert on_ray.frames.equals(in_process.frames)
    refine = on_ray.summary["refine"]
    assert refine["steps"] == 2 and refine["refine_neighbours"] is True
    assert refine["mean_steps_run"] == 2.0 and refine["skipped_fraction"] == 0.0
    assert 0.0 < refine["gamma_min"] <= refine["gamma_max"] < 1.0
    assert on_ray.summary["stage_s_per_tick"]["refine"] > 0
    off = run_simulation(config.replace(executor="inprocess", refine_steps=0))
    assert off.summary["refine"]["mean_steps_run"] == 0.0
    assert not off.detections.equals(in_process.detections)


def _messages_from(result_log: list[dict], sender: int, after: float) -> int:
    return sum(1 for r in result_log if r["sender"] == sender and r["t_send"] > after)


def test_a_killed_vehicle_leaves_the_run(ray_local: None, base: RunConfig) -> None:
    def kill(tick: int, executor: Executor) -> None:
        if tick == 2:
            assert isinstance(executor, RayExecutor)
            ray.kill(executor.actors[NEIGHBOUR], no_restart=True)

    result = run_simulation(base.replace(max_restarts=0), on_tick=kill)
    s = result.summary
    assert s["frames"] == 5 and result.frames.num_rows == 5
    assert all(result.frames.column("ego_ok").to_pylist())
    assert s["failed_vehicles"] == [NEIGHBOUR] and s["lost_vehicles"] == [NEIGHBOUR]
    assert s["failures"][0]["tick"] == 2 and s["failures"][0]["stage"] == "sense"
    log = result.messages.to_pylist()
    assert _messages_from(log, NEIGHBOUR, after=-1.0) == 2  # ticks 0 and 1 only
    assert _messages_from(log, 2, after=0.15) == 3  # the other vehicle goes on


def test_a_killed_vehicle_is_restarted(ray_local: None, base: RunConfig) -> None:
    def kill(tick: int, executor: Executor) -> None:
        assert isinstance(executor, RayExecutor)
        if tick == 1:
            ray.kill(executor.actors[NEIGHBOUR], no_restart=False)
        if tick == 3:  # wait for Ray to bring it back (calls fail fast while it restarts)
            deadline = time.monotonic() + 60
            while True:
                try:
                    ray.get(executor.actors[NEIGHBOUR].node_id.remote(), timeout=60)
                    break
                except ray.exceptions.ActorUnavailableError:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)

    result = run_simulation(base.replace(max_restarts=1), on_tick=kill)
    s = result.summary
    assert s["lost_vehicles"] == [] and s["failed_vehicles"] == [NEIGHBOUR]
    assert {e["tick"] for e in s["failures"]} <= {1, 2}
    assert _messages_from(result.messages.to_pylist(), NEIGHBOUR, after=0.25) == 2
