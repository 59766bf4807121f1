"""LiDAR settings mirroring CARLA's ``sensor.lidar.ray_cast`` attributes (OPV2V defaults)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class LidarConfig:
    """One spinning LiDAR; names and meanings follow CARLA's blueprint attributes.

    ``points_per_second / rotation_frequency / channels`` rays per laser per sweep; a ray that hits
    nothing within ``range`` returns no point. Intensity is
    ``exp(-atmosphere_attenuation_rate * d)``
    as in CARLA; ``dropoff_*`` drop returns at random, more often at low intensity.
    """

    channels: int = 32
    range: float = 120.0
    upper_fov: float = 15.0
    lower_fov: float = -25.0
    points_per_second: int = 576_000
    rotation_frequency: float = 10.0
    mount_height: float = 1.9
    noise_stddev: float = 0.0
    atmosphere_attenuation_rate: float = 0.004
    dropoff_general_rate: float = 0.0
    dropoff_intensity_limit: float = 0.8
    dropoff_zero_intensity: float = 0.0

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ValueError(f"lidar.channels must be >= 1, got {self.channels}")
        if self.range <= 0:
            raise ValueError(f"lidar.range must be > 0, got {self.range}")
        if not self.lower_fov < self.upper_fov:
            raise ValueError(
                f"lidar.lower_fov ({self.lower_fov}) must be below upper_fov ({self.upper_fov})"
            )
        if self.rotation_frequency <= 0 or self.points_per_second <= 0:
            raise ValueError("lidar.rotation_frequency and lidar.points_per_second must be > 0")

    @property
    def rays_per_channel(self) -> int:
        """Azimuth steps in one full sweep."""
        return max(1, int(round(self.points_per_second / self.rotation_frequency / self.channels)))

    def elevation_angles(self) -> NDArray[np.float64]:
        """Laser elevations in radians, ring 0 = lowest, evenly spaced as CARLA does."""
        if self.channels == 1:
            return np.radians(np.array([self.upper_fov]))
        return np.radians(np.linspace(self.lower_fov, self.upper_fov, self.channels))

    def ring_of(self, points: NDArray[np.floating]) -> NDArray[np.int64]:
        """Nearest laser ring of each sensor-frame point, from its elevation angle."""
        p = np.asarray(points, dtype=np.float64)
        if p.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        elevation = np.degrees(np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1])))
        if self.channels == 1:
            return np.zeros(p.shape[0], dtype=np.int64)
        step = (self.upper_fov - self.lower_fov) / (self.channels - 1)
        ring = np.rint((elevation - self.lower_fov) / step)
        return np.clip(ring, 0, self.channels - 1).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "lidar") -> LidarConfig:
        """Build from a mapping, rejecting unknown keys with a message naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**data)
