"""What a vehicle sends and how the ego fuses it, per kind of fusion: one strategy object each.

==========  ==============================  ==========================================
kind        the sender sends                the ego, with the held messages
==========  ==============================  ==========================================
``map``     its encoded BEV map (codec)     warp + fuse the maps (none, max, attention,
            (none and intermediate fusion)  AGF): ``fuse_and_detect``
``points``  its cloud, int16 cm + uint8     merge the clouds into its frame, encode once,
            (early fusion)                  detect: ``detect_early``
``boxes``   its detections, float32         merge its own and the neighbours' boxes by
            (late fusion)                   rotated NMS: ``detect_late``
==========  ==============================  ==========================================

The ego-side calls are those of :mod:`models.inference`, the path ``cosim eval`` takes for the
same fusion (:func:`models.inference.predict`), on what the channel delivered.

Every kind travels on the same wire frame (:mod:`channel.wire`; the kinds: :mod:`channel.codec`,
:mod:`channel.payload_codec`), is checked by :mod:`agents.message_checks` before anything of it
is used, and is placed in the ego frame the same way: with the pose its sender *reported at
send time* and the ego's current true pose (:func:`neighbour_to_ego`). Nothing is extrapolated.
A message 0.2 s old shows the world as it was 0.2 s ago, seen from where its sender said it was
then: static structure lands where it belongs (up to pose error), but a moving car lands where
it *was* (3 m behind at 15 m/s), whether it arrives as map cells, points or a box. Pose error
moves all three alike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from agents.message_checks import (
    REJECTED,
    MessageExpectation,
    check_message,
    check_payload,
)
from channel import (
    CodecConfig,
    CodecError,
    GridHeader,
    GridMismatchError,
    PoseErrorConfig,
    decode_feature,
    encode_feature,
)
from channel.payload_codec import decode_boxes, decode_cloud, encode_boxes, encode_cloud
from models.detector import CooperativeDetector
from models.device import to_numpy
from models.grid import GridSpec
from models.head import Detections
from models.inference import detect_alone, detect_early, encode_points, fuse_and_detect
from models.late_fusion import detect_late
from models.received import EgoDetections, NeighbourFeature

# Fusions whose messages are not BEV maps; every other one (none included) sends maps.
PAYLOAD_OF_FUSION = {"early": "points", "late": "boxes"}
PAYLOAD_KINDS = ("map", "points", "boxes")


def payload_kind(fusion: str) -> str:
    """``map``, ``points`` or ``boxes``: what a vehicle of a model with ``fusion`` sends."""
    return PAYLOAD_OF_FUSION.get(fusion, "map")


@dataclass(frozen=True)
class Neighbour:
    """One held message ready to fuse: the decoded payload in its sender's frame (a map and
    its sent mask, a cloud, or Detections), sender -> ego from the reported pose at send
    time, the message's age at fusion and whether it was sent before this tick."""

    data: Any
    neighbour_to_ego: NDArray[np.float64]
    age_s: float = 0.0
    stale: bool = False


@dataclass(frozen=True)
class Received:
    """A decoded message: what ``Payload.item`` kept of it and the sender's reported pose;
    or, when refused, ``status`` (``codec_error``, ``wrong_grid``, ``rejected``) and why."""

    status: str
    error: str = ""
    item: Any = None
    sender_pose: NDArray[np.float64] | None = None


def grid_header(grid: GridSpec) -> GridHeader:
    """The codec's view of a message map's grid (the model's ``message_grid``)."""
    x0, y0, _, x1, y1, _ = grid.point_range
    return GridHeader(x0, y0, x1, y1, grid.cell_size)


def neighbour_to_ego(
    sender_reported: NDArray[np.float64], ego_pose: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Sender LiDAR -> ego LiDAR from the sender's reported pose *at send time* and the ego's
    current pose: a stale message is placed where its sender said it was."""
    return np.linalg.inv(ego_pose) @ sender_reported


class Payload(Protocol):
    """One kind of message: what a vehicle keeps of its own sweep, how it codes it, how the
    ego decodes and checks a neighbour's, and how the ego detects with them."""

    kind: str

    def own(self, points: NDArray[np.float32]) -> Any:
        """The vehicle's own tick from its (maybe corrupted) sweep: map, cloud or boxes."""
        ...

    def encode(
        self, own: Any, pose: NDArray[np.float64], t_send: float, sender: int
    ) -> tuple[bytes, int]:
        """The message under the reported ``pose`` and its raw float32 size in bytes."""
        ...

    def decode(self, data: bytes) -> Any:
        """Bytes -> the codec's decoded message; raises CodecError."""
        ...

    def check(
        self, decoded: Any, sender: int, t_send: float, ego_pose: NDArray[np.float64]
    ) -> str | None:
        """:mod:`agents.message_checks` on a decoded message: None or the reason to reject."""
        ...

    def item(self, decoded: Any) -> Any:
        """What the ego holds of an accepted message (sender frame)."""
        ...

    def detect(self, own: Any, neighbours: Sequence[Neighbour]) -> EgoDetections:
        """The ego's detections (ego LiDAR frame) from its own tick and the neighbours."""
        ...


@dataclass(frozen=True)
class _Base:
    """What every payload kind holds: the model, the map codec settings (points and boxes
    use only its zstd level), what the ego accepts, the run's pose-error level, refiner
    settings."""

    model: CooperativeDetector
    codec: CodecConfig
    expect: MessageExpectation
    pose_error: PoseErrorConfig
    refine_steps: int | None = None
    refine_neighbours: bool = False

    def check(
        self, decoded: Any, sender: int, t_send: float, ego_pose: NDArray[np.float64]
    ) -> str | None:
        """Points and boxes: :func:`agents.message_checks.check_payload` (maps override)."""
        return check_payload(decoded, sender, t_send, ego_pose, self.expect)

    def transforms(self, neighbours: Sequence[Neighbour]) -> NDArray[np.float64]:
        if not neighbours:
            return np.zeros((0, 4, 4))
        return np.stack([n.neighbour_to_ego for n in neighbours])


class MapPayload(_Base):
    """Intermediate fusion (and none): the encoded BEV map of the sender's message window,
    feature codec; the vehicle's own map is the detection grid's part of it."""

    kind = "map"

    def own(self, points: NDArray[np.float32]) -> torch.Tensor:
        return encode_points(self.model, points)

    def encode(
        self, own: torch.Tensor, pose: NDArray[np.float64], t_send: float, sender: int
    ) -> tuple[bytes, int]:
        message = encode_feature(to_numpy(own), pose, t_send, sender, self.expect.grid, self.codec)
        return message, 4 * own.numel()

    def decode(self, data: bytes) -> Any:
        return decode_feature(
            data, expected_shape=self.expect.shape, expected_grid=self.expect.grid
        )

    def check(
        self, decoded: Any, sender: int, t_send: float, ego_pose: NDArray[np.float64]
    ) -> str | None:
        return check_message(decoded, sender, t_send, ego_pose, self.expect)

    def item(self, decoded: Any) -> tuple[torch.Tensor, NDArray[np.bool_] | None]:
        values = decoded.feature
        feature = torch.from_numpy(values if values.flags.writeable else values.copy())
        return feature, decoded.mask if decoded.header.sparse else None

    def detect(self, own: torch.Tensor, neighbours: Sequence[Neighbour]) -> EgoDetections:
        # The cues AGF reads: how old the map is, whether it was warped with a pose from an
        # earlier tick, and the pose-error level every vehicle of the run reports.
        maps = [
            NeighbourFeature(
                n.data[0],
                n.neighbour_to_ego,
                n.data[1],
                age_s=n.age_s,
                stale=n.stale,
                pose_sigma=self.pose_error.std_xy_m,
            )
            for n in neighbours
        ]
        return fuse_and_detect(
            self.model, self.model.own_map(own), maps, self.refine_steps, self.refine_neighbours
        )


class PointsPayload(_Base):
    """Early fusion: the sweep itself, int16 centimetres + uint8 intensity."""

    kind = "points"

    def own(self, points: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(points, np.float32).reshape(-1, 4)

    def encode(
        self, own: NDArray[np.float32], pose: NDArray[np.float64], t_send: float, sender: int
    ) -> tuple[bytes, int]:
        return encode_cloud(own, pose, t_send, sender, self.codec.zstd_level), own.nbytes

    def decode(self, data: bytes) -> Any:
        return decode_cloud(data, max_points=self.expect.max_points)

    def item(self, decoded: Any) -> NDArray[np.float32]:
        return decoded.points

    def detect(self, own: NDArray[np.float32], neighbours: Sequence[Neighbour]) -> EgoDetections:
        """``cosim eval``'s early fusion (:func:`models.inference.detect_early`)."""
        return detect_early(
            self.model,
            own,
            [n.data for n in neighbours],
            self.transforms(neighbours),
            self.refine_steps,
        )


class BoxesPayload(_Base):
    """Late fusion: the vehicle's own detections, float32 boxes and scores."""

    kind = "boxes"

    def own(self, points: NDArray[np.float32]) -> Detections:
        return detect_alone(self.model, [points])[0]

    def encode(
        self, own: Detections, pose: NDArray[np.float64], t_send: float, sender: int
    ) -> tuple[bytes, int]:
        message = encode_boxes(own.boxes, own.scores, pose, t_send, sender, self.codec.zstd_level)
        return message, 32 * len(own.scores)

    def decode(self, data: bytes) -> Any:
        return decode_boxes(data, max_boxes=self.expect.max_boxes)

    def item(self, decoded: Any) -> Detections:
        return Detections(decoded.boxes, decoded.scores)

    def detect(self, own: Detections, neighbours: Sequence[Neighbour]) -> EgoDetections:
        """``cosim eval``'s late fusion (:func:`models.late_fusion.detect_late`)."""
        t0 = time.perf_counter()
        transforms = self.transforms(neighbours)
        merged = detect_late(
            self.model, own, [(n.data, t) for n, t in zip(neighbours, transforms, strict=True)]
        )
        coverage = np.zeros(self.model.map_grid.bev_shape, np.uint8)
        return EgoDetections(
            merged,
            self.model.select_neighbours(transforms),
            coverage,
            timings={"fuse": time.perf_counter() - t0},
        )


PAYLOADS: dict[str, type[_Base]] = {
    "map": MapPayload,
    "points": PointsPayload,
    "boxes": BoxesPayload,
}


def make_payload(
    model: CooperativeDetector,
    codec: CodecConfig,
    pose_error: PoseErrorConfig,
    refine_steps: int | None = None,
    refine_neighbours: bool = False,
) -> Payload:
    """The payload strategy of ``model``'s fusion (:func:`payload_kind`)."""
    expect = MessageExpectation.for_model(model, grid_header(model.message_grid))
    cls = PAYLOADS[payload_kind(model.config.fusion)]
    return cls(model, codec, expect, pose_error, refine_steps, refine_neighbours)


def receive(
    payload: Payload,
    data: bytes | None,
    sender: int,
    t_send: float,
    ego_pose: NDArray[np.float64],
) -> Received:
    """Decode and check one message the link delivered from ``sender`` sent at ``t_send``;
    never raises for a bad message (the status says what was wrong)."""
    if data is None:
        return Received("codec_error", "no message bytes")
    try:
        decoded = payload.decode(data)
    except GridMismatchError as err:
        return Received("wrong_grid", str(err))
    except CodecError as err:
        return Received("codec_error", str(err))
    reason = payload.check(decoded, sender, t_send, ego_pose)
    if reason is not None:
        return Received(REJECTED, reason)
    return Received("ok", item=payload.item(decoded), sender_pose=decoded.header.pose)
