"""The one Frame type every source produces: synthetic world, OPV2V replay, CARLA.

A Frame holds, at one timestamp, each connected agent's LiDAR sweep in its own sensor frame and
its true LiDAR pose, plus the ground-truth objects in the world frame. Helpers express boxes and
points in any agent's frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from scenarios.geometry import boxes_to_frame, points_to_frame, relative_transform


@dataclass(frozen=True, eq=False)
class AgentObservation:
    """One connected agent (vehicle or roadside unit) at one timestamp.

    ``points``: float32 (N, 4) x, y, z, intensity in this agent's LiDAR frame.
    ``lidar_pose``: float64 4x4, world <- LiDAR.  ``vehicle_pose``: world <- vehicle body
    (OPV2V's ``true_ego_pos``), if known.  ``speed`` in m/s.
    """

    agent_id: int
    lidar_pose: NDArray[np.float64]
    points: NDArray[np.float32]
    speed: float = 0.0
    vehicle_pose: NDArray[np.float64] | None = None
    is_rsu: bool = False

    def __post_init__(self) -> None:
        pose = np.asarray(self.lidar_pose, dtype=np.float64)
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise ValueError(f"agent {self.agent_id}: lidar_pose must be a finite 4x4 matrix")
        points = np.asarray(self.points, dtype=np.float32)
        if points.ndim != 2 or points.shape[1] != 4:
            raise ValueError(
                f"agent {self.agent_id}: points must be (N, 4) x,y,z,intensity, got {points.shape}"
            )
        object.__setattr__(self, "lidar_pose", pose)
        object.__setattr__(self, "points", points)
        if self.vehicle_pose is not None:
            object.__setattr__(
                self, "vehicle_pose", np.asarray(self.vehicle_pose, dtype=np.float64)
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AgentObservation):
            return NotImplemented
        same_vehicle_pose = (self.vehicle_pose is None) == (other.vehicle_pose is None) and (
            self.vehicle_pose is None or np.array_equal(self.vehicle_pose, other.vehicle_pose)
        )
        return (
            self.agent_id == other.agent_id
            and np.array_equal(self.lidar_pose, other.lidar_pose)
            and np.array_equal(self.points, other.points)
            and self.speed == other.speed
            and self.is_rsu == other.is_rsu
            and same_vehicle_pose
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class ObjectSet:
    """Ground-truth objects in the world frame.

    ``ids``: int64 (M,).  ``boxes``: float64 (M, 7) x, y, z (centre), l, w, h, yaw (radians),
    world frame.  ``categories``: one label per object ("car", "van", "truck", ...).
    ``hits``: for sources that know it (the synthetic world), agent id -> int32 (M,) number of
    LiDAR points of that agent on each object.
    """

    ids: NDArray[np.int64]
    boxes: NDArray[np.float64]
    categories: tuple[str, ...] = ()
    hits: Mapping[int, NDArray[np.int32]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 7)
        if ids.shape[0] != boxes.shape[0]:
            raise ValueError(f"ObjectSet: {ids.shape[0]} ids but {boxes.shape[0]} boxes")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ObjectSet: object ids must be unique")
        categories = tuple(self.categories) or ("car",) * len(ids)
        if len(categories) != len(ids):
            raise ValueError(f"ObjectSet: {len(categories)} categories for {len(ids)} objects")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "categories", categories)
        object.__setattr__(
            self, "hits", {int(k): np.asarray(v, dtype=np.int32) for k, v in self.hits.items()}
        )

    @classmethod
    def empty(cls) -> ObjectSet:
        return cls(np.zeros(0, np.int64), np.zeros((0, 7)), ())

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ObjectSet):
            return NotImplemented
        return (
            np.array_equal(self.ids, other.ids)
            and np.array_equal(self.boxes, other.boxes)
            and self.categories == other.categories
            and self.hits.keys() == other.hits.keys()
            and all(np.array_equal(self.hits[k], other.hits[k]) for k in self.hits)
        )

    __hash__ = None  # type: ignore[assignment]

    def subset(self, mask: NDArray[np.bool_]) -> ObjectSet:
        """The objects where ``mask`` is true, keeping hits aligned."""
        keep = np.asarray(mask, dtype=bool)
        return ObjectSet(
            self.ids[keep],
            self.boxes[keep],
            tuple(c for c, k in zip(self.categories, keep, strict=True) if k),
            {agent: counts[keep] for agent, counts in self.hits.items()},
        )


@dataclass(frozen=True, eq=False)
class Frame:
    """Everything one source knows at one timestamp.

    ``timestamp`` in simulated seconds from the scenario start; ``index`` the frame number.
    ``agents`` is ordered; ``ego_id`` names the agent whose frame is the default view.
    Connected vehicles appear in ``objects`` too, under their own agent id.
    """

    timestamp: float
    index: int
    agents: Mapping[int, AgentObservation]
    objects: ObjectSet
    ego_id: int

    def __post_init__(self) -> None:
        agents = dict(self.agents)
        for key, agent in agents.items():
            if key != agent.agent_id:
                raise ValueError(f"Frame: agent stored under id {key} says it is {agent.agent_id}")
        if self.ego_id not in agents:
            raise KeyError(f"Frame: ego id {self.ego_id} is not among agents {sorted(agents)}")
        object.__setattr__(self, "agents", agents)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (
            self.timestamp == other.timestamp
            and self.index == other.index
            and self.ego_id == other.ego_id
            and list(self.agents) == list(other.agents)
            and all(self.agents[k] == other.agents[k] for k in self.agents)
            and self.objects == other.objects
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def agent_ids(self) -> list[int]:
        return list(self.agents)

    def agent(self, agent_id: int) -> AgentObservation:
        """The agent with this id, or a KeyError naming the ids present."""
        try:
            return self.agents[agent_id]
        except KeyError:
            raise KeyError(
                f"frame {self.index}: no agent {agent_id}; agents are {self.agent_ids}"
            ) from None

    def transform(self, source_id: int, target_id: int) -> NDArray[np.float64]:
        """4x4 transform from ``source_id``'s LiDAR frame to ``target_id``'s LiDAR frame."""
        return relative_transform(
            self.agent(source_id).lidar_pose, self.agent(target_id).lidar_pose
        )

    def points_in(self, source_id: int, target_id: int | None = None) -> NDArray[np.float32]:
        """``source_id``'s points expressed in ``target_id``'s LiDAR frame (default: the ego's)."""
        target = self.ego_id if target_id is None else target_id
        return points_to_frame(self.agent(source_id).points, self.transform(source_id, target))

    def objects_in(
        self,
        agent_id: int | None = None,
        max_range: float | None = None,
        exclude_self: bool = True,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Ground-truth ``(ids, boxes (M, 7))`` in an agent's LiDAR frame (default: the ego's).

        ``max_range`` keeps objects whose centre is within that BEV distance of the sensor;
        ``exclude_self`` drops the agent's own vehicle.
        """
        target = self.ego_id if agent_id is None else agent_id
        world_to_lidar = np.linalg.inv(self.agent(target).lidar_pose)
        boxes = boxes_to_frame(self.objects.boxes, world_to_lidar)
        keep = np.ones(len(self.objects), dtype=bool)
        if exclude_self:
            keep &= self.objects.ids != target
        if max_range is not None:
            keep &= np.hypot(boxes[:, 0], boxes[:, 1]) <= max_range
        return self.objects.ids[keep], boxes[keep]
