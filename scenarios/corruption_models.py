"""The seven LiDAR sensor corruption models (Robo3D lineage), numpy only.

Every model takes float32 ``(N, 4)`` x, y, z, intensity points in the sensor frame, the parameter
dataclass of one severity, a ``numpy.random.Generator`` and a :class:`CorruptionContext`, and
returns float32 ``(M, 4)`` in the same frame. Kept points keep their original order; points a
model adds (backscatter, crosstalk, mirror images) are appended at the end. The random draws do
not depend on the severity where that is cheap (ring permutations, per-point uniforms), so with
one seed a higher severity corrupts a superset of what a lower one does for beam missing, EMI,
wet ground and incomplete echo. Severity tables live in ``scenarios.corruptions``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scenarios.lidar_config import LidarConfig

Points = NDArray[np.float32]

#: Koschmieder: extinction coefficient = ln(1 / 0.05) / MOR, the 5 % contrast threshold.
KOSCHMIEDER = math.log(20.0)
#: Nearest range (m) at which the models place synthetic returns (backscatter, crosstalk, EMI).
MIN_SYNTHETIC_RANGE = 1.0


@dataclass(frozen=True)
class CorruptionContext:
    """What a corruption may know about the sensor and the vehicle carrying it.

    ``speed_mps`` is the forward speed along the sensor's +x axis and ``yaw_rate`` (rad/s,
    counter-clockwise positive) the turn rate, both held constant over one sweep.
    """

    lidar: LidarConfig = field(default_factory=LidarConfig)
    speed_mps: float = 0.0
    yaw_rate: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.speed_mps) and math.isfinite(self.yaw_rate)):
            raise ValueError(
                f"CorruptionContext: speed_mps ({self.speed_mps}) and yaw_rate "
                f"({self.yaw_rate}) must be finite"
            )


def _param(label: str) -> Any:
    """A dataclass field carrying the human label shown in the severity table."""
    return field(metadata={"label": label})


@dataclass(frozen=True)
class BeamMissingParams:
    ring_fraction: float = _param("fraction of laser rings dropped")


@dataclass(frozen=True)
class MotionBlurParams:
    jitter_m: float = _param("position jitter std per axis (m)")


@dataclass(frozen=True)
class FogParams:
    visibility_m: float = _param("meteorological optical range MOR (m)")
    threshold: float = _param("detection threshold on attenuated intensity")
    backscatter_fraction: float = _param("backscatter points / input points")
    backscatter_max_m: float = _param("max backscatter range (m)")


@dataclass(frozen=True)
class CrosstalkParams:
    fraction: float = _param("spurious returns / input points")
    intensity: float = _param("intensity of spurious returns")


@dataclass(frozen=True)
class EmiParams:
    ring_fraction: float = _param("fraction of rings hit")
    sector_deg: float = _param("azimuth sector per hit ring (deg)")
    scramble_probability: float = _param("P(random range) in sector, else lost")


@dataclass(frozen=True)
class WetGroundParams:
    ground_tolerance_m: float = _param("ground band half-width around z = -mount_height (m)")
    loss_fraction: float = _param("ground returns lost (specular)")
    ground_intensity_factor: float = _param("intensity factor of wet ground")
    mirror_fraction: float = _param("near-ground object points mirrored")
    mirror_height_m: float = _param("max height of mirrored points (m)")
    mirror_intensity_factor: float = _param("intensity factor of mirror images")


@dataclass(frozen=True)
class IncompleteEchoParams:
    threshold: float = _param("echo strength threshold (intensity x albedo)")
    drop_probability: float = _param("P(drop) below threshold")
    albedo_min: float = _param("darkest paint albedo")
    cell_m: float = _param("albedo patch size (m)")


def _ranges(xyz: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.sqrt(np.sum(xyz * xyz, axis=1))


def _directions(xyz: NDArray[np.float64]) -> NDArray[np.float64]:
    """Unit ray directions; a point at the origin gets +x rather than a division by zero."""
    r = _ranges(xyz)
    out = np.zeros_like(xyz)
    ok = r > 1e-9
    out[ok] = xyz[ok] / r[ok, None]
    out[~ok] = (1.0, 0.0, 0.0)
    return out


def _azimuth(xyz: NDArray[np.float64]) -> NDArray[np.float64]:
    """Azimuth in [0, 2 pi), counter-clockwise from +x."""
    return np.mod(np.arctan2(xyz[:, 1], xyz[:, 0]), 2.0 * np.pi)


def _rows(xyz: NDArray[np.float64], intensity: NDArray[np.float64]) -> Points:
    out = np.empty((xyz.shape[0], 4), dtype=np.float32)
    out[:, :3] = xyz
    out[:, 3] = np.clip(intensity, 0.0, 1.0)
    return out


def beam_missing(
    points: Points, p: BeamMissingParams, rng: np.random.Generator, ctx: CorruptionContext
) -> Points:
    """Drop whole laser rings: ``round(ring_fraction * channels)`` rings chosen at random.

    Models failed or dirt-covered emitters. Rings come from elevation (``LidarConfig.ring_of``);
    the drop order is one permutation of all rings, so severities are nested for a seed.
    """
    channels = ctx.lidar.channels
    dropped = rng.permutation(channels)[: int(round(p.ring_fraction * channels))]
    keep = ~np.isin(ctx.lidar.ring_of(points), dropped)
    return points[keep]


def motion_blur(
    points: Points, p: MotionBlurParams, rng: np.random.Generator, ctx: CorruptionContext
) -> Points:
    """Rolling-shutter distortion of an uncompensated sweep, plus position jitter.

    A point at azimuth ``a`` (counter-clockwise from +x) is measured ``t = a / (2 pi f)`` after
    the sweep starts; the clean cloud is in the sweep-start sensor frame. By then the vehicle
    has moved along a constant-turn arc (speed ``v``, yaw rate ``w``) and the sensor reports the
    point in its moved frame: ``R(-w t) (p - d(t))``. Then Gaussian jitter ``jitter_m`` per axis.
    """
    xyz = points[:, :3].astype(np.float64)
    t = _azimuth(xyz) / (2.0 * np.pi * ctx.lidar.rotation_frequency)
    v, w = ctx.speed_mps, ctx.yaw_rate
    heading = w * t
    if abs(w) > 1e-9:
        dx, dy = v * np.sin(heading) / w, v * (1.0 - np.cos(heading)) / w
    else:
        dx, dy = v * t, np.zeros_like(t)
    rx, ry = xyz[:, 0] - dx, xyz[:, 1] - dy
    c, s = np.cos(heading), np.sin(heading)
    moved = np.stack([c * rx + s * ry, -s * rx + c * ry, xyz[:, 2]], axis=1)
    moved += rng.normal(0.0, p.jitter_m, size=moved.shape)
    return _rows(moved, points[:, 3].astype(np.float64))


def fog(points: Points, p: FogParams, rng: np.random.Generator, ctx: CorruptionContext) -> Points:
    """Beer-Lambert fog: two-way attenuation, threshold loss, and near-sensor backscatter.

    ``alpha = ln(20) / MOR`` (Koschmieder, ~3 / MOR); each return's intensity becomes
    ``I exp(-2 alpha r)`` and returns below ``threshold`` are lost. Backscatter from the fog
    itself: ``round(backscatter_fraction * N)`` soft returns along randomly chosen input rays at
    ranges uniform in ``[1 m, min(backscatter_max_m, r_hit)]``, intensity uniform in
    ``[threshold, 2 threshold)``, appended.
    """
    xyz = points[:, :3].astype(np.float64)
    r = _ranges(xyz)
    alpha = KOSCHMIEDER / p.visibility_m
    attenuated = points[:, 3].astype(np.float64) * np.exp(-2.0 * alpha * r)
    keep = attenuated >= p.threshold
    kept = _rows(xyz[keep], attenuated[keep])
    n_bs = int(round(p.backscatter_fraction * points.shape[0]))
    if n_bs == 0:
        return kept
    rays = rng.integers(0, points.shape[0], size=n_bs)
    upper = np.minimum(p.backscatter_max_m, r[rays])
    lower = np.minimum(MIN_SYNTHETIC_RANGE, 0.5 * upper)
    ranges = lower + rng.random(n_bs) * (upper - lower)
    intensity = p.threshold * (1.0 + rng.random(n_bs))
    scatter = _rows(_directions(xyz[rays]) * ranges[:, None], intensity)
    return np.concatenate([kept, scatter], axis=0)


def crosstalk(
    points: Points, p: CrosstalkParams, rng: np.random.Generator, ctx: CorruptionContext
) -> Points:
    """Echoes of another LiDAR's pulses, appended as extra returns (dual-return sensor).

    ``round(fraction * N)`` distinct input rays get a spurious return; a foreign pulse arrives
    at a time uncorrelated with ours, so its range is uniform in ``[1 m, lidar.range]``. Its
    intensity is the fixed ``intensity`` value, which marks it apart from CARLA's
    ``exp(-0.004 r)`` returns.
    """
    n = points.shape[0]
    n_add = min(n, int(round(p.fraction * n)))
    if n_add == 0:
        return points.copy()
    rays = rng.choice(n, size=n_add, replace=False)
    ranges = rng.uniform(MIN_SYNTHETIC_RANGE, ctx.lidar.range, size=n_add)
    dirs = _directions(points[rays, :3].astype(np.float64))
    spurious = _rows(dirs * ranges[:, None], np.full(n_add, p.intensity))
    return np.concatenate([points, spurious], axis=0)


def emi(points: Points, p: EmiParams, rng: np.random.Generator, ctx: CorruptionContext) -> Points:
    """Electromagnetic interference garbles contiguous azimuth sectors of some rings.

    ``round(ring_fraction * channels)`` rings are hit; on each, a sector of ``sector_deg``
    starting at a random azimuth is garbled: a point there gets a random range (uniform in
    ``[1 m, lidar.range]``, same ray, random intensity) with ``scramble_probability``, else it
    is lost. Scrambled points stay in place in the ordering.
    """
    xyz = points[:, :3].astype(np.float64)
    channels = ctx.lidar.channels
    hit_rings = rng.permutation(channels)[: int(round(p.ring_fraction * channels))]
    starts = rng.uniform(0.0, 2.0 * np.pi, size=channels)
    u_scramble, u_range, u_intensity = rng.random((3, points.shape[0]))
    ring = ctx.lidar.ring_of(points)
    offset = np.mod(_azimuth(xyz) - starts[ring], 2.0 * np.pi)
    in_sector = np.isin(ring, hit_rings) & (offset < np.radians(p.sector_deg))
    scramble = in_sector & (u_scramble < p.scramble_probability)
    ranges = MIN_SYNTHETIC_RANGE + u_range[scramble] * (ctx.lidar.range - MIN_SYNTHETIC_RANGE)
    out = points.copy()
    out[scramble] = _rows(_directions(xyz[scramble]) * ranges[:, None], u_intensity[scramble])
    return out[~(in_sector & ~scramble)]


def ground_mask(points: Points, lidar: LidarConfig, tolerance_m: float) -> NDArray[np.bool_]:
    """Points within ``tolerance_m`` of the ground plane ``z = -mount_height`` (sensor frame)."""
    return np.abs(points[:, 2].astype(np.float64) + lidar.mount_height) <= tolerance_m


def wet_ground(
    points: Points, p: WetGroundParams, rng: np.random.Generator, ctx: CorruptionContext
) -> Points:
    """A wet road: specular loss and dimming of ground returns, mirror images of objects.

    Ground returns (``ground_mask``) are lost with ``loss_fraction`` (the beam reflects away);
    survivors' intensity is scaled by ``ground_intensity_factor``. Object points between the
    ground band and ``mirror_height_m`` above ground are mirrored with ``mirror_fraction``: a
    copy at ``z' = 2 z_ground - z`` with intensity scaled by ``mirror_intensity_factor``,
    appended (a beam bounced off the water film sees the object's reflection).
    """
    ground_z = -ctx.lidar.mount_height
    ground = ground_mask(points, ctx.lidar, p.ground_tolerance_m)
    u_loss, u_mirror = rng.random((2, points.shape[0]))
    height = points[:, 2].astype(np.float64) - ground_z
    near = ~ground & (height > 0.0) & (height <= p.mirror_height_m)
    out = points[~(ground & (u_loss < p.loss_fraction))].copy()
    kept_ground = ground[~(ground & (u_loss < p.loss_fraction))]
    out[kept_ground, 3] *= np.float32(p.ground_intensity_factor)
    mirrored = points[near & (u_mirror < p.mirror_fraction)].copy()
    mirrored[:, 2] = 2.0 * ground_z - mirrored[:, 2]
    mirrored[:, 3] *= np.float32(p.mirror_intensity_factor)
    return np.concatenate([out, mirrored], axis=0)


def paint_albedo(
    points: Points, p: IncompleteEchoParams, rng: np.random.Generator, lidar: LidarConfig
) -> NDArray[np.float64]:
    """Reflectance proxy: a random albedo per ``cell_m`` BEV patch for above-ground points.

    Synthetic and CARLA intensities are pure range attenuation, so they carry no surface
    reflectance; this seeded, spatially coherent albedo (uniform in ``[albedo_min, 1]``) stands
    in for dark and bright paint. Ground points (within 0.2 m of the road) keep albedo 1.
    """
    cells = np.floor(points[:, :2].astype(np.float64) / p.cell_m).astype(np.int64)
    _, inverse = np.unique(cells, axis=0, return_inverse=True)
    n_cells = int(inverse.max()) + 1 if inverse.size else 0
    albedo = rng.uniform(p.albedo_min, 1.0, size=n_cells)[inverse.reshape(-1)]
    return np.where(ground_mask(points, lidar, 0.2), 1.0, albedo)


def incomplete_echo(
    points: Points, p: IncompleteEchoParams, rng: np.random.Generator, ctx: CorruptionContext
) -> Points:
    """Returns from dark, low-reflectance surfaces are too weak to register.

    Echo strength = intensity x ``paint_albedo`` (the reflectance proxy); a point whose strength
    is below ``threshold`` is lost with ``drop_probability``. Ground and bright surfaces stay.
    """
    strength = points[:, 3].astype(np.float64) * paint_albedo(points, p, rng, ctx.lidar)
    u = rng.random(points.shape[0])
    return points[~((strength < p.threshold) & (u < p.drop_probability))]
