"""Voxelization: hand-placed counts, caps, range edges, batching, and a loop reference."""

import numpy as np
import pytest
import torch

from models.grid import GridSpec
from models.voxelize import VoxelizeConfig, voxelize, voxelize_batch

# 4 x 4 pillars of 1 m over [0, 4) x [0, 4), z in [-1, 1).
PILLARS = GridSpec((0.0, 0.0, -1.0, 4.0, 4.0, 1.0), (1.0, 1.0, 2.0), feature_stride=1)


def hand_cloud() -> np.ndarray:
    return np.array(
        [
            [1.5, 2.5, 0.0, 0.1],  # pillar (y=2, x=1): first to appear
            [0.5, 0.5, 0.2, 0.2],  # pillar (0, 0)
            [4.0, 1.0, 0.0, 0.3],  # x == x_max: out (half-open range)
            [1.2, 2.9, -0.5, 0.4],  # pillar (2, 1)
            [-0.1, 1.0, 0.0, 0.5],  # x < x_min: out
            [1.0, 1.0, 1.5, 0.6],  # z >= z_max: out
            [1.9, 2.1, 0.9, 0.7],  # pillar (2, 1)
        ],
        dtype=np.float32,
    )


def test_hand_placed_counts_order_and_padding() -> None:
    cloud = hand_cloud()
    v = voxelize(cloud, PILLARS, VoxelizeConfig(max_points_per_voxel=4, max_voxels=10))
    assert v.num_voxels == 2 and v.batch_size == 1
    assert v.num_points.tolist() == [3, 1]
    assert v.coords.tolist() == [[0, 0, 2, 1], [0, 0, 0, 0]]
    np.testing.assert_array_equal(v.features[0, :3].numpy(), cloud[[0, 3, 6]])
    np.testing.assert_array_equal(v.features[1, :1].numpy(), cloud[[1]])
    assert v.features.shape == (2, 4, 4)
    assert (
        torch.count_nonzero(v.features[0, 3]) == 0 and torch.count_nonzero(v.features[1, 1:]) == 0
    )


def test_max_points_keeps_first_comers() -> None:
    cloud = hand_cloud()
    v = voxelize(cloud, PILLARS, VoxelizeConfig(max_points_per_voxel=2, max_voxels=10))
    assert v.num_points.tolist() == [2, 1]
    np.testing.assert_array_equal(v.features[0].numpy(), cloud[[0, 3]])


def test_max_voxels_drops_later_voxels() -> None:
    v = voxelize(hand_cloud(), PILLARS, VoxelizeConfig(max_points_per_voxel=4, max_voxels=1))
    assert v.coords.tolist() == [[0, 0, 2, 1]] and v.num_points.tolist() == [3]


def test_point_just_below_max_stays_in_last_voxel() -> None:
    below = np.nextafter(np.float32(4.0), np.float32(0.0))
    v = voxelize(np.array([[below, below, 0.0, 1.0]], np.float32), PILLARS)
    assert v.coords.tolist() == [[0, 0, 3, 3]]


def test_z_bins_and_batch_index() -> None:
    grid = GridSpec((0.0, 0.0, -1.0, 4.0, 4.0, 1.0), (1.0, 1.0, 0.5), feature_stride=1)
    a = np.array([[0.5, 0.5, -0.9, 0.0], [0.5, 0.5, 0.6, 0.0]], np.float32)
    b = np.array([[3.5, 2.5, 0.1, 0.0]], np.float32)
    v = voxelize_batch([a, np.zeros((0, 4), np.float32), b], grid)
    assert v.batch_size == 3
    assert v.coords.tolist() == [[0, 0, 0, 0], [0, 3, 0, 0], [2, 2, 2, 3]]


def test_matches_loop_reference_on_random_cloud() -> None:
    rng = np.random.default_rng(3)
    cloud = rng.uniform([-1, -1, -1.5, 0], [5, 5, 1.5, 1], (3000, 4)).astype(np.float32)
    cfg = VoxelizeConfig(max_points_per_voxel=5, max_voxels=12)
    v = voxelize(cloud, PILLARS, cfg)
    slots: dict[tuple[int, int, int], list[int]] = {}
    for n, (x, y, z, _) in enumerate(cloud):
        if not (0 <= x < 4 and 0 <= y < 4 and -1 <= z < 1):
            continue
        key = (int(np.floor(z + 1) // 2), int(np.floor(y)), int(np.floor(x)))
        if key in slots or len(slots) < cfg.max_voxels:
            slots.setdefault(key, []).append(n)
    assert [tuple(c[1:]) for c in v.coords.tolist()] == list(slots)
    for i, rows in enumerate(slots.values()):
        kept = rows[: cfg.max_points_per_voxel]
        assert v.num_points[i] == len(kept)
        np.testing.assert_array_equal(v.features[i, : len(kept)].numpy(), cloud[kept])


def test_config_rejects_unknown_keys() -> None:
    assert VoxelizeConfig.from_dict({"max_voxels": 7}).max_voxels == 7
    with pytest.raises(ValueError, match="max_point_per_voxel"):
        VoxelizeConfig.from_dict({"max_point_per_voxel": 3})
