"""Ray-cast LiDAR: geometry, occlusion, own-body exclusion, ranges, rings, intensity, drop-off."""

from __future__ import annotations

import numpy as np
import pytest

from scenarios.geometry import points_in_boxes, yaw_pose
from scenarios.lidar import LidarSimulator, box_triangles, ray_box_exit
from scenarios.lidar_config import LidarConfig

SMALL = LidarConfig(channels=16, points_per_second=16 * 720 * 10, range=80.0)


def _scan(
    cfg: LidarConfig,
    static: np.ndarray | None,
    boxes: np.ndarray,
    pose: np.ndarray,
    own: int | None = None,
    ground: float | None = 150.0,
    seed: int = 0,
):
    sim = LidarSimulator(cfg, static, ground_half_size=ground)
    return sim.scan(boxes, [pose], [own], [np.random.default_rng(seed)])[0]


def test_wall_at_ten_metres_returns_points_at_x_ten() -> None:
    wall = np.array([[10.5, 0.0, 5.0, 1.0, 40.0, 10.0, 0.0]])  # near face at x = 10
    scan = _scan(SMALL, wall, np.zeros((0, 7)), yaw_pose(0.0, 0.0, 1.9, 0.0))
    p = scan.points
    ahead = p[(np.abs(np.arctan2(p[:, 1], p[:, 0])) < 0.5) & (p[:, 2] > -1.0)]
    assert len(ahead) > 100
    np.testing.assert_allclose(ahead[:, 0], 10.0, atol=1e-3)
    assert p.dtype == np.float32 and p.shape[1] == 4


def test_sensor_frame_follows_the_pose_yaw() -> None:
    """Same wall, sensor turned 90 degrees left: the wall is now at y = -10 in the sensor frame."""
    wall = np.array([[10.5, 0.0, 5.0, 1.0, 40.0, 10.0, 0.0]])
    p = _scan(SMALL, wall, np.zeros((0, 7)), yaw_pose(0.0, 0.0, 1.9, np.pi / 2)).points
    right = p[(np.abs(p[:, 0]) < 1.0) & (p[:, 1] < 0) & (p[:, 2] > -1.0)]
    np.testing.assert_allclose(right[:, 1], -10.0, atol=1e-3)


def test_box_behind_wall_gets_no_hits_visible_box_does() -> None:
    wall = np.array([[10.5, 0.0, 3.0, 1.0, 12.0, 6.0, 0.0]])
    cars = np.array(
        [
            [20.0, 0.0, 0.75, 4.5, 1.8, 1.5, 0.0],  # straight behind the wall
            [0.0, -20.0, 0.75, 4.5, 1.8, 1.5, 0.3],  # in the open
        ]
    )
    scan = _scan(SMALL, wall, cars, yaw_pose(0.0, 0.0, 1.9, 0.0))
    assert scan.hits[0] == 0
    assert scan.hits[1] > 5
    # and without the wall the first car is seen
    assert _scan(SMALL, None, cars, yaw_pose(0.0, 0.0, 1.9, 0.0)).hits[0] > 5


def test_hits_match_points_inside_the_boxes() -> None:
    cars = np.array([[12.0, 3.0, 0.75, 4.5, 1.8, 1.5, 0.2], [-8.0, -6.0, 1.05, 5.2, 2.0, 2.1, 1.0]])
    pose = yaw_pose(1.0, 2.0, 1.9, 0.4)
    scan = _scan(SMALL, None, cars, pose, ground=None)
    world = scan.points[:, :3].astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]
    grown = cars.copy()
    grown[:, 3:6] += 0.01
    inside = points_in_boxes(world, grown).sum(axis=0)
    np.testing.assert_array_equal(inside, scan.hits)
    assert scan.hits.sum() == len(scan.points)  # no ground, nothing else to hit


@pytest.mark.parametrize(("height", "sensor_yaw"), [(1.5, 0.0), (2.1, 0.0), (3.5, 0.0), (2.1, 0.4)])
def test_own_body_returns_no_points(height: float, sensor_yaw: float) -> None:
    """LiDAR above the roof and inside the body; aligned with the box or turned against it."""
    own = np.array(
        [[0.0, 0.0, height / 2, 5.0, 2.0, height, 0.0], [0.0, 8.0, 0.75, 4.5, 1.8, 1.5, 0.0]]
    )
    pose = yaw_pose(0.0, 0.0, 1.9, sensor_yaw)
    scan = _scan(SMALL, None, own, pose, own=0)
    assert scan.hits[0] == 0 and scan.hits[1] > 0
    world = scan.points[:, :3].astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]
    assert not points_in_boxes(world, own[:1]).any()
    # the ground around the vehicle is still seen
    assert (np.abs(scan.points[:, 2] + 1.9) < 1e-3).sum() > 1000
    assert _scan(SMALL, None, own, pose, own=None).hits[0] > 0  # without exclusion it is hit


def test_no_point_beyond_range_and_elevations_within_fov() -> None:
    cfg = LidarConfig(
        channels=8,
        points_per_second=8 * 360 * 10,
        range=30.0,
        noise_stddev=0.05,
        upper_fov=10.0,
        lower_fov=-30.0,
    )
    walls = np.array([[0.0, 0.0, 5.0, 60.0, 60.0, 10.0, 0.0]])  # a room, sides 30 m away
    p = _scan(cfg, walls, np.zeros((0, 7)), yaw_pose(0.0, 0.0, 1.9, 0.0), ground=500.0).points
    r = np.linalg.norm(p[:, :3], axis=1)
    assert len(p) > 1000 and r.max() <= 30.0
    elevation = np.degrees(np.arcsin(p[:, 2] / r))
    assert elevation.min() >= -30.0 - 0.5 and elevation.max() <= 10.0 + 0.5


def test_every_ring_returns_one_point_per_azimuth_in_a_closed_room() -> None:
    cfg = LidarConfig(channels=32, points_per_second=32 * 500 * 10, range=100.0)
    room = np.array([[0.0, 0.0, 5.0, 40.0, 30.0, 20.0, 0.0]])
    p = _scan(cfg, room, np.zeros((0, 7)), yaw_pose(0.0, 0.0, 1.9, 0.0)).points
    assert len(p) == 32 * 500
    rings = cfg.ring_of(p)
    np.testing.assert_array_equal(np.bincount(rings, minlength=32), np.full(32, 500))


def test_intensity_is_atmospheric_attenuation_of_distance() -> None:
    wall = np.array([[20.5, 0.0, 5.0, 1.0, 40.0, 10.0, 0.0]])
    p = _scan(SMALL, wall, np.zeros((0, 7)), yaw_pose(0.0, 0.0, 1.9, 0.0), ground=None).points
    d = np.linalg.norm(p[:, :3], axis=1)
    np.testing.assert_allclose(p[:, 3], np.exp(-0.004 * d), rtol=1e-5)
    assert p[:, 3].max() <= np.exp(-0.004 * 20.0) + 1e-6  # nearest point is 20 m away
    assert p[:, 3].min() >= np.exp(-0.004 * 30.0)  # farthest corner within 30 m


def test_general_dropoff_removes_that_fraction() -> None:
    room = np.array([[0.0, 0.0, 5.0, 40.0, 30.0, 20.0, 0.0]])
    cfg = LidarConfig(channels=16, points_per_second=16 * 720 * 10, dropoff_general_rate=0.3)
    p = _scan(cfg, room, np.zeros((0, 7)), yaw_pose(0.0, 0.0, 1.9, 0.0)).points
    assert abs(len(p) / (16 * 720) - 0.7) < 0.02


def test_ray_box_exit_distances() -> None:
    box = np.array([0.0, 0.0, 1.0, 4.0, 2.0, 2.0, 0.0])
    dirs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(ray_box_exit(np.array([0.0, 0.0, 1.0]), dirs, box), [2, 1, 1])
    outside = ray_box_exit(np.array([-5.0, 0.0, 1.0]), dirs, box)
    np.testing.assert_allclose(outside, [7.0, 0.0, 0.0])


def test_box_triangles_span_the_box() -> None:
    tris = box_triangles(np.array([[1.0, 2.0, 0.75, 4.0, 2.0, 1.5, np.pi / 2]]))
    assert tris.shape == (12, 3, 3)
    v = tris.reshape(-1, 3)
    np.testing.assert_allclose(v.min(0), [0.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(v.max(0), [2.0, 4.0, 1.5], atol=1e-6)
