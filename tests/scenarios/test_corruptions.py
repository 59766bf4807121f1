"""Tests for the seven LiDAR sensor corruptions on an analytic 32-ring sweep.

The sweep: the default LidarConfig (32 rings, -25..+15 deg) at 1 deg azimuth steps over a flat
ground at z = -1.9, a 4.5 x 2 x 1.5 m box 8 m ahead, and a cylindrical wall at 80 m, so every
ring returns a point at every azimuth. Intensity is CARLA's exp(-0.004 r).
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from scenarios.corruption_models import KOSCHMIEDER, ground_mask
from scenarios.corruptions import (
    CORRUPTION_NAMES,
    CORRUPTION_TABLE,
    CORRUPTIONS,
    CorruptionContext,
    corrupt,
    render_table,
)
from scenarios.lidar_config import LidarConfig

LIDAR = LidarConfig()
CTX = CorruptionContext(lidar=LIDAR)
GROUND_Z = -LIDAR.mount_height
N_AZ = 360
BOX_LO = np.array([8.0, -1.0, GROUND_Z])
BOX_HI = np.array([12.5, 1.0, GROUND_Z + 1.5])
WALL_R = 80.0
ALL_CASES = [(n, s) for n in CORRUPTION_NAMES for s in (1, 2, 3)]


def synthetic_sweep() -> NDArray[np.float32]:
    """Ray-cast every (ring, azimuth) against ground, box and wall; nearest hit wins."""
    elev = LIDAR.elevation_angles()
    az = (np.arange(N_AZ) + 0.5) * (2 * np.pi / N_AZ)
    e, a = np.meshgrid(elev, az, indexing="ij")
    d = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)
    with np.errstate(divide="ignore"):
        t_ground = np.where(d[:, 2] < 0, GROUND_Z / d[:, 2], np.inf)
        t_wall = WALL_R / np.hypot(d[:, 0], d[:, 1])
        t1, t2 = BOX_LO / d, BOX_HI / d
    t_near = np.max(np.minimum(t1, t2), axis=1)
    t_far = np.min(np.maximum(t1, t2), axis=1)
    t_box = np.where((t_far >= t_near) & (t_near > 0), t_near, np.inf)
    t = np.min(np.stack([t_ground, t_wall, t_box]), axis=0)
    assert np.all(np.isfinite(t))
    return np.concatenate([d * t[:, None], np.exp(-0.004 * t)[:, None]], 1).astype(np.float32)


@pytest.fixture(scope="module")
def sweep() -> NDArray[np.float32]:
    return synthetic_sweep()


def ranges(points: NDArray[np.float32]) -> NDArray[np.float64]:
    return np.linalg.norm(points[:, :3].astype(np.float64), axis=1)


def ray_index(sweep: NDArray[np.float32], points: NDArray[np.float32]) -> NDArray[np.int64]:
    """Index of the input ray each point lies on (its direction), asserting it is one."""

    def unit(p: NDArray[np.float32]) -> NDArray[np.float64]:
        return p[:, :3] / ranges(p)[:, None]

    dist, idx = cKDTree(unit(sweep)).query(unit(points))
    assert np.all(dist < 1e-4), "a point lies on no input ray"
    return idx


def row_index(sweep: NDArray[np.float32], points: NDArray[np.float32]) -> NDArray[np.int64]:
    """Index of the input point with exactly the same x, y, z as each output point."""
    lookup = {row.tobytes(): i for i, row in enumerate(sweep[:, :3])}
    return np.array([lookup[row.tobytes()] for row in points[:, :3]], dtype=np.int64)


def test_sweep_covers_every_ring_at_every_azimuth(sweep: NDArray[np.float32]) -> None:
    assert sweep.shape == (32 * N_AZ, 4)
    assert np.array_equal(np.bincount(LIDAR.ring_of(sweep)), np.full(32, N_AZ))
    assert ground_mask(sweep, LIDAR, 0.2).sum() > 4000
    assert ranges(sweep).max() == pytest.approx(WALL_R / np.cos(np.radians(15.0)), rel=1e-5)


def test_registry_order_and_table() -> None:
    expected = (
        "beam_missing",
        "motion_blur",
        "fog",
        "crosstalk",
        "emi",
        "wet_ground",
        "incomplete_echo",
    )
    assert CORRUPTION_NAMES == expected == tuple(CORRUPTIONS) == tuple(CORRUPTION_TABLE)
    for spec in CORRUPTION_TABLE.values():
        assert len({type(level) for level in spec.levels}) == 1 and len(spec.levels) == 3
    lines = render_table().splitlines()
    assert len(lines) == 2 + 7
    assert {line.count("|") for line in lines} == {7}
    assert "| fog |" in lines[4] and "150; 0.05; 0.01; 8" in lines[4]
    assert "Severity table" in (corrupt.__doc__ or "") and "| emi |" in (corrupt.__doc__ or "")


@pytest.mark.parametrize(("name", "severity"), ALL_CASES)
def test_output_valid_and_seeded(sweep: NDArray[np.float32], name: str, severity: int) -> None:
    ctx = CorruptionContext(lidar=LIDAR, speed_mps=12.0, yaw_rate=0.3)
    out = corrupt(sweep, name, severity, 7, ctx)
    assert out.dtype == np.float32 and out.ndim == 2 and out.shape[1] == 4
    assert np.all(np.isfinite(out))
    assert out[:, 3].min() >= 0.0 and out[:, 3].max() <= 1.0
    assert not np.array_equal(out, sweep) or out.shape != sweep.shape
    assert np.array_equal(out, corrupt(sweep, name, severity, 7, ctx))
    assert np.array_equal(out, corrupt(sweep, name, severity, np.random.default_rng(7), ctx))
    other = corrupt(sweep, name, severity, 8, ctx)
    assert out.shape != other.shape or not np.array_equal(out, other)


@pytest.mark.parametrize(("name", "severity"), ALL_CASES)
def test_empty_input_stays_empty(name: str, severity: int) -> None:
    out = corrupt(np.zeros((0, 4), np.float32), name, severity, 0, CTX)
    assert out.shape == (0, 4) and out.dtype == np.float32


def test_severity_zero_is_clean_copy(sweep: NDArray[np.float32]) -> None:
    for name in CORRUPTION_NAMES:
        out = corrupt(sweep, name, 0, 0, CTX)
        assert np.array_equal(out, sweep) and out is not sweep


@pytest.mark.parametrize(
    ("name", "severity", "message"),
    [
        ("snow", 1, "snow"),
        ("fog", 4, "4"),
        ("fog", -1, "-1"),
        ("fog", 1.5, "1.5"),
        ("fog", True, "True"),
    ],
)
def test_bad_name_or_severity_raises(name: str, severity: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        corrupt(np.zeros((3, 4), np.float32), name, severity, 0, CTX)  # type: ignore[arg-type]


def test_bad_points_and_context_raise() -> None:
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        corrupt(np.zeros((5, 3), np.float32), "fog", 1, 0, CTX)
    with pytest.raises(ValueError, match="NaN"):
        corrupt(np.full((2, 4), np.nan, np.float32), "fog", 1, 0, CTX)
    with pytest.raises(ValueError, match="finite"):
        CorruptionContext(speed_mps=float("inf"))


def test_beam_missing_drops_exact_ring_fractions_nested(sweep: NDArray[np.float32]) -> None:
    dropped_by_level = []
    for severity, n_dropped in zip((1, 2, 3), (8, 16, 24), strict=True):
        out = corrupt(sweep, "beam_missing", severity, 3, CTX)
        counts = np.bincount(LIDAR.ring_of(out), minlength=32)
        assert set(counts) == {0, N_AZ} and np.sum(counts == 0) == n_dropped
        assert out.shape[0] == (32 - n_dropped) * N_AZ
        assert np.array_equal(out, sweep[np.isin(LIDAR.ring_of(sweep), np.flatnonzero(counts))])
        dropped_by_level.append(set(np.flatnonzero(counts == 0)))
    assert dropped_by_level[0] < dropped_by_level[1] < dropped_by_level[2]


def test_motion_blur_follows_ego_motion(sweep: NDArray[np.float32]) -> None:
    azimuth = np.mod(np.arctan2(sweep[:, 1], sweep[:, 0]).astype(np.float64), 2 * np.pi)
    t = azimuth / (2 * np.pi * LIDAR.rotation_frequency)
    still = corrupt(sweep, "motion_blur", 1, 5, CTX)
    driving = corrupt(sweep, "motion_blur", 1, 5, CorruptionContext(LIDAR, speed_mps=10.0))
    shift = driving[:, :3].astype(np.float64) - still[:, :3]
    np.testing.assert_allclose(shift[:, 0], -10.0 * t, atol=1e-4)  # up to 1 m at the seam
    np.testing.assert_allclose(shift[:, 1:], 0.0, atol=1e-4)
    turning = corrupt(sweep, "motion_blur", 1, 5, CorruptionContext(LIDAR, yaw_rate=0.5))
    c, s = np.cos(0.5 * t), np.sin(0.5 * t)
    x, y = sweep[:, 0].astype(np.float64), sweep[:, 1].astype(np.float64)
    expected = np.stack([c * x + s * y - x, -s * x + c * y - y], 1)
    np.testing.assert_allclose(turning[:, :2] - still[:, :2], expected, atol=2e-4)
    assert np.array_equal(still[:, 3], sweep[:, 3])


def test_motion_blur_jitter_and_displacement_grow(sweep: NDArray[np.float32]) -> None:
    moving = CorruptionContext(LIDAR, speed_mps=10.0, yaw_rate=0.2)
    mean_shift = []
    for severity, sigma in zip((1, 2, 3), (0.05, 0.10, 0.20), strict=True):
        jitter = corrupt(sweep, "motion_blur", severity, 9, CTX)[:, :3] - sweep[:, :3]
        np.testing.assert_allclose(jitter.std(axis=0), sigma, rtol=0.05)
        out = corrupt(sweep, "motion_blur", severity, 9, moving)
        mean_shift.append(np.linalg.norm(out[:, :3] - sweep[:, :3], axis=1).mean())
    assert 0.5 < mean_shift[0] < mean_shift[1] < mean_shift[2]


def test_fog_attenuates_thresholds_and_backscatters(sweep: NDArray[np.float32]) -> None:
    n, r = sweep.shape[0], ranges(sweep)
    max_kept, lost, n_scatter = [], [], []
    for severity in (1, 2, 3):
        p = CORRUPTION_TABLE["fog"].at(severity)
        attenuated = sweep[:, 3] * np.exp(-2.0 * KOSCHMIEDER / p.visibility_m * r)
        keep = attenuated >= p.threshold
        out = corrupt(sweep, "fog", severity, 11, CTX)
        n_bs = round(p.backscatter_fraction * n)
        kept, scatter = out[: out.shape[0] - n_bs], out[out.shape[0] - n_bs :]
        assert np.array_equal(kept[:, :3], sweep[keep, :3])
        np.testing.assert_allclose(kept[:, 3], attenuated[keep], rtol=1e-5)
        assert np.all(scatter[:, 3] >= p.threshold) and np.all(scatter[:, 3] < 2 * p.threshold)
        assert 0.5 <= ranges(scatter).min() and ranges(scatter).max() <= p.backscatter_max_m
        ray_index(sweep, scatter)
        max_kept.append(ranges(kept).max())
        lost.append(n - kept.shape[0])
        n_scatter.append(n_bs)
    assert max_kept[0] > max_kept[1] > max_kept[2] and max_kept[2] < 20.0
    assert 0 < lost[0] < lost[1] < lost[2] and n_scatter == [115, 230, 461]


def test_crosstalk_appends_spurious_returns(sweep: NDArray[np.float32]) -> None:
    n = sweep.shape[0]
    added = []
    for severity in (1, 2, 3):
        p = CORRUPTION_TABLE["crosstalk"].at(severity)
        out = corrupt(sweep, "crosstalk", severity, 13, CTX)
        assert np.array_equal(out[:n], sweep)
        extra = out[n:]
        assert extra.shape[0] == round(p.fraction * n)
        assert np.all(extra[:, 3] == np.float32(0.2)) and sweep[:, 3].min() > 0.7
        assert 0.99 <= ranges(extra).min() and ranges(extra).max() <= LIDAR.range + 1e-3
        rays = ray_index(sweep, extra)
        assert len(np.unique(rays)) == extra.shape[0]
        added.append(extra.shape[0])
    assert added == [230, 576, 1152]


def test_emi_garbles_sectors_of_some_rings(sweep: NDArray[np.float32]) -> None:
    ring, n = LIDAR.ring_of(sweep), sweep.shape[0]
    affected_sets = []
    for severity in (1, 2, 3):
        p = CORRUPTION_TABLE["emi"].at(severity)
        out = corrupt(sweep, "emi", severity, 17, CTX)
        rays = ray_index(sweep, out)
        assert np.all(np.diff(rays) > 0)  # kept and scrambled points stay in order
        scrambled = rays[np.any(out[:, :3] != sweep[rays, :3], axis=1)]
        lost = np.setdiff1d(np.arange(n), rays)
        affected = np.union1d(scrambled, lost)
        hit_rings = np.unique(ring[affected])
        assert 0 < len(hit_rings) <= round(p.ring_fraction * 32)
        for k in hit_rings:
            az = np.sort(
                np.degrees(
                    np.arctan2(
                        sweep[affected[ring[affected] == k], 1],
                        sweep[affected[ring[affected] == k], 0],
                    )
                )
                % 360
            )
            gaps = np.diff(np.append(az, az[0] + 360.0))
            assert 360.0 - gaps.max() <= p.sector_deg  # all inside one sector
        new_r = ranges(out[np.isin(rays, scrambled)])
        assert new_r.min() >= 0.99 and new_r.max() <= LIDAR.range + 1e-3
        assert 0.3 < len(scrambled) / len(affected) < 0.7
        affected_sets.append(set(affected))
    assert affected_sets[0] < affected_sets[1] < affected_sets[2]


def test_wet_ground_loses_dims_and_mirrors(sweep: NDArray[np.float32]) -> None:
    ground = ground_mask(sweep, LIDAR, 0.2)
    near = ~ground & (sweep[:, 2] - GROUND_Z <= 2.0)
    kept_ground, mirrors = [], []
    for severity in (1, 2, 3):
        p = CORRUPTION_TABLE["wet_ground"].at(severity)
        out = corrupt(sweep, "wet_ground", severity, 19, CTX)
        below = out[:, 2] < GROUND_Z - p.ground_tolerance_m
        n_kept = int(np.sum(~below))
        assert not below[:n_kept].any() and below[n_kept:].all()  # mirrors come last
        kept = out[:n_kept]
        idx = row_index(sweep, kept)
        assert np.all(np.diff(idx) > 0)
        assert np.array_equal(kept[~ground[idx]], sweep[~ground])  # objects untouched
        np.testing.assert_allclose(
            kept[ground[idx], 3], sweep[idx[ground[idx]], 3] * p.ground_intensity_factor, rtol=1e-6
        )
        g = ground.sum()
        n_ground = int(ground[idx].sum())
        assert abs(n_ground - (1 - p.loss_fraction) * g) < 4 * np.sqrt(g * 0.25)
        mirror = out[n_kept:]
        source = mirror.copy()
        source[:, 2] = 2 * GROUND_Z - mirror[:, 2]
        dist, src_idx = cKDTree(sweep[:, :3]).query(source[:, :3])
        assert np.all(dist < 1e-5)
        assert near[src_idx].all()
        np.testing.assert_allclose(mirror[:, 3], sweep[src_idx, 3] * 0.3, rtol=1e-6)
        assert abs(len(mirror) - p.mirror_fraction * near.sum()) < 4 * np.sqrt(near.sum() * 0.25)
        kept_ground.append(n_ground)
        mirrors.append(len(mirror))
    assert kept_ground[0] > kept_ground[1] > kept_ground[2]
    assert 0 < mirrors[0] < mirrors[1] < mirrors[2]


def test_incomplete_echo_loses_dark_object_returns(sweep: NDArray[np.float32]) -> None:
    ground = ground_mask(sweep, LIDAR, 0.2)
    lost_fraction, lost_sets = [], []
    for severity in (1, 2, 3):
        out = corrupt(sweep, "incomplete_echo", severity, 23, CTX)
        idx = row_index(sweep, out)
        assert np.all(np.diff(idx) > 0) and np.array_equal(out, sweep[idx])
        lost = np.setdiff1d(np.arange(sweep.shape[0]), idx)
        assert not ground[lost].any()
        lost_fraction.append(len(lost) / np.sum(~ground))
        lost_sets.append(set(lost))
    assert 0.03 < lost_fraction[0] < lost_fraction[1] < lost_fraction[2] < 0.8
    assert lost_sets[0] < lost_sets[1] < lost_sets[2]
