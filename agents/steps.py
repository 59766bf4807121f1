"""What a connected vehicle and the ego role compute in one tick: plain code, no Ray.

A :class:`Vehicle` holds one agent's model and state. Each tick it *senses* (its points from the
Frame, optionally corrupted), computes its *payload* -- a BEV map from the detector's encoder
(intermediate fusion), the cloud itself (early) or its own detections (late), see
:mod:`agents.payloads` -- and *compresses* it under its *reported* pose (true pose + pose error).
In the ego role it *decodes* and checks the messages that have arrived, keeps the newest
decodable one per sender across ticks (:class:`channel.inbox.ReceiveBuffer`, while younger than
the channel's maximum age), places each with the pose the sender reported when it sent it and
the ego's own true pose (pose error is on what neighbours report, as in ``cosim robustness``),
*fuses* and *detects*.

Ray actors (:mod:`agents.vehicle`) and the in-process executor call exactly this code, so the
two give the same detections for the same seed. Messages are bytes from the codec; a message
that cannot be decoded is recorded and skipped, never raised.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from agents.message_checks import REJECTED
from agents.payloads import Neighbour, make_payload, neighbour_to_ego, receive
from channel import CodecConfig, PoseErrorConfig, PoseErrorModel, PoseNoise
from channel.inbox import ReceiveBuffer
from models.checkpoint import load_checkpoint
from models.detector import CooperativeDetector
from models.device import resolve_device
from scenarios.corruption_models import CorruptionContext
from scenarios.corruptions import corrupt
from scenarios.frame import AgentObservation, Frame
from scenarios.lidar_config import LidarConfig

SENSE_STAGES = ("sense", "encode", "codec")
EGO_STAGES = ("decode", "refine", "fuse", "head")
# Reception statuses of a message the ego refused (counted as ``codec_errors`` in a run).
REFUSED_STATUSES = ("codec_error", "wrong_grid", REJECTED)


@dataclass(frozen=True)
class VehicleSpec:
    """How every vehicle of a run behaves, besides its model (the same for all of them).

    ``send`` is False when nothing is exchanged (an ego-only model, or the no-fusion
    reference); ``corruption`` None means clean points; ``max_age_s`` is how long the ego
    keeps fusing a neighbour's newest message (the channel's maximum age; None: no limit).
    ``codec`` codes maps; points and boxes messages use only its ``zstd_level``.
    """

    codec: CodecConfig = field(default_factory=CodecConfig)
    pose_error: PoseErrorConfig = field(default_factory=PoseErrorConfig)
    seed: int = 0
    corruption: str | None = None
    severity: int = 0
    lidar: LidarConfig | None = None
    send: bool = True
    torch_threads: int = 1
    refine_steps: int | None = None  # PKD refiner's DDIM steps (None: the checkpoint's; 0: off)
    refine_neighbours: bool = False  # also refine each received map before warping it
    refine_skip_above: float | None = None  # adaptive steps override (None: the checkpoint's)
    max_age_s: float | None = None  # the channel's: held maps older than this are dropped
    device: str = "cpu"  # where the vehicle's model runs (auto, cpu, cuda; models.device)


@dataclass(frozen=True)
class SenseResult:
    """What a vehicle tells the driver after sensing (the message bytes travel separately)."""

    agent_id: int
    tick: int
    t: float
    reported_pose: NDArray[np.float64]
    noise: PoseNoise
    xy: tuple[float, float]  # true position, world frame: the channel's range model uses it
    wire_bytes: int  # 0 when nothing was sent
    raw_bytes: int
    num_points: int
    timings: dict[str, float]


@dataclass(frozen=True)
class Inbound:
    """The channel's facts about one delivered message (its bytes come alongside)."""

    seq: int
    sender: int
    t_send: float


@dataclass(frozen=True)
class Reception:
    """What the ego did with one message: ``fused``, ``superseded`` (a newer one from the
    same sender arrived too, or is already held), ``not_selected`` (beyond range or K),
    ``codec_error``, ``wrong_grid`` or ``rejected`` (decoded, but failed
    :mod:`agents.message_checks`: the link's sender or send time, a bad pose, impossible
    values); ``error`` holds the reason for the last three. ``sender`` is the link's sender,
    so a bad message is always logged against who sent it. ``held`` marks a message fused
    again from the ego's buffer in a later tick than the one it arrived in."""

    seq: int
    sender: int
    t_send: float
    age_s: float
    status: str
    error: str = ""
    held: bool = False


@dataclass(frozen=True)
class EgoResult:
    """The ego's detections at one tick (ego LiDAR frame), what it did with each message, how
    many neighbours cover each BEV cell (``(H, W)`` uint8) and its stage timings."""

    ego_id: int
    tick: int
    boxes: NDArray[np.float32]
    scores: NDArray[np.float32]
    receptions: tuple[Reception, ...]
    coverage: NDArray[np.uint8]
    timings: dict[str, float]
    gamma: float = float("nan")  # the refiner's noise-adapter estimate (NaN: no refiner)
    refine_steps: int = 0  # DDIM steps the refiner ran on the ego map (0: skipped or none)


def load_model_bytes(blob: bytes, device: str = "cpu") -> CooperativeDetector:
    """A detector from checkpoint file bytes (as shipped through Ray's object store, so workers
    on other nodes need not see the driver's disk); loaded with ``weights_only`` onto
    ``device`` (``auto``: this process's GPU when it sees one)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt"
        path.write_bytes(blob)
        model, _, _ = load_checkpoint(path, map_location=resolve_device(device))
    return model.eval()


def sense_points(obs: AgentObservation, frame_index: int, spec: VehicleSpec) -> NDArray[np.float32]:
    """The agent's sweep, corrupted when ``spec`` says so, seeded by (seed, frame, agent)."""
    if spec.corruption is None or spec.severity == 0:
        return obs.points
    seq = np.random.SeedSequence(spec.seed, spawn_key=(2, frame_index, obs.agent_id))
    context = CorruptionContext(lidar=spec.lidar or LidarConfig(), speed_mps=obs.speed)
    return corrupt(obs.points, spec.corruption, spec.severity, np.random.default_rng(seq), context)


class Vehicle:
    """One connected vehicle: sense -> its payload (map, points or boxes) -> compress; in the
    ego role decode -> check -> fuse -> detect, through the model's :mod:`agents.payloads`
    strategy.

    Keeps the current tick's own payload and true pose for the ego role, and the newest
    decodable message of each neighbour across ticks (``inbox``).
    """

    def __init__(self, agent_id: int, model: CooperativeDetector, spec: VehicleSpec) -> None:
        self.agent_id = int(agent_id)
        self.model = model.eval()
        if spec.refine_skip_above is not None:
            self.model.set_refine_skip(spec.refine_skip_above)
        self.spec = spec
        self.payload = make_payload(
            self.model, spec.codec, spec.pose_error, spec.refine_steps, spec.refine_neighbours
        )
        self.pose_model = PoseErrorModel(spec.pose_error, spec.seed)
        self._own: tuple[int, Any, NDArray[np.float64]] | None = None
        self.inbox: ReceiveBuffer[tuple[Any, NDArray[np.float64]]] = ReceiveBuffer(spec.max_age_s)
        torch.set_num_threads(max(1, spec.torch_threads))

    def warm_up(self) -> None:
        """Run every stage once on a small made-up cloud (its own message fused as a
        neighbour's), so that torch's lazy start-up is not charged to the first tick; changes
        no state."""
        rng = np.random.default_rng(0)
        x0, y0, z0, x1, y1, z1 = self.model.grid.point_range
        points = rng.uniform((x0, y0, z0, 0.0), (x1, y1, z1, 1.0), (256, 4)).astype(np.float32)
        own = self.payload.own(points)
        message, _ = self.payload.encode(own, np.eye(4), 0.0, self.agent_id)
        got = receive(self.payload, message, self.agent_id, 0.0, np.eye(4))
        self.payload.detect(own, [Neighbour(got.item, np.eye(4))] if got.status == "ok" else [])

    def sense(self, frame: Frame, tick: int) -> tuple[SenseResult, bytes | None]:
        """Sense, compute the payload and (if sending) compress; returns the report and the
        message."""
        obs = frame.agent(self.agent_id)
        t0 = time.perf_counter()
        points = sense_points(obs, frame.index, self.spec)
        t1 = time.perf_counter()
        own = self.payload.own(points)
        t2 = time.perf_counter()
        reported, noise = self.pose_model.perturb(self.agent_id, obs.lidar_pose)
        message, raw_bytes = None, 0
        if self.spec.send:
            message, raw_bytes = self.payload.encode(
                own, reported, float(frame.timestamp), self.agent_id
            )
        t3 = time.perf_counter()
        self._own = (tick, own, obs.lidar_pose)  # the ego's own frame: exact
        result = SenseResult(
            agent_id=self.agent_id,
            tick=tick,
            t=float(frame.timestamp),
            reported_pose=reported,
            noise=noise,
            xy=(float(obs.lidar_pose[0, 3]), float(obs.lidar_pose[1, 3])),
            wire_bytes=len(message) if message is not None else 0,
            raw_bytes=raw_bytes,
            num_points=int(points.shape[0]),
            timings={"sense": t1 - t0, "encode": t2 - t1, "codec": t3 - t2},
        )
        return result, message

    def fuse(
        self, frame: Frame, tick: int, messages: Sequence[tuple[Inbound, bytes | None]]
    ) -> EgoResult:
        """The ego role at ``tick``: decode what arrived, keep each sender's newest decodable
        message (across ticks, while younger than ``spec.max_age_s``), fuse, detect.

        Every held message is placed with the pose its sender reported at send time and the
        ego's pose now (see :mod:`agents.payloads` on staleness). Never raises for a bad
        message. If this vehicle has not sensed this tick (it was restarted in between), it
        senses again first.
        """
        if self._own is None or self._own[0] != tick:
            self.sense(frame, tick)
        assert self._own is not None
        _, own, own_pose = self._own
        t_now = float(frame.timestamp)
        t0 = time.perf_counter()
        newest: dict[int, Inbound] = {}
        for inbound, _ in messages:
            best = newest.get(inbound.sender)
            if best is None or (inbound.t_send, inbound.seq) > (best.t_send, best.seq):
                newest[inbound.sender] = inbound
        receptions: list[Reception] = []
        for inbound, data in messages:
            age = t_now - inbound.t_send
            if newest[inbound.sender] is not inbound:
                receptions.append(
                    Reception(inbound.seq, inbound.sender, inbound.t_send, age, "superseded")
                )
                continue
            got = receive(self.payload, data, inbound.sender, inbound.t_send, own_pose)
            if got.status != "ok":
                receptions.append(
                    Reception(
                        inbound.seq, inbound.sender, inbound.t_send, age, got.status, got.error
                    )
                )
            elif not self.inbox.offer(
                inbound.sender, inbound.seq, inbound.t_send, (got.item, got.sender_pose)
            ):
                receptions.append(
                    Reception(inbound.seq, inbound.sender, inbound.t_send, age, "superseded")
                )
        arrived = {inbound.seq for inbound, _ in messages}
        held = self.inbox.current(t_now)
        neighbours = [
            Neighbour(
                h.item[0],
                neighbour_to_ego(h.item[1], own_pose),
                age_s=max(0.0, t_now - h.t_send),
                stale=h.t_send < t_now,
            )
            for h in held
        ]
        t1 = time.perf_counter()
        result = self.payload.detect(own, neighbours)
        picked = set(result.chosen.tolist())
        for i, h in enumerate(held):
            receptions.append(
                Reception(
                    h.seq,
                    h.sender,
                    h.t_send,
                    t_now - h.t_send,
                    "fused" if i in picked else "not_selected",
                    held=h.seq not in arrived,
                )
            )
        receptions.sort(key=lambda r: r.seq)
        dets = result.detections
        return EgoResult(
            self.agent_id,
            tick,
            np.asarray(dets.boxes, np.float32).reshape(-1, 7),
            np.asarray(dets.scores, np.float32).reshape(-1),
            tuple(receptions),
            result.coverage,
            {"decode": t1 - t0, **result.timings},
            result.gamma,
            result.steps_run,
        )
