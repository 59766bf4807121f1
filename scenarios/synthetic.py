"""The built-in synthetic LiDAR world: the project's embedded default frame source.

A scenario (built-in name or YAML path) gives a road map, traffic and LiDAR settings; every frame
the traffic advances by 1/rate_hz and each connected vehicle's LiDAR is ray-cast against the
scene. Everything random derives from the scenario seed, so the same seed gives the same frames
bit for bit, and ``frame(i)`` equals the i-th frame of ``frames()`` (traffic is re-simulated
from the nearest stored checkpoint on random access).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from scenarios.frame import AgentObservation, Frame, ObjectSet
from scenarios.geometry import yaw_pose
from scenarios.lidar import LidarSimulator
from scenarios.road_map import RoadMap, build_map
from scenarios.scenario_file import DEFAULT_SCENARIO, RATE_HZ, Scenario, load_scenario
from scenarios.traffic import Traffic, TrafficState

CHECKPOINT_EVERY = 100  # frames between stored traffic snapshots for random access


class SyntheticSource:
    """FrameSource over a synthetic scenario: traffic + ray-cast LiDAR for every connected vehicle.

    Agents are the connected vehicles (agent id = vehicle id); the ego is the lowest id. Objects
    are all vehicles, moving and parked, with per-agent LiDAR hit counts.
    """

    def __init__(
        self,
        scenario: Scenario,
        num_cavs: int | None = None,
        num_frames: int | None = None,
        seed: int | None = None,
    ) -> None:
        changes: dict[str, object] = {}
        if num_cavs is not None:
            if not 2 <= num_cavs <= min(7, scenario.vehicles):
                raise ValueError(
                    f"num_cavs must be in [2, {min(7, scenario.vehicles)}], got {num_cavs}"
                )
            changes["connected"] = int(num_cavs)
        if seed is not None:
            if not 0 <= seed < 2**32:
                raise ValueError(f"seed must be in [0, 2**32), got {seed}")
            changes["seed"] = int(seed)
        if num_frames is not None:
            if num_frames < 1:
                raise ValueError(f"num_frames must be >= 1, got {num_frames}")
            changes["duration_s"] = num_frames / RATE_HZ
        self.scenario = dataclasses.replace(scenario, **changes)
        self._num_frames = int(num_frames) if num_frames is not None else scenario.num_frames
        sc = self.scenario
        self.road: RoadMap = build_map(sc.layout, sc.map_params, sc.seed)
        self.lidar = LidarSimulator(
            sc.lidar, self.road.buildings, ground_half_size=self.road.extent + sc.lidar.range
        )
        traffic = Traffic(
            self.road,
            sc.vehicles,
            sc.parked,
            sc.connected,
            sc.mix,
            sc.seed,
            dt=1.0 / RATE_HZ,
            signal_green=float(sc.map_params.get("signal_green", 10.0)),
            signal_clearance=float(sc.map_params.get("signal_clearance", 4.0)),
        )
        self.agent_ids: list[int] = [int(i) for i in sorted(traffic.cav_ids)]
        self._checkpoints: list[Traffic] = [copy.deepcopy(traffic)]
        self._live, self._live_index = traffic, 0
        self.last_traffic_seconds = 0.0

    @classmethod
    def from_scenario(
        cls,
        scenario: str | Path | Scenario = DEFAULT_SCENARIO,
        *,
        num_cavs: int | None = None,
        num_frames: int | None = None,
        seed: int | None = None,
    ) -> SyntheticSource:
        """Build from a built-in name, a YAML path, or a parsed :class:`Scenario`."""
        parsed = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        return cls(parsed, num_cavs=num_cavs, num_frames=num_frames, seed=seed)

    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def num_frames(self) -> int:
        return self._num_frames

    @property
    def rate_hz(self) -> float:
        return RATE_HZ

    @property
    def ego_id(self) -> int:
        return self.agent_ids[0]

    def traffic_state(self, index: int) -> TrafficState:
        """All vehicles at frame ``index`` (no LiDAR)."""
        self._check_index(index)
        if index < self._live_index:
            base = index // CHECKPOINT_EVERY
            self._live = copy.deepcopy(self._checkpoints[base])
            self._live_index = base * CHECKPOINT_EVERY
        while self._live_index < index:
            self._live.step()
            self._live_index += 1
            if self._live_index == len(self._checkpoints) * CHECKPOINT_EVERY:
                self._checkpoints.append(copy.deepcopy(self._live))
        return self._live.state()

    def frame(self, index: int) -> Frame:
        """Frame ``index``: traffic at t = index / rate_hz and every agent's LiDAR sweep."""
        start = time.perf_counter()
        state = self.traffic_state(index)
        self.last_traffic_seconds = time.perf_counter() - start
        mount = self.scenario.lidar.mount_height
        rows = {int(v): k for k, v in enumerate(state.ids)}
        own = [rows[a] for a in self.agent_ids]
        vehicle_poses = [yaw_pose(*state.boxes[r, :2], 0.0, state.boxes[r, 6]) for r in own]
        lidar_poses = [yaw_pose(*state.boxes[r, :2], mount, state.boxes[r, 6]) for r in own]
        rngs = [np.random.default_rng([self.scenario.seed, index, a, 3]) for a in self.agent_ids]
        scans = self.lidar.scan(state.boxes, lidar_poses, own, rngs)
        agents = {
            a: AgentObservation(
                agent_id=a,
                lidar_pose=lidar_poses[k],
                points=scans[k].points,
                speed=float(state.speeds[own[k]]),
                vehicle_pose=vehicle_poses[k],
            )
            for k, a in enumerate(self.agent_ids)
        }
        objects = ObjectSet(
            state.ids,
            state.boxes,
            state.categories,
            {a: scans[k].hits for k, a in enumerate(self.agent_ids)},
        )
        return Frame(index / RATE_HZ, index, agents, objects, self.ego_id)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        """Frames ``start`` .. ``stop - 1`` in order (default: to the end)."""
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        for index in range(start, stop):
            yield self.frame(index)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.num_frames:
            raise IndexError(f"{self.name}: frame {index} outside [0, {self.num_frames})")
