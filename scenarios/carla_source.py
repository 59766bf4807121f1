"""A live CARLA server as a frame source, in synchronous mode as OpenCDA drives it.

The client sets the world to synchronous mode with a fixed step (0.05 s, CARLA ticks at 20 Hz
as in OPV2V), spawns connected vehicles with a ``sensor.lidar.ray_cast`` each plus background
traffic, all on the Traffic Manager's autopilot with a fixed seed, and records one Frame every
``frame_step`` ticks (10 Hz). Each LiDAR turns once per tick (``rotation_frequency = 1 / step``)
so every tick yields a full sweep with the configured rays per sweep.

Points and poses stay in CARLA's own convention (x forward, y right, z up; rotations in
degrees), which is the convention OPV2V files use, so ``write_opv2v`` dumps a CARLA run that
OpenCOOD can load. Requires the ``carla`` extra (client only) and a running server.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scenarios.frame import AgentObservation, Frame, ObjectSet
from scenarios.geometry import pose_to_matrix, wrap_angle
from scenarios.lidar_config import LidarConfig
from scenarios.opv2v import opencood_cav_order


class CarlaError(RuntimeError):
    """The CARLA server did something the source cannot continue from (a lost sensor frame)."""


@dataclass(frozen=True)
class CarlaSettings:
    """Where the server is and what to spawn; ``seed`` fixes spawn points and autopilot."""

    host: str = "localhost"
    port: int = 2000
    timeout_s: float = 20.0
    town: str | None = None
    num_cavs: int = 4
    num_background: int = 40
    num_frames: int = 100
    seed: int = 0
    step_s: float = 0.05
    frame_step: int = 2
    traffic_manager_port: int = 8000
    sensor_timeout_s: float = 5.0
    lidar: LidarConfig = field(default_factory=LidarConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.num_cavs <= 7:
            raise ValueError(f"carla: num_cavs must be in 1..7, got {self.num_cavs}")
        if self.num_frames < 1 or self.frame_step < 1 or self.step_s <= 0:
            raise ValueError("carla: num_frames, frame_step and step_s must be positive")

    @property
    def rate_hz(self) -> float:
        return 1.0 / (self.step_s * self.frame_step)


def transform_to_matrix(transform: Any) -> NDArray[np.float64]:
    """A ``carla.Transform`` -> 4x4 ``world <- local`` (OPV2V order: roll, yaw, pitch)."""
    loc, rot = transform.location, transform.rotation
    return pose_to_matrix([loc.x, loc.y, loc.z, rot.roll, rot.yaw, rot.pitch])


def vehicle_world_box(actor: Any) -> NDArray[np.float64]:
    """A vehicle actor's bounding box as a world-frame ``(7,)`` box; yaw in radians."""
    pose = transform_to_matrix(actor.get_transform())
    box = actor.bounding_box
    centre = pose[:3, :3] @ np.array([box.location.x, box.location.y, box.location.z]) + pose[:3, 3]
    size = 2.0 * np.array([box.extent.x, box.extent.y, box.extent.z])
    yaw = float(wrap_angle(np.radians(actor.get_transform().rotation.yaw)))
    return np.concatenate([centre, size, [yaw]])


def measurement_points(measurement: Any) -> NDArray[np.float32]:
    """``carla.LidarMeasurement`` raw bytes -> float32 ``(N, 4)`` x, y, z, intensity."""
    raw = np.frombuffer(bytes(measurement.raw_data), dtype=np.float32)
    if raw.size % 4:
        raise CarlaError(f"lidar frame {measurement.frame}: {raw.size} floats is not (N, 4)")
    return raw.reshape(-1, 4).copy()


class CarlaSource:
    """FrameSource over a live CARLA run; frames are recorded as the simulation advances.

    ``frame(i)`` runs the simulation forward to frame i if needed and returns the recorded
    frame, so asking again gives the same Frame. Use as a context manager (or call ``close``):
    it restores the server's settings and destroys every actor it spawned.
    """

    def __init__(self, settings: CarlaSettings, client: Any | None = None) -> None:
        import carla  # the optional 'carla' extra; imported here so the package works without it

        self.settings = settings
        self._carla = carla
        self.client = client if client is not None else carla.Client(settings.host, settings.port)
        self.client.set_timeout(settings.timeout_s)
        self.world = (
            self.client.load_world(settings.town) if settings.town else self.client.get_world()
        )
        self._original_settings = self.world.get_settings()
        self._actors: list[Any] = []
        self._sensors: dict[int, Any] = {}
        self._queues: dict[int, queue.Queue[Any]] = {}
        self._frames: list[Frame] = []
        self._tick = 0
        try:
            self._start()
        except Exception:
            self.close()
            raise

    @property
    def name(self) -> str:
        town = self.settings.town or "carla"
        return f"{town}_seed{self.settings.seed}"

    @property
    def num_frames(self) -> int:
        return self.settings.num_frames

    @property
    def rate_hz(self) -> float:
        return self.settings.rate_hz

    def _start(self) -> None:
        carla, s = self._carla, self.settings
        world_settings = self.world.get_settings()
        world_settings.synchronous_mode = True
        world_settings.fixed_delta_seconds = s.step_s
        self.world.apply_settings(world_settings)
        manager = self.client.get_trafficmanager(s.traffic_manager_port)
        manager.set_synchronous_mode(True)
        manager.set_random_device_seed(s.seed)
        rng = np.random.default_rng(s.seed)
        spawn_points = list(self.world.get_map().get_spawn_points())
        wanted = s.num_cavs + s.num_background
        if len(spawn_points) < s.num_cavs:
            raise CarlaError(f"map has {len(spawn_points)} spawn points, need {s.num_cavs} CAVs")
        order = rng.permutation(len(spawn_points))[:wanted]
        library = self.world.get_blueprint_library()
        car_blueprints = sorted(library.filter("vehicle.*"), key=lambda bp: bp.id)
        cavs: list[Any] = []
        for slot, index in enumerate(order):
            blueprint = car_blueprints[int(rng.integers(len(car_blueprints)))]
            actor = self.world.try_spawn_actor(blueprint, spawn_points[int(index)])
            if actor is None:
                continue
            self._actors.append(actor)
            actor.set_autopilot(True, s.traffic_manager_port)
            if slot < s.num_cavs:
                cavs.append(actor)
        if len(cavs) < s.num_cavs:
            raise CarlaError(f"spawned {len(cavs)} of {s.num_cavs} connected vehicles")
        lidar_blueprint = library.find("sensor.lidar.ray_cast")
        for key, value in self._lidar_attributes().items():
            lidar_blueprint.set_attribute(key, value)
        mount = carla.Transform(carla.Location(x=0.0, z=s.lidar.mount_height))
        for cav in cavs:
            sensor = self.world.spawn_actor(lidar_blueprint, mount, attach_to=cav)
            self._actors.append(sensor)
            self._sensors[int(cav.id)] = sensor
            self._queues[int(cav.id)] = queue.Queue()
            sensor.listen(self._queues[int(cav.id)].put)
        self._cav_actors = {int(cav.id): cav for cav in cavs}
        self.agent_ids = [int(i) for i in opencood_cav_order(str(c) for c in self._cav_actors)]

    def _lidar_attributes(self) -> dict[str, str]:
        """CARLA blueprint attributes: one full sweep per tick, the configured rays per sweep."""
        lidar, s = self.settings.lidar, self.settings
        rays_per_sweep = lidar.rays_per_channel * lidar.channels
        return {
            "channels": str(lidar.channels),
            "range": str(lidar.range),
            "upper_fov": str(lidar.upper_fov),
            "lower_fov": str(lidar.lower_fov),
            "rotation_frequency": str(1.0 / s.step_s),
            "points_per_second": str(int(round(rays_per_sweep / s.step_s))),
            "noise_stddev": str(lidar.noise_stddev),
            "atmosphere_attenuation_rate": str(lidar.atmosphere_attenuation_rate),
            "dropoff_general_rate": str(lidar.dropoff_general_rate),
            "dropoff_intensity_limit": str(lidar.dropoff_intensity_limit),
            "dropoff_zero_intensity": str(lidar.dropoff_zero_intensity),
        }

    def _advance(self) -> Frame:
        """Tick until the next recorded frame and build it from the sensors and the actors."""
        measurements: dict[int, Any] = {}
        for _ in range(self.settings.frame_step):
            server_frame = self.world.tick()
            self._tick += 1
            for agent_id, sensor_queue in self._queues.items():
                measurements[agent_id] = self._measurement(agent_id, sensor_queue, server_frame)
        return self._build_frame(measurements)

    def _measurement(self, agent_id: int, sensor_queue: queue.Queue[Any], frame: int) -> Any:
        """The measurement of server frame ``frame``, skipping stale ones."""
        while True:
            try:
                measurement = sensor_queue.get(timeout=self.settings.sensor_timeout_s)
            except queue.Empty:
                raise CarlaError(
                    f"agent {agent_id}: no lidar data for server frame {frame}"
                ) from None
            if measurement.frame >= frame:
                return measurement

    def _build_frame(self, measurements: dict[int, Any]) -> Frame:
        index = len(self._frames)
        agents = {}
        for agent_id in self.agent_ids:
            vehicle = self._cav_actors[agent_id]
            velocity = vehicle.get_velocity()
            agents[agent_id] = AgentObservation(
                agent_id=agent_id,
                lidar_pose=transform_to_matrix(measurements[agent_id].transform),
                points=measurement_points(measurements[agent_id]),
                speed=float(np.linalg.norm([velocity.x, velocity.y, velocity.z])),
                vehicle_pose=transform_to_matrix(vehicle.get_transform()),
            )
        vehicles = sorted(self.world.get_actors().filter("vehicle.*"), key=lambda a: int(a.id))
        objects = ObjectSet(
            ids=np.array([int(v.id) for v in vehicles], dtype=np.int64),
            boxes=np.array([vehicle_world_box(v) for v in vehicles]).reshape(-1, 7),
        )
        return Frame(index / self.rate_hz, index, agents, objects, ego_id=self.agent_ids[0])

    def frame(self, index: int) -> Frame:
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} outside 0..{self.num_frames - 1}")
        while len(self._frames) <= index:
            self._frames.append(self._advance())
        return self._frames[index]

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        end = self.num_frames if stop is None else min(stop, self.num_frames)
        for index in range(start, end):
            yield self.frame(index)

    def close(self) -> None:
        """Stop the sensors, destroy what was spawned, and give the server its settings back."""
        for sensor in self._sensors.values():
            sensor.stop()
        for actor in reversed(self._actors):
            actor.destroy()
        self._actors.clear()
        self._sensors.clear()
        self.world.apply_settings(self._original_settings)

    def __enter__(self) -> CarlaSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_carla_url(url: str, **overrides: Any) -> CarlaSettings:
    """``carla://host:port?town=Town05&cavs=4&background=40&frames=100&seed=0`` -> settings."""
    from urllib.parse import parse_qs, urlparse

    parsed = urlparse(url)
    if parsed.scheme != "carla":
        raise ValueError(f"{url!r}: a CARLA source looks like carla://host:2000?town=Town05")
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    names = {
        "town": "town",
        "cavs": "num_cavs",
        "background": "num_background",
        "frames": "num_frames",
        "seed": "seed",
        "tm_port": "traffic_manager_port",
    }
    unknown = sorted(set(query) - set(names))
    if unknown:
        raise ValueError(f"{url!r}: unknown parameter(s) {unknown}; known: {sorted(names)}")
    values: dict[str, Any] = {"host": parsed.hostname or "localhost", "port": parsed.port or 2000}
    for key, value in query.items():
        values[names[key]] = value if key == "town" else int(value)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return CarlaSettings(**values)
