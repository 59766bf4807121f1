"""Localization error on the pose a sender reports (world <- LiDAR, 4x4 float64).

Noise follows OpenCOOD / CoAlign: Gaussian on x, y (metres) and yaw (degrees in the config,
radians inside), tested at the levels 0, 0.2, 0.4, 0.6 (std of x, y in m and of yaw in deg),
optionally on z, roll and pitch, plus an optional constant bias.

Composition matches adding the noise to OpenCOOD's ``[x, y, z, roll, yaw, pitch]`` vector and
rebuilding the matrix with ``x_to_world``: the translation moves by ``(dx, dy, dz)`` in the
world frame and, because that rotation is ``Rz(yaw) @ A(roll, pitch)``, yaw noise is a
left-multiplication by ``Rz(dyaw)`` about the world z axis through the sensor. Roll/pitch noise
(rarely used) re-derives the angles from the matrix in the same convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from channel.links import id_key
from configkit import Float, config_dataclass, validate

POSE_ERROR_LEVELS = (0.0, 0.2, 0.4, 0.6)


Std = Annotated[Float, Field(ge=0.0)]


@config_dataclass
class PoseErrorConfig:
    """Standard deviations (m, deg) and biases of the reported-pose error (finite numbers)."""

    std_xy_m: Std = 0.0
    std_yaw_deg: Std = 0.0
    std_z_m: Std = 0.0
    std_roll_deg: Std = 0.0
    std_pitch_deg: Std = 0.0
    bias_x_m: Float = 0.0
    bias_y_m: Float = 0.0
    bias_yaw_deg: Float = 0.0

    @classmethod
    def level(cls, sigma: float) -> PoseErrorConfig:
        """OpenCOOD / CoAlign level: std ``sigma`` m on x and y, ``sigma`` deg on yaw."""
        return cls(std_xy_m=sigma, std_yaw_deg=sigma)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "pose_error") -> PoseErrorConfig:
        return validate(cls, {} if data is None else data, where)


@dataclass(frozen=True)
class PoseNoise:
    """One draw of pose error: metres and radians."""

    dx: float = 0.0
    dy: float = 0.0
    dz: float = 0.0
    droll: float = 0.0
    dpitch: float = 0.0
    dyaw: float = 0.0


def sample_pose_noise(config: PoseErrorConfig, rng: np.random.Generator) -> PoseNoise:
    """Draw one :class:`PoseNoise`; always consumes six standard normals."""
    z = rng.standard_normal(6)
    deg = math.pi / 180.0
    return PoseNoise(
        dx=config.bias_x_m + config.std_xy_m * float(z[0]),
        dy=config.bias_y_m + config.std_xy_m * float(z[1]),
        dz=config.std_z_m * float(z[2]),
        droll=config.std_roll_deg * deg * float(z[3]),
        dpitch=config.std_pitch_deg * deg * float(z[4]),
        dyaw=(config.bias_yaw_deg + config.std_yaw_deg * float(z[5])) * deg,
    )


def rot_z(angle: float) -> NDArray[np.float64]:
    """3x3 rotation by ``angle`` radians about z."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _roll_pitch_matrix(roll: float, pitch: float) -> NDArray[np.float64]:
    """``A(roll, pitch)`` of OpenCOOD's ``x_to_world`` with yaw = 0 (CARLA convention)."""
    cr, sr, cp, sp = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch)
    return np.array(
        [
            [cp, sp * sr, -sp * cr],
            [0.0, cr, sr],
            [sp, -cp * sr, cp * cr],
        ]
    )


def apply_pose_noise(pose: NDArray[np.float64], noise: PoseNoise) -> NDArray[np.float64]:
    """Reported pose = true ``pose`` (world <- LiDAR) with ``noise`` added; a new matrix."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4):
        raise ValueError(f"pose must be 4x4, got {pose.shape}")
    out = pose.copy()
    rot = pose[:3, :3]
    if noise.droll or noise.dpitch:
        pitch = math.asin(max(-1.0, min(1.0, rot[2, 0])))
        roll = math.atan2(-rot[2, 1], rot[2, 2])
        yaw = math.atan2(rot[1, 0], rot[0, 0])
        new_rot = rot_z(yaw + noise.dyaw) @ _roll_pitch_matrix(
            roll + noise.droll, pitch + noise.dpitch
        )
    else:
        new_rot = rot_z(noise.dyaw) @ rot
    out[:3, :3] = new_rot
    out[:3, 3] = pose[:3, 3] + (noise.dx, noise.dy, noise.dz)
    return out


class PoseErrorModel:
    """Per-sender seeded pose error: ``reported, noise = model.perturb(sender, true_pose)``."""

    def __init__(self, config: PoseErrorConfig | None = None, seed: int = 0) -> None:
        self.config = config or PoseErrorConfig()
        self.seed = int(seed)
        self._rngs: dict[int, np.random.Generator] = {}

    def perturb(
        self, sender: int, pose: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], PoseNoise]:
        """Draw the next noise for ``sender`` and apply it to its true pose."""
        rng = self._rngs.get(int(sender))
        if rng is None:
            # spawn_key (1, sender) keeps these streams apart from the links' (0, s, r) keys.
            seq = np.random.SeedSequence(self.seed, spawn_key=(1, id_key(sender)))
            rng = self._rngs[int(sender)] = np.random.default_rng(seq)
        noise = sample_pose_noise(self.config, rng)
        return apply_pose_noise(pose, noise), noise
