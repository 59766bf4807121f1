"""Where the vehicles run: in this process (debugging, overhead baseline) or as Ray actors.

Both executors run the same :class:`agents.steps.Vehicle` code, so a run gives the same
detections on either. The driver sees only this small interface: start the vehicles, share a
frame, ask the senders to sense, ask the egos to fuse. A message stays an opaque *handle*: the
bytes themselves in process, an object-store reference under Ray (the driver never fetches it;
Ray hands it straight from the sender's actor to the ego's).

Under Ray a call to a vehicle whose actor died comes back as a :class:`VehicleFailure` instead
of a result; the driver logs it and carries on. Ray restarts the actor up to ``max_restarts``
times; after that the vehicle is left out of the rest of the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayError

from agents.steps import EgoResult, Inbound, SenseResult, Vehicle, VehicleSpec, load_model_bytes
from cosim.common.ray_setup import DEFAULT_CONNECT_TIMEOUT_S, start_ray
from models.device import check_gpu_fraction, cluster_device
from scenarios.frame import Frame


@dataclass(frozen=True)
class VehicleFailure:
    """A vehicle call that did not come back: which agent, in which stage, why."""

    agent_id: int
    stage: str
    error: str


class Executor(Protocol):
    """What the driver needs from an executor."""

    name: str

    def start(self, agent_ids: Sequence[int], model_blob: bytes, spec: VehicleSpec) -> None: ...

    def put_frame(self, frame: Frame) -> Any: ...

    def sense(
        self, frame: Any, tick: int, agent_ids: Sequence[int]
    ) -> dict[int, tuple[SenseResult, Any] | VehicleFailure]: ...

    def fuse(
        self, frame: Any, tick: int, inboxes: Mapping[int, Sequence[tuple[Inbound, Any]]]
    ) -> dict[int, EgoResult | VehicleFailure]: ...

    def alive(self, agent_id: int) -> bool: ...

    def close(self) -> None: ...


class InProcessExecutor:
    """Every vehicle in this process, one after another; errors propagate (for debugging)."""

    name = "inprocess"

    def __init__(self) -> None:
        self.vehicles: dict[int, Vehicle] = {}

    def start(self, agent_ids: Sequence[int], model_blob: bytes, spec: VehicleSpec) -> None:
        for agent_id in agent_ids:
            model = load_model_bytes(model_blob, spec.device)
            self.vehicles[int(agent_id)] = Vehicle(agent_id, model, spec)
            self.vehicles[int(agent_id)].warm_up()

    def put_frame(self, frame: Frame) -> Frame:
        return frame

    def sense(
        self, frame: Frame, tick: int, agent_ids: Sequence[int]
    ) -> dict[int, tuple[SenseResult, Any] | VehicleFailure]:
        return {a: self.vehicles[a].sense(frame, tick) for a in agent_ids}

    def fuse(
        self, frame: Frame, tick: int, inboxes: Mapping[int, Sequence[tuple[Inbound, Any]]]
    ) -> dict[int, EgoResult | VehicleFailure]:
        return {ego: self.vehicles[ego].fuse(frame, tick, list(m)) for ego, m in inboxes.items()}

    def alive(self, agent_id: int) -> bool:
        return agent_id in self.vehicles

    def close(self) -> None:
        self.vehicles.clear()


class RayExecutor:
    """One :class:`agents.vehicle.VehicleActor` per vehicle, spread over the cluster's nodes.

    Connects to ``address`` (``auto``, ``ray://host:10001``) or starts a local instance, and
    shuts down only an instance it started. ``timeout_s`` bounds each wait for a result.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        actor_cpus: float = 0.25,
        max_restarts: int = 1,
        timeout_s: float = 120.0,
        num_cpus: int | None = None,
        metrics: bool = False,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        gpus_per_vehicle: float = 0.25,
    ) -> None:
        self.address, self.actor_cpus = address, actor_cpus
        self.gpus_per_vehicle = check_gpu_fraction(gpus_per_vehicle, "--gpus-per-vehicle")
        self.metrics, self.connect_timeout_s = metrics, connect_timeout_s
        self.max_restarts, self.timeout_s = max_restarts, timeout_s
        self.num_cpus = num_cpus
        self.actors: dict[int, Any] = {}
        self.failures: dict[int, int] = {}
        self._started_ray = False
        self._model_ref: Any = None

    def start(self, agent_ids: Sequence[int], model_blob: bytes, spec: VehicleSpec) -> None:
        from agents.vehicle import VehicleActor

        if not ray.is_initialized():
            # A local instance of our own listens on loopback only; a cluster is joined
            # within connect_timeout_s or not at all.
            start_ray(
                self.address,
                num_cpus=self.num_cpus,
                metrics=self.metrics,
                connect_timeout_s=self.connect_timeout_s,
            )
            self._started_ray = True
        device = cluster_device(spec.device, ray.cluster_resources().get("GPU", 0.0))
        spec = dataclasses.replace(spec, device=device)
        blob = self._model_ref = ray.put(model_blob)  # kept alive for actor restarts
        for agent_id in agent_ids:
            self.actors[int(agent_id)] = VehicleActor.options(
                num_cpus=self.actor_cpus,
                num_gpus=self.gpus_per_vehicle if device == "cuda" else 0,
                max_restarts=self.max_restarts,
                scheduling_strategy="SPREAD",
                name=None,
            ).remote(int(agent_id), blob, spec)
        # Wait until every actor has loaded and warmed up its model: start-up is not a tick.
        ray.get([actor.warm_up.remote() for actor in self.actors.values()], timeout=self.timeout_s)

    def put_frame(self, frame: Frame) -> Any:
        return ray.put(frame)

    def _get(self, agent_id: int, stage: str, ref: Any) -> Any:
        """``ray.get`` one result, turning a dead or stuck actor into a VehicleFailure."""
        try:
            return ray.get(ref, timeout=self.timeout_s)
        except (RayError, GetTimeoutError) as err:
            # ActorUnavailableError (restarting) is transient; a death or a hang counts.
            if isinstance(err, ActorDiedError | GetTimeoutError):
                self.failures[agent_id] = self.failures.get(agent_id, 0) + 1
                if 0 <= self.max_restarts < self.failures[agent_id]:
                    self.actors.pop(agent_id, None)  # restarts used up: leave it out from now
            first_line = (str(err).strip().splitlines() or [""])[0]
            return VehicleFailure(agent_id, stage, f"{type(err).__name__}: {first_line}")

    def sense(
        self, frame: Any, tick: int, agent_ids: Sequence[int]
    ) -> dict[int, tuple[SenseResult, Any] | VehicleFailure]:
        refs = {a: self.actors[a].sense.remote(frame, tick) for a in agent_ids}
        out: dict[int, tuple[SenseResult, Any] | VehicleFailure] = {}
        for agent_id, (report_ref, message_ref) in refs.items():
            report = self._get(agent_id, "sense", report_ref)
            out[agent_id] = report if isinstance(report, VehicleFailure) else (report, message_ref)
        return out

    def fuse(
        self, frame: Any, tick: int, inboxes: Mapping[int, Sequence[tuple[Inbound, Any]]]
    ) -> dict[int, EgoResult | VehicleFailure]:
        refs = {
            ego: self.actors[ego].fuse.remote(
                frame, tick, [i for i, _ in messages], *[h for _, h in messages]
            )
            for ego, messages in inboxes.items()
        }
        return {ego: self._get(ego, "fuse", ref) for ego, ref in refs.items()}

    def alive(self, agent_id: int) -> bool:
        return agent_id in self.actors

    def node_ids(self) -> dict[int, str]:
        """Agent id -> the node its actor runs on."""
        return {a: ray.get(actor.node_id.remote()) for a, actor in self.actors.items()}

    def close(self) -> None:
        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)
        self.actors.clear()
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False


def make_executor(
    kind: str,
    address: str | None = None,
    actor_cpus: float = 0.25,
    max_restarts: int = 1,
    *,
    metrics: bool = False,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    gpus_per_vehicle: float = 0.25,
) -> InProcessExecutor | RayExecutor:
    if kind == "inprocess":
        return InProcessExecutor()
    if kind == "ray":
        return RayExecutor(
            address,
            actor_cpus,
            max_restarts,
            metrics=metrics,
            connect_timeout_s=connect_timeout_s,
            gpus_per_vehicle=gpus_per_vehicle,
        )
    raise ValueError(f"unknown executor {kind!r}; use 'ray' or 'inprocess'")
