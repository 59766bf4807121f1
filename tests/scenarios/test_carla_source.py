"""CarlaSource against an in-memory stand-in for the CARLA server (no server runs here).

The stand-in implements the handful of client calls the source makes; geometry types are the
real ``carla`` package's (client library only).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

carla = pytest.importorskip("carla")

from scenarios.carla_source import (  # noqa: E402
    CarlaError,
    CarlaSettings,
    CarlaSource,
    parse_carla_url,
)
from scenarios.lidar_config import LidarConfig  # noqa: E402
from scenarios.opv2v import OPV2VScenario  # noqa: E402
from scenarios.opv2v_writer import write_opv2v  # noqa: E402


class FakeSettings:
    def __init__(self, synchronous_mode: bool = False, fixed_delta_seconds: float | None = None):
        self.synchronous_mode = synchronous_mode
        self.fixed_delta_seconds = fixed_delta_seconds


class FakeVehicle:
    def __init__(self, actor_id: int, transform: Any, speed: float) -> None:
        self.id = actor_id
        self.transform = transform
        self.speed = speed
        self.bounding_box = carla.BoundingBox(
            carla.Location(0.5, 0.0, 0.7), carla.Vector3D(2.25, 0.9, 0.75)
        )
        self.autopilot = False
        self.destroyed = False

    def get_transform(self) -> Any:
        return self.transform

    def get_velocity(self) -> Any:
        yaw = math.radians(self.transform.rotation.yaw)
        return carla.Vector3D(self.speed * math.cos(yaw), self.speed * math.sin(yaw), 0.0)

    def set_autopilot(self, enabled: bool, port: int) -> None:
        self.autopilot = enabled

    def move(self, dt: float) -> None:
        yaw = math.radians(self.transform.rotation.yaw)
        loc = self.transform.location
        self.transform = carla.Transform(
            carla.Location(
                loc.x + self.speed * dt * math.cos(yaw),
                loc.y + self.speed * dt * math.sin(yaw),
                loc.z,
            ),
            self.transform.rotation,
        )

    def destroy(self) -> None:
        self.destroyed = True


class FakeSensor:
    def __init__(self, actor_id: int, mount: Any, parent: FakeVehicle) -> None:
        self.id, self.mount, self.parent = actor_id, mount, parent
        self.callback: Any = None
        self.destroyed = False
        self.silent = False

    def listen(self, callback: Any) -> None:
        self.callback = callback

    def stop(self) -> None:
        self.callback = None

    def destroy(self) -> None:
        self.destroyed = True


class FakeMeasurement:
    def __init__(self, frame: int, transform: Any, points: np.ndarray) -> None:
        self.frame = frame
        self.transform = transform
        self.raw_data = memoryview(points.astype(np.float32).tobytes())


class FakeBlueprint:
    def __init__(self, blueprint_id: str) -> None:
        self.id = blueprint_id
        self.attributes: dict[str, str] = {}

    def set_attribute(self, key: str, value: str) -> None:
        self.attributes[key] = value


class FakeLibrary:
    def __init__(self) -> None:
        self.cars = [FakeBlueprint("vehicle.tesla.model3"), FakeBlueprint("vehicle.audi.tt")]
        self.lidar = FakeBlueprint("sensor.lidar.ray_cast")

    def filter(self, pattern: str) -> list[FakeBlueprint]:
        return list(self.cars) if pattern == "vehicle.*" else []

    def find(self, blueprint_id: str) -> FakeBlueprint:
        assert blueprint_id == self.lidar.id
        return self.lidar


class FakeActorList(list):
    def filter(self, pattern: str) -> list[Any]:
        return [a for a in self if isinstance(a, FakeVehicle)]


class FakeWorld:
    def __init__(self, num_spawn_points: int = 6) -> None:
        self.settings = FakeSettings()
        self.applied: list[FakeSettings] = []
        self.frame = 100
        self.next_id = 10
        self.actors: list[Any] = []
        self.library = FakeLibrary()
        self.spawn_points = [
            carla.Transform(carla.Location(10.0 * i, 5.0, 0.0), carla.Rotation(yaw=90.0 * (i % 2)))
            for i in range(num_spawn_points)
        ]

    def get_settings(self) -> FakeSettings:
        return FakeSettings(self.settings.synchronous_mode, self.settings.fixed_delta_seconds)

    def apply_settings(self, settings: FakeSettings) -> None:
        self.settings = FakeSettings(settings.synchronous_mode, settings.fixed_delta_seconds)
        self.applied.append(self.settings)

    def get_map(self) -> Any:
        world = self

        class Map:
            def get_spawn_points(self) -> list[Any]:
                return world.spawn_points

        return Map()

    def get_blueprint_library(self) -> FakeLibrary:
        return self.library

    def try_spawn_actor(self, blueprint: FakeBlueprint, transform: Any) -> FakeVehicle:
        self.next_id += 1
        vehicle = FakeVehicle(self.next_id, transform, speed=5.0)
        self.actors.append(vehicle)
        return vehicle

    def spawn_actor(self, blueprint: FakeBlueprint, mount: Any, attach_to: FakeVehicle) -> Any:
        self.next_id += 1
        sensor = FakeSensor(self.next_id, mount, attach_to)
        self.actors.append(sensor)
        return sensor

    def get_actors(self) -> FakeActorList:
        return FakeActorList(a for a in self.actors if not a.destroyed)

    def tick(self) -> int:
        self.frame += 1
        for actor in self.actors:
            if isinstance(actor, FakeVehicle):
                actor.move(self.settings.fixed_delta_seconds or 0.05)
        for actor in self.actors:
            if isinstance(actor, FakeSensor) and actor.callback and not actor.silent:
                parent = actor.parent.get_transform()
                transform = carla.Transform(
                    carla.Location(
                        parent.location.x,
                        parent.location.y,
                        parent.location.z + actor.mount.location.z,
                    ),
                    parent.rotation,
                )
                points = np.array([[10.0, 0.0, -1.0, 0.5], [0.0, 3.0, 0.0, float(self.frame % 7)]])
                actor.callback(FakeMeasurement(self.frame - 1, transform, points))  # stale first
                actor.callback(FakeMeasurement(self.frame, transform, points))
        return self.frame


class FakeClient:
    def __init__(self, world: FakeWorld) -> None:
        self.world = world
        self.manager_calls: list[tuple[str, Any]] = []

    def set_timeout(self, seconds: float) -> None:
        self.timeout = seconds

    def get_world(self) -> FakeWorld:
        return self.world

    def get_trafficmanager(self, port: int) -> Any:
        calls = self.manager_calls

        class Manager:
            def set_synchronous_mode(self, value: bool) -> None:
                calls.append(("sync", value))

            def set_random_device_seed(self, seed: int) -> None:
                calls.append(("seed", seed))

        return Manager()


def make_source(**overrides: Any) -> tuple[CarlaSource, FakeWorld, FakeClient]:
    world = FakeWorld()
    client = FakeClient(world)
    values = {
        "num_cavs": 3,
        "num_background": 2,
        "num_frames": 4,
        "seed": 5,
        "sensor_timeout_s": 0.05,
    } | overrides
    return CarlaSource(CarlaSettings(**values), client=client), world, client


def test_synchronous_mode_lidar_attributes_and_cleanup() -> None:
    source, world, client = make_source()
    assert world.settings.synchronous_mode and world.settings.fixed_delta_seconds == 0.05
    assert ("sync", True) in client.manager_calls and ("seed", 5) in client.manager_calls
    attributes = world.library.lidar.attributes
    assert attributes["rotation_frequency"] == "20.0"
    assert int(attributes["points_per_second"]) == LidarConfig().rays_per_channel * 32 * 20
    assert all(v.autopilot for v in world.actors if isinstance(v, FakeVehicle))
    source.close()
    assert all(actor.destroyed for actor in world.actors)
    assert world.settings.synchronous_mode is False


def test_frames_carry_poses_points_and_world_boxes() -> None:
    with make_source()[0] as source:
        frame = source.frame(1)
        assert source.rate_hz == 10.0 and frame.timestamp == pytest.approx(0.1)
        assert frame.agent_ids == sorted(frame.agent_ids, key=str)
        assert frame.ego_id == frame.agent_ids[0]
        agent = frame.agent(frame.ego_id)
        np.testing.assert_allclose(agent.lidar_pose[2, 3] - agent.vehicle_pose[2, 3], 1.9)
        np.testing.assert_allclose(agent.points[0], [10.0, 0.0, -1.0, 0.5])
        assert agent.speed == pytest.approx(5.0)
        vehicle = next(i for i in frame.objects.ids if i == frame.ego_id)
        box = frame.objects.boxes[list(frame.objects.ids).index(vehicle)]
        pose = agent.vehicle_pose
        expected_centre = pose[:3, :3] @ [0.5, 0.0, 0.7] + pose[:3, 3]
        np.testing.assert_allclose(box[:3], expected_centre, atol=1e-5)
        np.testing.assert_allclose(box[3:6], [4.5, 1.8, 1.5], atol=1e-5)
        assert len(frame.objects) == 5
        assert source.frame(1) is frame  # recorded, not re-simulated


def test_missing_sensor_data_raises_naming_the_agent() -> None:
    source, world, _ = make_source()
    with source:
        for actor in world.actors:
            if isinstance(actor, FakeSensor):
                actor.silent = True
        with pytest.raises(CarlaError, match="no lidar data"):
            source.frame(0)


def test_carla_run_exports_to_opv2v(tmp_path: Path) -> None:
    with make_source(num_frames=2)[0] as source:
        frames = list(source.frames())
    out = write_opv2v(frames, tmp_path / "carla_run")
    replay = OPV2VScenario(out)
    assert replay.num_frames == 2
    np.testing.assert_allclose(
        replay.frame(1).agent(frames[1].ego_id).points[:, :3],
        frames[1].agent(frames[1].ego_id).points[:, :3],
    )


def test_parse_carla_url() -> None:
    settings = parse_carla_url("carla://sim.local:2001?town=Town05&cavs=3&frames=50", seed=4)
    assert (settings.host, settings.port, settings.town) == ("sim.local", 2001, "Town05")
    assert (settings.num_cavs, settings.num_frames, settings.seed) == (3, 50, 4)
    with pytest.raises(ValueError, match="unknown parameter"):
        parse_carla_url("carla://localhost?weather=rain")
    with pytest.raises(ValueError, match="num_cavs"):
        CarlaSettings(num_cavs=9)
