"""Where frames come from: the Frame model, synthetic world, OPV2V I/O, CARLA, corruptions."""

from scenarios.frame import AgentObservation, Frame, ObjectSet
from scenarios.geometry import (
    boxes_to_frame,
    matrix_to_pose,
    points_to_frame,
    pose_to_matrix,
    relative_transform,
)
from scenarios.source import FrameSource, open_source

__all__ = [
    "AgentObservation",
    "Frame",
    "FrameSource",
    "ObjectSet",
    "boxes_to_frame",
    "matrix_to_pose",
    "points_to_frame",
    "pose_to_matrix",
    "open_source",
    "relative_transform",
]
