"""Ray-cast LiDAR of the synthetic world, after CARLA's ``sensor.lidar.ray_cast``.

The scene is one triangle mesh per frame: a static part (ground plane, buildings) built once and
the vehicle boxes re-posed every frame, each its own Embree geometry so a hit's triangle index
maps straight back to the object it belongs to. All agents' rays go through Embree in one call.
The sensing vehicle's own body is skipped by starting each of its rays where the ray leaves the
own box (boxes are convex, so nothing else can lie in between); occlusion is what Embree's
first hit says it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import trimesh
from embreex import mesh_construction, rtcore_scene
from numpy.typing import NDArray

from scenarios.lidar_config import LidarConfig

_UNIT_BOX = trimesh.creation.box(extents=(1.0, 1.0, 1.0)).triangles  # (12, 3, 3), centred


def box_triangles(boxes: NDArray[np.floating]) -> NDArray[np.float32]:
    """``(M, 7)`` world boxes (z = centre) -> ``(M * 12, 3, 3)`` triangles, 12 per box in order."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    local = _UNIT_BOX[None] * b[:, None, None, 3:6]  # (M, 12, 3, 3)
    cos, sin = np.cos(b[:, 6])[:, None, None], np.sin(b[:, 6])[:, None, None]
    x = local[..., 0] * cos - local[..., 1] * sin + b[:, 0, None, None]
    y = local[..., 0] * sin + local[..., 1] * cos + b[:, 1, None, None]
    z = local[..., 2] + b[:, 2, None, None]
    return np.stack([x, y, z], axis=-1).reshape(-1, 3, 3).astype(np.float32)


def ground_triangles(half_size: float) -> NDArray[np.float32]:
    """Two triangles covering the square ``[-half_size, half_size]^2`` at z = 0."""
    h = float(half_size)
    quad = np.array([[-h, -h, 0.0], [h, -h, 0.0], [h, h, 0.0], [-h, h, 0.0]])
    return quad[[[0, 1, 2], [0, 2, 3]]].astype(np.float32)


def ray_box_exit(
    origin: NDArray[np.float64], dirs: NDArray[np.float64], box: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Distance along each ray at which it leaves ``box`` (0 where the ray misses it)."""
    cos, sin = np.cos(box[6]), np.sin(box[6])
    rot = np.array([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])  # world -> box
    o = rot @ (origin - box[:3])
    d = dirs @ rot.T
    half = box[3:6] / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1, t2 = (-half - o) * inv, (half - o) * inv
    t_near = np.nanmax(np.minimum(t1, t2), axis=1)
    t_far = np.nanmin(np.maximum(t1, t2), axis=1)
    return np.where((t_far >= t_near) & (t_far > 0.0), t_far, 0.0)


@dataclass(frozen=True)
class Scan:
    """One agent's sweep: sensor-frame points and per-object hit counts (aligned with boxes)."""

    points: NDArray[np.float32]
    hits: NDArray[np.int32]


@dataclass
class ScanTimings:
    """Wall seconds spent in the last :meth:`LidarSimulator.scan` call, by stage."""

    mesh_build: float = 0.0  # Embree scene from the static triangles + posed vehicle boxes
    ray_setup: float = 0.0  # world rays, own-body exit distances
    ray_cast: float = 0.0  # Embree first-hit query, all agents at once
    hit_count: float = 0.0  # noise, range, intensity, drop-off, per-object hit counts


class LidarSimulator:
    """Casts one LiDAR sweep per agent against static boxes, the ground and vehicle boxes."""

    def __init__(
        self,
        config: LidarConfig,
        static_boxes: NDArray[np.floating] | None = None,
        ground_half_size: float | None = None,
    ) -> None:
        self.config = config
        elevation = config.elevation_angles()
        n_az = config.rays_per_channel
        azimuth = np.arange(n_az) * (2.0 * np.pi / n_az)
        el, az = np.meshgrid(elevation, azimuth, indexing="ij")  # ring-major order
        self.directions = np.stack(
            [np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1
        ).reshape(-1, 3)
        parts = []
        if ground_half_size is not None:
            parts.append(ground_triangles(ground_half_size))
        if static_boxes is not None and len(static_boxes):
            parts.append(box_triangles(static_boxes))
        self.static_triangles = (
            np.concatenate(parts) if parts else np.zeros((0, 3, 3), dtype=np.float32)
        )
        with np.errstate(divide="ignore"):
            self._inverse_directions = 1.0 / self.directions
        self._exit_cache: dict[bytes, NDArray[np.float64]] = {}
        self.timings = ScanTimings()

    @property
    def rays_per_sweep(self) -> int:
        return int(self.directions.shape[0])

    def scene_mesh(self, boxes: NDArray[np.floating]) -> trimesh.Trimesh:
        """The whole scene as one trimesh (static part first, then 12 triangles per box)."""
        tris = np.concatenate([self.static_triangles, box_triangles(boxes)])
        return trimesh.Trimesh(**trimesh.triangles.to_kwargs(tris))

    def scan(
        self,
        boxes: NDArray[np.floating],
        lidar_poses: list[NDArray[np.float64]],
        own_box: list[int | None],
        rngs: list[np.random.Generator],
    ) -> list[Scan]:
        """One sweep for each sensor pose (world <- LiDAR) against the static scene plus ``boxes``.

        ``own_box[k]``: index in ``boxes`` of sensor k's own vehicle (skipped), or None.
        ``rngs[k]`` draws that sensor's noise and drop-off. Hits count returned points only.
        """
        cfg, t0 = self.config, time.perf_counter()
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        scene = rtcore_scene.EmbreeScene()
        dynamic_geom = -2  # Embree numbers geometries 0, 1, ... in the order they are added
        if len(self.static_triangles):
            mesh_construction.TriangleMesh(scene, self.static_triangles)
        if len(boxes):
            mesh_construction.TriangleMesh(scene, box_triangles(boxes))
            dynamic_geom = int(len(self.static_triangles) > 0)
        t1 = time.perf_counter()
        n_rays, n_agents = self.rays_per_sweep, len(lidar_poses)
        flat_o = np.empty((n_agents, n_rays, 3), dtype=np.float32)
        flat_d = np.empty((n_agents, n_rays, 3), dtype=np.float32)
        start = np.zeros((n_agents, n_rays))
        for k, pose in enumerate(lidar_poses):
            world_dirs = self.directions @ pose[:3, :3].T
            if own_box[k] is not None:
                exit_at = self._own_box_exit(pose, boxes[own_box[k]])
                start[k] = np.where(exit_at > 0.0, exit_at + 1e-3, 0.0)
            flat_o[k] = pose[:3, 3] + world_dirs * start[k][:, None]
            flat_d[k] = world_dirs
        far = np.maximum(cfg.range - start.reshape(-1), 0.0).astype(np.float32)
        t2 = time.perf_counter()
        result = scene.run(flat_o.reshape(-1, 3), flat_d.reshape(-1, 3), dists=far, output=1)
        t3 = time.perf_counter()
        geom = result["geomID"].reshape(n_agents, n_rays)
        prim = result["primID"].reshape(n_agents, n_rays)
        dist = result["tfar"].reshape(n_agents, n_rays).astype(np.float64) + start
        scans = [
            self._returns(geom[k], prim[k], dist[k], dynamic_geom, len(boxes), rngs[k])
            for k in range(n_agents)
        ]
        self.timings = ScanTimings(
            mesh_build=t1 - t0,
            ray_setup=t2 - t1,
            ray_cast=t3 - t2,
            hit_count=time.perf_counter() - t3,
        )
        return scans

    def _own_box_exit(self, pose: NDArray[np.float64], box: NDArray[np.float64]) -> NDArray:
        """Where each ray leaves the sensor's own box; a slab test in the sensor frame with
        precomputed inverse directions when the box is aligned with the sensor (the usual case)."""
        centre = pose[:3, :3].T @ (box[:3] - pose[:3, 3])
        rel_yaw = float(box[6] - np.arctan2(pose[1, 0], pose[0, 0]))
        aligned = abs(pose[2, 0]) + abs(pose[2, 1]) < 1e-9
        if not aligned or abs(np.sin(rel_yaw)) > 1e-9:
            local = box.copy()
            local[:3], local[6] = centre, rel_yaw
            return ray_box_exit(np.zeros(3), self.directions, local)
        # Rounded so the result is a pure function of the cache key (bit-exact replays).
        centre, half = centre.round(9), (box[3:6] / 2).round(9)  # yaw differs by 0 or pi
        key = np.concatenate([centre, half]).tobytes()
        if key not in self._exit_cache:  # the same for a vehicle in every frame
            if len(self._exit_cache) > 64:
                self._exit_cache.clear()
            t_near = np.full(self.rays_per_sweep, -np.inf)
            t_far = np.full(self.rays_per_sweep, np.inf)
            for axis in range(3):
                inv = self._inverse_directions[:, axis]
                with np.errstate(invalid="ignore"):
                    a, b = (centre[axis] - half[axis]) * inv, (centre[axis] + half[axis]) * inv
                t_near = np.fmax(t_near, np.fmin(a, b))
                t_far = np.fmin(t_far, np.fmax(a, b))
            exit_at = np.where((t_far >= t_near) & (t_far > 0.0), t_far, 0.0)
            exit_at.setflags(write=False)
            self._exit_cache[key] = exit_at
        return self._exit_cache[key]

    def _returns(
        self,
        geom: NDArray[np.int32],
        prim: NDArray[np.int32],
        dist: NDArray[np.float64],
        dynamic_geom: int,
        num_boxes: int,
        rng: np.random.Generator,
    ) -> Scan:
        """Noise, range limit, intensity and drop-off for one sweep, as CARLA applies them."""
        cfg = self.config
        keep = geom >= 0
        if cfg.dropoff_general_rate > 0.0:
            keep &= rng.random(keep.shape[0]) >= cfg.dropoff_general_rate
        idx = np.flatnonzero(keep)
        d = dist[idx]
        if cfg.noise_stddev > 0.0:
            d = d + rng.normal(0.0, cfg.noise_stddev, d.shape[0])
        intensity = np.exp(-cfg.atmosphere_attenuation_rate * d)
        ok = (d > 0.0) & (d <= cfg.range)
        if cfg.dropoff_zero_intensity > 0.0 and cfg.dropoff_intensity_limit > 0.0:
            low = intensity < cfg.dropoff_intensity_limit
            p_drop = cfg.dropoff_zero_intensity * (1.0 - intensity / cfg.dropoff_intensity_limit)
            ok &= ~(low & (rng.random(d.shape[0]) < p_drop))
        idx, d, intensity = idx[ok], d[ok], intensity[ok]
        points = np.empty((idx.shape[0], 4), dtype=np.float32)
        points[:, :3] = self.directions[idx] * d[:, None]
        points[:, 3] = intensity
        on_box = geom[idx] == dynamic_geom
        hits = np.bincount(prim[idx][on_box] // 12, minlength=num_boxes).astype(np.int32)
        return Scan(points, hits)
