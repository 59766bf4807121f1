"""What a cooperative detector consumes: one ego view plus up to K neighbours, as numpy.

A ``CooperativeSample`` is built by the training dataset from stored frames and by the
simulation driver from live ones, so the model sees the same thing in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class CooperativeSample:
    """One ego at one timestamp.

    ``ego_points``: float32 (N, 4) in the ego's LiDAR frame.
    ``neighbour_points``: one float32 (N_k, 4) cloud per neighbour, each in its *own* LiDAR frame.
    ``neighbour_to_ego``: float64 (K, 4, 4), neighbour LiDAR frame -> ego LiDAR frame (the true
    transform in training; built from the *reported* poses in simulation).
    ``gt_boxes``: float32 (M, 7) x, y, z, l, w, h, yaw in the ego LiDAR frame.
    ``neighbour_ids`` / ``ego_id`` / ``frame_index`` / ``source``: where it came from.
    ``neighbour_pose_sigma``: float32 (K,) the pose-error level each neighbour reports (a cue
    for AGF; zeros when none); ``neighbour_age_s``: float32 (K,) how old each neighbour's data
    is (latency; zeros when fresh). ``corruption`` / ``severity``: the sensor corruption the ego's
    points carry (``none`` / 0: clean); ``neighbour_severity``: float32 (K,) the severity each
    neighbour's points carry (0: clean; the AGF reliability score's training target).
    ``clean``: in Diff-KD training, the same sample as the clean teacher sees it (uncorrupted
    points, true transforms), else None.
    """

    ego_points: NDArray[np.float32]
    neighbour_points: tuple[NDArray[np.float32], ...]
    neighbour_to_ego: NDArray[np.float64]
    gt_boxes: NDArray[np.float32]
    ego_id: int = 0
    neighbour_ids: tuple[int, ...] = ()
    frame_index: int = 0
    source: str = ""
    gt_ids: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    neighbour_pose_sigma: NDArray[np.float32] | None = None
    neighbour_age_s: NDArray[np.float32] | None = None
    corruption: str = "none"
    severity: int = 0
    neighbour_severity: NDArray[np.float32] | None = None
    clean: CooperativeSample | None = None

    def __post_init__(self) -> None:
        transforms = np.asarray(self.neighbour_to_ego, dtype=np.float64).reshape(-1, 4, 4)
        if transforms.shape[0] != len(self.neighbour_points):
            raise ValueError(
                f"sample {self.source}:{self.frame_index}: {len(self.neighbour_points)} neighbour "
                f"clouds but {transforms.shape[0]} transforms"
            )
        object.__setattr__(self, "neighbour_to_ego", transforms)
        for name in ("neighbour_pose_sigma", "neighbour_age_s", "neighbour_severity"):
            given = getattr(self, name)
            values = (
                np.zeros(transforms.shape[0], np.float32)
                if given is None
                else np.asarray(given, np.float32).reshape(-1)
            )
            if values.shape[0] != transforms.shape[0]:
                raise ValueError(
                    f"sample {self.source}:{self.frame_index}: {values.shape[0]} {name} values "
                    f"for {transforms.shape[0]} neighbours"
                )
            object.__setattr__(self, name, values)
        object.__setattr__(self, "neighbour_points", tuple(self.neighbour_points))
        object.__setattr__(
            self, "gt_boxes", np.asarray(self.gt_boxes, dtype=np.float32).reshape(-1, 7)
        )

    @property
    def num_neighbours(self) -> int:
        return len(self.neighbour_points)
