"""Vehicle actors spread over the nodes of a (local, two-node) Ray cluster, reached the way
``cosim run --address`` reaches one: the executor connects with the cluster's address."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from cosim.sim.driver import run_simulation
from cosim.sim.executors import Executor, RayExecutor
from cosim.sim.run_config import RunConfig
from tests.agents.helpers import write_small_scenario, write_tiny_checkpoint


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    yield nodes
    nodes.shutdown()


def test_vehicle_actors_land_on_both_nodes(cluster: Cluster, tmp_path: Path) -> None:
    config = RunConfig(
        scenario=str(write_small_scenario(tmp_path / "small.yaml")),
        checkpoint=str(write_tiny_checkpoint(tmp_path / "tiny.pt")),
        frames=2,
        channel="ideal",
        executor="ray",
        address=cluster.address,
        render_frames=0,
        seed=0,  # one neighbour within comm range at seed 0: two fused maps
    )
    placement: dict[int, str] = {}

    def where(tick: int, executor: Executor) -> None:
        if tick == 0:
            assert isinstance(executor, RayExecutor)
            placement.update(executor.node_ids())

    assert not ray.is_initialized()
    result = run_simulation(config, on_tick=where)
    assert not ray.is_initialized()  # the executor disconnected; the cluster lives on
    node_ids = {node.node_id for node in cluster.list_all_nodes()}
    assert len(node_ids) == 2
    assert sorted(placement) == [1, 2, 3]
    assert set(placement.values()) == node_ids  # SPREAD: both nodes host vehicles
    assert result.summary["frames"] == 2 and result.summary["failures"] == []
    assert result.summary["messages"]["fused"] == 2
