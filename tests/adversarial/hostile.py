"""Shared inputs of the adversarial tests: the shipped attention checkpoint, a few synthetic
intersection frames, every vehicle's honest message, and forgers of checksum-valid hostile
messages (a forger signs what it sends: the checksum is integrity, not authentication)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.steps import EgoResult, Inbound, Vehicle, VehicleSpec
from channel import CodecConfig, GridHeader, decode_feature, encode_feature
from cosim.sim.scoring import ground_truth
from models.checkpoint import load_checkpoint
from models.metrics import DetectionAccumulator
from scenarios.frame import Frame
from scenarios.source import open_source

CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "checkpoints" / "attention.pt"
FRAME_INDICES = (0, 10, 20)

Forger = Callable[[bytes], bytes]


@dataclass
class World:
    """Frames, one Vehicle per agent and each agent's honest message per frame."""

    frames: list[Frame]
    vehicles: dict[int, Vehicle]
    messages: list[dict[int, bytes]]

    def ego_id(self, k: int) -> int:
        return self.frames[k].ego_id

    def fuse(self, k: int, replace: dict[int, bytes | None]) -> EgoResult:
        """The ego's result at frame ``k`` with some senders' messages replaced (``None``:
        that sender's message is dropped, as if never received). Frame 0 starts a new run: the
        ego forgets the maps it held from an earlier run."""
        frame = self.frames[k]
        if k == 0:
            self.vehicles[frame.ego_id].inbox.clear()
        inbox = []
        for seq, (sender, msg) in enumerate(sorted(self.messages[k].items())):
            data = replace.get(sender, msg)
            if sender in replace and data is None:
                continue
            inbox.append((Inbound(seq, sender, float(frame.timestamp)), data))
        return self.vehicles[frame.ego_id].fuse(frame, k, inbox)

    def ap(self, replace_per_frame: Callable[[int], dict[int, bytes | None]]) -> dict[float, float]:
        acc = DetectionAccumulator()
        for k, frame in enumerate(self.frames):
            result = self.fuse(k, replace_per_frame(k))
            config = self.vehicles[frame.ego_id].model.config
            acc.add(result.boxes, result.scores, ground_truth(frame, frame.ego_id, config))
        return acc.average_precision()


def build_world() -> World:
    model, _, _ = load_checkpoint(CHECKPOINT)
    source = open_source("intersection", num_frames=max(FRAME_INDICES) + 1)
    frames = [source.frame(i) for i in FRAME_INDICES]
    spec = VehicleSpec(codec=CodecConfig("int8", {"topk": 0.1}))
    vehicles = {a: Vehicle(a, model, spec) for a in frames[0].agent_ids}
    messages = []
    for k, frame in enumerate(frames):
        out = {}
        for a in frame.agent_ids:
            _, msg = vehicles[a].sense(frame, k)
            if a != frame.ego_id and msg is not None:
                out[a] = msg
        messages.append(out)
    return World(frames, vehicles, messages)


def forge(
    message: bytes,
    *,
    scale: float = 1.0,
    pose: np.ndarray | None = None,
    sender: int | None = None,
    grid: GridHeader | None = None,
) -> bytes:
    """Re-encode an honest message with changed content and a valid checksum (float32 values,
    so no quantiser stands between the forger and the wire)."""
    dec = decode_feature(message)
    h = dec.header
    feature = dec.feature * np.float32(scale)
    g = grid or h.grid
    if g.shape != h.grid.shape:
        rows, cols = g.shape
        padded = np.zeros((feature.shape[0], rows, cols), np.float32)
        r, c = min(rows, feature.shape[1]), min(cols, feature.shape[2])
        padded[:, :r, :c] = feature[:, :r, :c]
        feature = padded
    return encode_feature(
        feature,
        h.pose if pose is None else pose,
        h.t_send,
        h.sender_id if sender is None else sender,
        g,
        CodecConfig("float32"),
    )
