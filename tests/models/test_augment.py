"""Flip / rotate / scale keep every agent, transform and box consistent with each other."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from models.augment import FLIP_Y, Augmentation, flip_y, rotate_z, scale
from models.batch import CooperativeSample
from scenarios.geometry import points_in_boxes, points_to_frame, yaw_pose

Op = Callable[[CooperativeSample], CooperativeSample]


def _sample(seed: int = 0) -> CooperativeSample:
    """Ego at the origin, two neighbours; three boxes, each holding points of every agent."""
    rng = np.random.default_rng(seed)
    boxes = np.array(
        [
            [12.0, 4.0, -0.8, 4.5, 1.9, 1.6, 0.4],
            [-8.0, -10.0, -0.7, 6.0, 2.4, 2.5, -2.0],
            [25.0, -3.0, -0.9, 4.2, 1.8, 1.5, 3.0],
        ],
        dtype=np.float32,
    )
    transforms = np.stack([yaw_pose(20.0, 5.0, 0.1, 0.7), yaw_pose(-15.0, 12.0, -0.2, -2.5)])

    def cloud(to_ego: np.ndarray) -> np.ndarray:
        """Background points plus points well inside each box, in the agent's own frame."""
        inside = []
        for box in boxes:
            local = rng.uniform(-0.4, 0.4, (30, 3)) * box[3:6]
            c, s = math.cos(box[6]), math.sin(box[6])
            xy = local[:, :2] @ np.array([[c, s], [-s, c]]) + box[:2]
            inside.append(np.column_stack([xy, local[:, 2] + box[2]]))
        ego_xyz = np.vstack([*inside, rng.uniform(-40, 40, (300, 3)) * (1, 1, 0.05)])
        own = points_to_frame(ego_xyz, np.linalg.inv(to_ego))
        return np.column_stack([own, rng.uniform(0, 1, len(own))]).astype(np.float32)

    return CooperativeSample(
        ego_points=cloud(np.eye(4)),
        neighbour_points=tuple(cloud(t) for t in transforms),
        neighbour_to_ego=transforms,
        gt_boxes=boxes,
    )


def _mapped(sample: CooperativeSample) -> list[np.ndarray]:
    """Every agent's points in the ego frame, ego first."""
    return [sample.ego_points] + [
        points_to_frame(p, t)
        for p, t in zip(sample.neighbour_points, sample.neighbour_to_ego, strict=True)
    ]


THETA, FACTOR = 0.6, 1.04
ROT = np.eye(4)
ROT[:2, :2] = [[math.cos(THETA), -math.sin(THETA)], [math.sin(THETA), math.cos(THETA)]]
SCALE = np.diag([FACTOR, FACTOR, FACTOR, 1.0])
CASES: dict[str, tuple[Op, np.ndarray]] = {
    "flip": (flip_y, FLIP_Y),
    "rotate": (lambda s: rotate_z(s, THETA), ROT),
    "scale": (lambda s: scale(s, FACTOR), SCALE),
    "all": (lambda s: scale(rotate_z(flip_y(s), THETA), FACTOR), SCALE @ ROT @ FLIP_Y),
}


@pytest.mark.parametrize("name", list(CASES))
def test_neighbours_map_to_the_augmented_ego_frame(name: str) -> None:
    op, ego_map = CASES[name]
    before = _sample()
    after = op(before)
    for old, new in zip(_mapped(before), _mapped(after), strict=True):
        np.testing.assert_allclose(new, points_to_frame(old, ego_map), atol=2e-4)
        assert np.array_equal(new[:, 3], old[:, 3])  # intensity untouched
    rotations = after.neighbour_to_ego[:, :3, :3]
    np.testing.assert_allclose(
        rotations @ rotations.transpose(0, 2, 1), np.stack([np.eye(3)] * 2), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0)  # still proper rotations
    np.testing.assert_allclose(after.neighbour_to_ego[:, 3], [[0, 0, 0, 1]] * 2)


@pytest.mark.parametrize("name", list(CASES))
def test_boxes_hold_the_same_points(name: str) -> None:
    op, ego_map = CASES[name]
    before = _sample()
    after = op(before)
    for old, new in zip(_mapped(before), _mapped(after), strict=True):
        inside = points_in_boxes(old, before.gt_boxes)
        assert inside.sum() >= 90  # every box holds 30 points of each agent
        assert np.array_equal(points_in_boxes(new, after.gt_boxes), inside)
    corners = after.gt_boxes[:, :3].astype(np.float64)
    np.testing.assert_allclose(
        corners, points_to_frame(before.gt_boxes[:, :3], ego_map)[:, :3], atol=1e-4
    )
    assert np.all(np.abs(after.gt_boxes[:, 6]) <= math.pi)


def test_flip_and_rotate_leave_what_they_should() -> None:
    before = _sample()
    rotated = rotate_z(before, THETA)
    for old, new in zip(before.neighbour_points, rotated.neighbour_points, strict=True):
        assert new is old  # neighbour clouds stay in their own frames
    flipped = flip_y(flip_y(before))
    np.testing.assert_array_equal(flipped.ego_points, before.ego_points)
    np.testing.assert_allclose(flipped.neighbour_to_ego, before.neighbour_to_ego)
    np.testing.assert_allclose(flipped.gt_boxes, before.gt_boxes, atol=1e-6)
    np.testing.assert_allclose(
        scale(before, 1.05).gt_boxes[:, 3:6], before.gt_boxes[:, 3:6] * 1.05, rtol=1e-6
    )
    with pytest.raises(ValueError, match="scale factor"):
        scale(before, 0.0)


def test_no_neighbours_and_no_boxes() -> None:
    empty = CooperativeSample(
        np.zeros((0, 4), np.float32), (), np.zeros((0, 4, 4)), np.zeros((0, 7), np.float32)
    )
    out = Augmentation(flip_prob=1.0)(empty, np.random.default_rng(0))
    assert out.neighbour_to_ego.shape == (0, 4, 4) and out.gt_boxes.shape == (0, 7)


def test_augmentation_is_seeded_and_consistent() -> None:
    augment = Augmentation()
    sample = _sample()
    a = augment(sample, np.random.default_rng(11))
    b = augment(sample, np.random.default_rng(11))
    c = augment(sample, np.random.default_rng(12))
    for x, y in zip(_mapped(a), _mapped(b), strict=True):
        assert np.array_equal(x, y)
    assert not np.array_equal(a.ego_points, c.ego_points)
    for out in (a, c):
        for old, new in zip(_mapped(sample), _mapped(out), strict=True):
            inside = points_in_boxes(old, sample.gt_boxes)
            assert np.array_equal(points_in_boxes(new, out.gt_boxes), inside)
    with pytest.raises(ValueError, match="flip_prob"):
        Augmentation(flip_prob=2.0)
    identity = Augmentation(flip_prob=0.0, rotation=(0.0, 0.0), scale=(1.0, 1.0))
    assert np.array_equal(identity(sample, np.random.default_rng(0)).ego_points, sample.ego_points)
