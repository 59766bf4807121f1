"""Recall by visibility class on a hand-built scene whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cosim.training.visibility import VisibilityRecall, visibility_classes
from models.batch import CooperativeSample
from scenarios.geometry import points_to_frame, yaw_pose

# A: seen by the ego; B: only by the neighbour; C: 3 points from each, i.e. sparse.
GT = np.array(
    [
        [10.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.0],
        [-20.0, 10.0, -1.0, 4.0, 2.0, 1.5, math.pi / 2],
        [30.0, -15.0, -1.0, 4.0, 2.0, 1.5, 0.0],
    ],
    np.float32,
)
NEIGHBOUR_TO_EGO = yaw_pose(-25.0, 5.0, 0.0, math.pi / 2)


def points_at(centre: np.ndarray, n: int) -> np.ndarray:
    """``n`` points spread inside a 1 m cube at ``centre`` (x, y, z), intensity 0.5."""
    offsets = np.linspace(-0.4, 0.4, n)[:, None] * np.ones(3)
    return np.c_[centre + offsets, np.full(n, 0.5)].astype(np.float32)


def scene() -> CooperativeSample:
    ego = np.concatenate([points_at(GT[0, :3], 10), points_at(GT[2, :3], 3)])
    in_ego_frame = np.concatenate([points_at(GT[1, :3], 8), points_at(GT[2, :3], 3)])
    neighbour = points_to_frame(in_ego_frame, np.linalg.inv(NEIGHBOUR_TO_EGO))
    return CooperativeSample(ego, (neighbour,), NEIGHBOUR_TO_EGO[None], GT)


def test_classes_follow_the_points_each_agent_has_in_each_box() -> None:
    np.testing.assert_array_equal(visibility_classes(scene()), [0, 1, 2])
    np.testing.assert_array_equal(visibility_classes(scene(), min_points=3), [0, 1, 0])


def test_recall_and_yaw_error_per_class() -> None:
    recall = VisibilityRecall(0.5)
    found_a = GT[0].copy()
    found_a[6] = math.radians(10.0)  # IoU still > 0.5, 10 deg off
    flipped_b = GT[1].copy()
    flipped_b[6] += math.pi  # a flip by pi is the same BEV box: 0 deg
    miss_c = GT[2] + np.array([6.0, 0, 0, 0, 0, 0, 0], np.float32)
    recall.add(scene(), np.stack([found_a, flipped_b, miss_c]))
    recall.add(scene(), np.zeros((0, 7), np.float32))  # a second frame that finds nothing
    report = recall.report()
    assert {k: v["gt"] for k, v in report.items()} == {"ego": 2, "neighbours_only": 2, "sparse": 2}
    assert [v["found"] for v in report.values()] == [1, 1, 0]
    assert report["ego"]["recall"] == 0.5 and report["sparse"]["recall"] == 0.0
    assert report["ego"]["median_yaw_error_deg"] == pytest.approx(10.0, abs=1e-4)
    assert report["neighbours_only"]["median_yaw_error_deg"] == pytest.approx(0.0, abs=1e-4)
    assert report["sparse"]["median_yaw_error_deg"] is None


def test_no_ground_truth_gives_empty_classes() -> None:
    empty = CooperativeSample(points_at(np.zeros(3), 4), (), np.zeros((0, 4, 4)), np.zeros((0, 7)))
    recall = VisibilityRecall()
    recall.add(empty, GT)
    assert all(v["gt"] == 0 and v["recall"] is None for v in recall.report().values())


def test_a_stricter_iou_counts_only_tight_boxes() -> None:
    # 4 m long boxes shifted along their length: 0.5 m -> IoU 3.5/4.5 = 0.78, 1 m -> 3/5 = 0.6.
    tight_a = GT[0] + np.array([0.5, 0, 0, 0, 0, 0, 0], np.float32)
    loose_b = GT[1] + np.array([0, 1.0, 0, 0, 0, 0, 0], np.float32)  # B lies along y
    both = VisibilityRecall((0.5, 0.7))
    both.add(scene(), np.stack([tight_a, loose_b]))
    report = both.report()
    assert [v["found"] for v in report.values()] == [1, 1, 0]
    assert [v["found@0.7"] for v in report.values()] == [1, 0, 0]
    assert report["neighbours_only"]["recall@0.7"] == 0.0 and report["sparse"]["gt"] == 1
    only_strict = VisibilityRecall(0.7)
    only_strict.add(scene(), np.stack([tight_a, loose_b]))
    assert [v["found"] for v in only_strict.report().values()] == [1, 0, 0]
    with pytest.raises(ValueError, match="at least one IoU"):
        VisibilityRecall(())
