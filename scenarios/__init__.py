"""Where frames come from: the Frame model, the synthetic LiDAR world, OPV2V I/O, CARLA, corruptions."""

from scenarios.frame import AgentObservation, Frame, ObjectSet
from scenarios.geometry import (
    boxes_to_frame,
    matrix_to_pose,
    points_to_frame,
    pose_to_matrix,
    relative_transform,
)

__all__ = [
    "AgentObservation",
    "Frame",
    "ObjectSet",
    "boxes_to_frame",
    "matrix_to_pose",
    "points_to_frame",
    "pose_to_matrix",
    "relative_transform",
]
