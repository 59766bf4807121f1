"""The rules that cut a CooperativeSample from a Frame, and the dataset's (frame, ego) pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cosim.training.dataset_build import build_dataset
from models.dataset import CooperativeDataset, collate_samples, sample_from_frame
from models.grid import CPU_GRID
from scenarios.frame import AgentObservation, Frame, ObjectSet
from scenarios.geometry import points_to_frame, yaw_pose
from tests.scenario_files import TINY_TRAFFIC, write_scenario


def _frame(with_hits: bool = True) -> Frame:
    """Ego 1 at the origin; neighbours 2 (10 m), 5 (20 m), 3 (30 m) and 4 (100 m, out of range).

    Objects: 1 is the ego's own car; 10 is seen by 2 only; 11 by 4 only; 12 lies outside the CPU
    grid (x = 60 m); 13 is seen by 3 only; 14 by nobody; 15 by the ego, 2 points.
    """
    rng = np.random.default_rng(0)
    places = {
        1: (0.0, 0.0, 0.0),
        2: (10.0, 0.0, 0.5),
        5: (0.0, 20.0, 1.0),
        3: (-30.0, 0.0, 2.0),
        4: (100.0, 0.0, 0.0),
    }
    agents = {
        a: AgentObservation(a, yaw_pose(x, y, 1.9, yaw), rng.normal(0, 5, (50 + a, 4)))
        for a, (x, y, yaw) in places.items()
    }
    ids = np.array([1, 10, 11, 12, 13, 14, 15])
    boxes = np.zeros((7, 7))
    boxes[:, 0] = [0.0, 15.0, 95.0, 60.0, -25.0, 5.0, 8.0]
    boxes[:, 1] = [0.0, 3.0, 4.0, 0.0, -5.0, 12.0, -6.0]
    boxes[:, 3:6] = (4.5, 1.9, 1.6)
    boxes[:, 6] = 0.3
    hits = {a: np.zeros(7, np.int32) for a in agents}
    hits[2][1], hits[4][2], hits[1][3], hits[3][4], hits[1][6] = 5, 9, 40, 3, 2
    objects = ObjectSet(ids, boxes, (), hits if with_hits else {})
    return Frame(0.5, 5, agents, objects, ego_id=1)


def test_neighbours_in_range_nearest_first_capped() -> None:
    frame = _frame()
    sample = sample_from_frame(frame, 1, CPU_GRID, max_neighbours=4, comm_range=70.0)
    assert sample.neighbour_ids == (2, 5, 3)  # 4 is 100 m away
    capped = sample_from_frame(frame, 1, CPU_GRID, max_neighbours=2, comm_range=70.0)
    assert capped.neighbour_ids == (2, 5)
    assert sample_from_frame(frame, 1, CPU_GRID, 4, comm_range=15.0).neighbour_ids == (2,)
    for k, agent_id in enumerate(sample.neighbour_ids):
        assert np.array_equal(sample.neighbour_points[k], frame.agents[agent_id].points)
        assert np.allclose(sample.neighbour_to_ego[k], frame.transform(agent_id, 1))
        mapped = points_to_frame(sample.neighbour_points[k], sample.neighbour_to_ego[k])
        assert np.allclose(mapped, frame.points_in(agent_id), atol=1e-4)
    assert np.array_equal(sample.ego_points, frame.agents[1].points)
    assert (sample.ego_id, sample.frame_index) == (1, 5)
    alone = sample_from_frame(frame, 1, CPU_GRID, max_neighbours=0)
    assert alone.num_neighbours == 0 and alone.neighbour_to_ego.shape == (0, 4, 4)


def test_ground_truth_grid_visibility_and_ego_rules() -> None:
    frame = _frame()
    sample = sample_from_frame(frame, 1, CPU_GRID, max_neighbours=4, min_points=1)
    # 1: own car; 11: only agent 4 (not used) saw it; 12: outside the grid; 14: nobody saw it.
    assert sample.gt_ids.tolist() == [10, 13, 15]
    _, expected = frame.objects_in(1, exclude_self=False)
    assert np.array_equal(sample.gt_boxes, expected[[1, 4, 6]])
    assert sample.gt_boxes.dtype == np.float32
    # Only the ego and 2 are used: 13 (seen by 3) goes.
    assert sample_from_frame(frame, 1, CPU_GRID, 1).gt_ids.tolist() == [10, 15]
    # Hits are summed over the agents used: 15 has 2 points, 10 has 5.
    assert sample_from_frame(frame, 1, CPU_GRID, 4, min_points=3).gt_ids.tolist() == [10, 13]
    assert sample_from_frame(frame, 1, CPU_GRID, 4, min_points=0).gt_ids.tolist() == [
        10,
        13,
        14,
        15,
    ]
    # Without hit counts (OPV2V) every object in the grid but the ego's own is kept.
    blind = sample_from_frame(_frame(with_hits=False), 1, CPU_GRID, 4, min_points=5)
    assert blind.gt_ids.tolist() == [10, 13, 14, 15]


def test_another_ego_excludes_its_own_car_and_uses_its_own_neighbours() -> None:
    frame = _frame()
    sample = sample_from_frame(frame, 2, CPU_GRID, max_neighbours=4, min_points=1)
    assert sample.neighbour_ids == (1, 5, 3)  # from (10, 0): 10 m, 22.4 m, 40 m; 4 is 90 m
    # From agent 2 (yaw 0.5), object 12 at world (60, 0) is 43.9 m ahead: in the grid now, and
    # agent 1 saw it. 1 (the old ego's car) had no hits; 2 is the new ego's own car.
    assert sample.gt_ids.tolist() == [10, 12, 13, 15]
    _, boxes = frame.objects_in(2, exclude_self=False)
    assert np.array_equal(sample.gt_boxes, boxes[[1, 3, 4, 6]])


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models_ds")
    write_scenario(root / "tiny.yaml", name="intersection", duration_s=10.0, traffic=TINY_TRAFFIC)
    build_dataset(root / "tiny.yaml", 3, root / "data", seeds=[0, 1], frames_per_shard=2)
    return root / "data"


def test_dataset_length_and_items(dataset_dir: Path) -> None:
    first = CooperativeDataset(dataset_dir, CPU_GRID, egos="first")
    every = CooperativeDataset(dataset_dir, CPU_GRID, egos="all", max_neighbours=1)
    assert len(first) == 6 and len(every) == 18
    assert [every[k].ego_id for k in range(3)] == [1, 2, 3]
    frame = first.store.frame(4)
    expected = sample_from_frame(frame, 1, CPU_GRID, 4, 70.0, 1, source="intersection/1")
    got = first[4]
    assert got.source == "intersection/1" and got.frame_index == 1
    assert np.array_equal(got.gt_boxes, expected.gt_boxes)
    assert got.neighbour_ids == expected.neighbour_ids
    assert all(every[k].num_neighbours <= 1 for k in range(3))
    loader = torch.utils.data.DataLoader(first, batch_size=4, collate_fn=collate_samples)
    batches = list(loader)
    assert [len(b) for b in batches] == [4, 2]
    with pytest.raises(ValueError, match="egos"):
        CooperativeDataset(dataset_dir, CPU_GRID, egos="some")  # type: ignore[arg-type]


def test_dataset_augment_is_seeded_per_item_and_epoch(dataset_dir: Path) -> None:
    def jitter(sample, rng):  # type: ignore[no-untyped-def]
        return sample.__class__(
            **{
                **sample.__dict__,
                "ego_points": sample.ego_points + rng.normal(size=1).astype(np.float32),
            }
        )

    a = CooperativeDataset(dataset_dir, CPU_GRID, augment=jitter, seed=3)
    b = CooperativeDataset(dataset_dir, CPU_GRID, augment=jitter, seed=3)
    assert np.array_equal(a[2].ego_points, b[2].ego_points)
    b.set_epoch(1)
    assert not np.array_equal(a[2].ego_points, b[2].ego_points)
