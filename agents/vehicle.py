"""The Ray actor of one connected vehicle: holds a :class:`~agents.steps.Vehicle` and moves data.

The Frame arrives as one object-store reference shared by every actor of the tick; the
message bytes leave as their own object (``num_returns=2``), so the driver handles only the
small report and passes the message reference straight on to the ego actors.
"""

from __future__ import annotations

from collections.abc import Sequence

import ray

from agents.steps import EgoResult, Inbound, SenseResult, Vehicle, VehicleSpec, load_model_bytes
from scenarios.frame import Frame


@ray.remote
class VehicleActor:
    """A vehicle (and, when asked, the ego role) in its own worker process."""

    def __init__(self, agent_id: int, model_blob: bytes, spec: VehicleSpec) -> None:
        self.vehicle = Vehicle(agent_id, load_model_bytes(model_blob, spec.device), spec)

    def warm_up(self) -> str:
        """Run every stage once (see ``Vehicle.warm_up``); returns the node id."""
        self.vehicle.warm_up()
        return self.node_id()

    def node_id(self) -> str:
        """The Ray node this actor runs on (placement checks)."""
        return ray.get_runtime_context().get_node_id()

    @ray.method(num_returns=2)
    def sense(self, frame: Frame, tick: int) -> tuple[SenseResult, bytes | None]:
        return self.vehicle.sense(frame, tick)

    def fuse(
        self, frame: Frame, tick: int, inbound: Sequence[Inbound], *messages: bytes | None
    ) -> EgoResult:
        """Ego role; ``messages[i]`` are the bytes of ``inbound[i]`` (resolved by Ray)."""
        return self.vehicle.fuse(frame, tick, list(zip(inbound, messages, strict=True)))
