"""Pose conversion and transforms against hand-computed matrices."""

import numpy as np
import pytest

from scenarios.geometry import (
    box_corners_bev,
    boxes_to_frame,
    matrix_to_pose,
    points_in_boxes,
    points_to_frame,
    pose_to_matrix,
    relative_transform,
    wrap_angle,
)


def test_yaw_90_is_rotation_about_z() -> None:
    matrix = pose_to_matrix([1.0, 2.0, 3.0, 0.0, 90.0, 0.0])
    expected = np.array(
        [[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 0.0, 1.0]]
    )
    np.testing.assert_allclose(matrix, expected, atol=1e-12)


def test_roll_90_follows_opencood_left_handed_formula() -> None:
    # cy=1, sy=0, cr=0, sr=1, cp=1, sp=0 in x_to_world's matrix.
    matrix = pose_to_matrix([0, 0, 0, 90.0, 0, 0])
    np.testing.assert_allclose(matrix[:3, :3], [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-12)


def test_pitch_30_by_hand() -> None:
    c, s = np.sqrt(3) / 2, 0.5
    matrix = pose_to_matrix([0, 0, 0, 0, 0, 30.0])
    np.testing.assert_allclose(matrix[:3, :3], [[c, 0, -s], [0, 1, 0], [s, 0, c]], atol=1e-12)


@pytest.mark.parametrize(
    "pose",
    [
        [0, 0, 0, 0, 0, 0],
        [12.5, -3.25, 1.9, 1.5, -172.0, 2.5],
        [-100.0, 250.0, 0.3, -4.0, 45.0, -7.5],
        [5.0, 5.0, 5.0, 10.0, 179.0, 20.0],
    ],
)
def test_pose_round_trip(pose: list[float]) -> None:
    np.testing.assert_allclose(matrix_to_pose(pose_to_matrix(pose)), pose, atol=1e-9)


def test_matrix_to_pose_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="4x4"):
        matrix_to_pose(np.eye(3))


def test_relative_transform_and_point_projection() -> None:
    ego = pose_to_matrix([10.0, 0.0, 0.0, 0.0, 90.0, 0.0])
    other = pose_to_matrix([10.0, 5.0, 0.0, 0.0, 90.0, 0.0])
    other_to_ego = relative_transform(other, ego)
    # The other sensor sits 5 m ahead of the ego (the ego faces +y in the world).
    origin = np.array([[0.0, 0.0, 0.0, 0.7]], dtype=np.float32)
    np.testing.assert_allclose(
        points_to_frame(origin, other_to_ego), [[5.0, 0.0, 0.0, 0.7]], atol=1e-6
    )


def test_box_projection_known_geometry() -> None:
    world_to_ego = np.linalg.inv(pose_to_matrix([10.0, 0.0, 0.0, 0.0, 90.0, 0.0]))
    world_box = np.array([[10.0, 5.0, 0.8, 4.0, 2.0, 1.5, np.pi / 2]])
    ego_box = boxes_to_frame(world_box, world_to_ego)
    np.testing.assert_allclose(ego_box, [[5.0, 0.0, 0.8, 4.0, 2.0, 1.5, 0.0]], atol=1e-6)
    assert ego_box.dtype == np.float32


def test_wrap_angle_range() -> None:
    wrapped = wrap_angle([np.pi, -np.pi, 3 * np.pi / 2, 0.25])
    np.testing.assert_allclose(wrapped, [-np.pi, -np.pi, -np.pi / 2, 0.25])


def test_corners_and_point_in_box() -> None:
    box = np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 2.0, np.pi / 2]])
    corners = box_corners_bev(box)[0]
    np.testing.assert_allclose(corners[0], [-1.0, 2.0], atol=1e-12)
    points = np.array([[0.0, 1.9, 0.0], [1.9, 0.0, 0.0], [0.0, 0.0, 1.5]])
    np.testing.assert_array_equal(points_in_boxes(points, box)[:, 0], [True, False, False])
