"""Pose error: composition matches OpenCOOD's pose vector arithmetic; statistics and seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from channel.pose_error import (
    POSE_ERROR_LEVELS,
    PoseErrorConfig,
    PoseErrorModel,
    PoseNoise,
    apply_pose_noise,
)


def x_to_world(x: float, y: float, z: float, roll: float, yaw: float, pitch: float) -> np.ndarray:
    """OpenCOOD's pose vector (angles in degrees) to a 4x4 world <- sensor matrix."""
    r, w, p = (math.radians(a) for a in (roll, yaw, pitch))
    cy, sy, cr, sr, cp, sp = (
        math.cos(w),
        math.sin(w),
        math.cos(r),
        math.sin(r),
        math.cos(p),
        math.sin(p),
    )
    m = np.eye(4)
    m[:3, 3] = (x, y, z)
    m[0, :3] = (cp * cy, cy * sp * sr - sy * cr, -cy * sp * cr - sy * sr)
    m[1, :3] = (sy * cp, sy * sp * sr + cy * cr, -sy * sp * cr + cy * sr)
    m[2, :3] = (sp, -cp * sr, cp * cr)
    return m


def test_levels_are_opencood_coalign() -> None:
    assert POSE_ERROR_LEVELS == (0.0, 0.2, 0.4, 0.6)
    assert PoseErrorConfig.level(0.4) == PoseErrorConfig(std_xy_m=0.4, std_yaw_deg=0.4)


def test_zero_noise_is_identity() -> None:
    pose = x_to_world(10, -5, 1.8, 0.5, 33, -1)
    assert np.array_equal(apply_pose_noise(pose, PoseNoise()), pose)
    reported, noise = PoseErrorModel(PoseErrorConfig(), seed=1).perturb(3, pose)
    assert np.array_equal(reported, pose) and noise == PoseNoise()


@pytest.mark.parametrize(
    "roll,pitch,droll,dpitch", [(0, 0, 0, 0), (2.0, -3.0, 0, 0), (2.0, -3.0, 0.7, -0.4)]
)
def test_noise_composes_like_adding_to_the_pose_vector(
    roll: float, pitch: float, droll: float, dpitch: float
) -> None:
    pose = x_to_world(12.0, -4.0, 1.7, roll, 80.0, pitch)
    noise = PoseNoise(
        dx=0.3,
        dy=-0.2,
        dz=0.05,
        droll=math.radians(droll),
        dpitch=math.radians(dpitch),
        dyaw=math.radians(1.5),
    )
    expected = x_to_world(12.3, -4.2, 1.75, roll + droll, 81.5, pitch + dpitch)
    np.testing.assert_allclose(apply_pose_noise(pose, noise), expected, atol=1e-12)


def test_yaw_noise_rotates_about_world_z_through_the_sensor() -> None:
    pose = x_to_world(5.0, 5.0, 0.0, 0, 90.0, 0)
    reported = apply_pose_noise(pose, PoseNoise(dyaw=math.radians(90.0)))
    # A point 1 m ahead of the sensor: at (5, 6) with the true pose, (4, 5) when reported.
    ahead = np.array([1.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose((pose @ ahead)[:2], (5.0, 6.0), atol=1e-12)
    np.testing.assert_allclose((reported @ ahead)[:2], (4.0, 5.0), atol=1e-12)
    np.testing.assert_allclose(reported[:3, :3] @ reported[:3, :3].T, np.eye(3), atol=1e-12)


def test_sample_statistics_and_bias() -> None:
    cfg = PoseErrorConfig(std_xy_m=0.4, std_yaw_deg=0.6, bias_x_m=0.1)
    model = PoseErrorModel(cfg, seed=3)
    noises = [model.perturb(1, np.eye(4))[1] for _ in range(20_000)]
    dx = np.array([n.dx for n in noises])
    dy = np.array([n.dy for n in noises])
    dyaw = np.array([n.dyaw for n in noises])
    assert abs(dx.mean() - 0.1) < 0.01 and abs(dy.mean()) < 0.01
    assert abs(dx.std() - 0.4) < 0.012 and abs(dy.std() - 0.4) < 0.012
    assert abs(np.degrees(dyaw).std() - 0.6) < 0.018
    assert all(n.dz == n.droll == n.dpitch == 0.0 for n in noises[:100])


def test_per_sender_streams_are_seeded() -> None:
    cfg = PoseErrorConfig.level(0.2)
    a, b = PoseErrorModel(cfg, seed=8), PoseErrorModel(cfg, seed=8)
    first = [a.perturb(1, np.eye(4))[1] for _ in range(5)]
    b.perturb(2, np.eye(4))  # another sender's draws do not shift sender 1's
    assert first == [b.perturb(1, np.eye(4))[1] for _ in range(5)]
    assert first != [PoseErrorModel(cfg, seed=9).perturb(1, np.eye(4))[1] for _ in range(5)]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="std_xy_m"):
        PoseErrorConfig(std_xy_m=-0.1)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['std_x'\]"):
        PoseErrorConfig.from_dict({"std_x": 0.2})
