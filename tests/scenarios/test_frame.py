"""The Frame model: validation, equality and views in an agent's frame."""

import numpy as np
import pytest

from scenarios.frame import AgentObservation, Frame, ObjectSet
from scenarios.geometry import pose_to_matrix


def make_frame() -> Frame:
    ego = AgentObservation(
        1, pose_to_matrix([0, 0, 1.9, 0, 0, 0]), np.array([[1, 0, 0, 0.5]], np.float32), 5.0
    )
    other = AgentObservation(
        7, pose_to_matrix([20, 0, 1.9, 0, 180, 0]), np.array([[2, 0, 0, 0.25]], np.float32)
    )
    objects = ObjectSet(
        ids=np.array([1, 7, 30]),
        boxes=np.array(
            [
                [0, 0, 0.75, 4.5, 1.8, 1.5, 0.0],
                [20, 0, 0.75, 4.5, 1.8, 1.5, np.pi],
                [150, 0, 0.75, 4.5, 1.8, 1.5, 0.0],
            ]
        ),
        categories=("car", "car", "truck"),
    )
    return Frame(timestamp=0.1, index=1, agents={1: ego, 7: other}, objects=objects, ego_id=1)


def test_points_of_other_agent_in_ego_frame() -> None:
    frame = make_frame()
    # Agent 7 faces the ego from 20 m: its point 2 m ahead is at x = 18 in the ego frame.
    np.testing.assert_allclose(frame.points_in(7), [[18.0, 0.0, 0.0, 0.25]], atol=1e-5)


def test_objects_in_agent_frame_excludes_self_and_far_objects() -> None:
    frame = make_frame()
    ids, boxes = frame.objects_in(max_range=100.0)
    np.testing.assert_array_equal(ids, [7])
    np.testing.assert_allclose(boxes[0], [20, 0, -1.15, 4.5, 1.8, 1.5, -np.pi], atol=1e-5)
    ids7, boxes7 = frame.objects_in(7)
    np.testing.assert_array_equal(ids7, [1, 30])
    np.testing.assert_allclose(boxes7[0, :2], [20.0, 0.0], atol=1e-5)


def test_frame_equality_is_by_value() -> None:
    assert make_frame() == make_frame()
    changed = make_frame()
    changed.agents[1].points[0, 0] = 3.0
    assert changed != make_frame()


def test_validation_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="points must be"):
        AgentObservation(1, np.eye(4), np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="lidar_pose"):
        AgentObservation(1, np.full((4, 4), np.nan), np.zeros((0, 4), np.float32))
    frame = make_frame()
    with pytest.raises(KeyError, match="ego id 9"):
        Frame(0.0, 0, frame.agents, frame.objects, ego_id=9)
    with pytest.raises(KeyError, match="no agent 5"):
        frame.agent(5)
    with pytest.raises(ValueError, match="unique"):
        ObjectSet(np.array([1, 1]), np.zeros((2, 7)))


def test_subset_keeps_hits_aligned() -> None:
    objects = ObjectSet(np.array([3, 4, 5]), np.zeros((3, 7)), hits={1: np.array([0, 9, 2])})
    kept = objects.subset(np.array([False, True, True]))
    np.testing.assert_array_equal(kept.ids, [4, 5])
    np.testing.assert_array_equal(kept.hits[1], [9, 2])
