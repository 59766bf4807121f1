"""Early- and late-fusion messages: a sender's points or its boxes, on the feature map's wire.

Both use the frame of :mod:`channel.wire` (msgpack, one zstandard frame, BLAKE2b-128
checksum, never pickle), each under its own magic, with a header map of ``sender``, ``t``,
``pose`` (as for maps: the *reported* world <- sender-LiDAR pose at send time, 4x4 float64)
and ``n`` (points or boxes sent).

**Points** (magic ``V2XP``, early fusion). The header also holds ``cut``: points the sender
dropped because a coordinate lies outside the int16 centimetre range (beyond +-327.67 m; no
LiDAR in use reaches that far, 120 m here, and nothing that far is in any grid). Payload,
column-major so zstd sees runs of similar bytes, little-endian::

    x int16[n] | y int16[n] | z int16[n]      centimetres, rounded to nearest (sender frame)
    intensity uint8[n]                        round(255 * clip(i, 0, 1))

7 bytes per point before zstd (float32 ``(N, 4)`` is 16). Decoded points are float32 metres
within 0.5 cm (+ float32 rounding) of what was sent, intensity within 1/510.

**Boxes** (magic ``V2XB``, late fusion). Payload ``boxes float32[n, 7]`` (x, y, z, l, w, h,
yaw in the sender's LiDAR frame, row-major) then ``scores float32[n]``: 32 bytes per box,
exact.

Decoders raise only :class:`~channel.wire.CodecError`. The header's count is checked against
the cap (``max_points``, ``max_boxes``) before anything is decompressed, the zstandard frame
must declare exactly the size that count implies, and non-finite boxes or scores are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
import numpy as np
from numpy.typing import NDArray

from channel import wire
from channel.wire import BOXES_MAGIC, DEFAULT_MAX_MESSAGE_BYTES, POINTS_MAGIC, CodecError

CM_PER_M = 100.0
INT16_LIMIT = 32767  # the largest |centimetres| sent; -32768 is never produced
INTENSITY_STEPS = 255
POINT_BYTES = 7  # 3 x int16 + uint8
BOX_BYTES = 32  # 7 x float32 + float32 score
# Caps a receiver applies before decompressing: a 128-beam sweep is ~260k points, OPV2V's
# 64-beam ~120k; a detector keeps a few hundred boxes at most.
DEFAULT_MAX_POINTS = 2**20
DEFAULT_MAX_BOXES = 4096
_POINTS_KEYS = frozenset({"sender", "t", "pose", "n", "cut"})
_BOXES_KEYS = frozenset({"sender", "t", "pose", "n"})

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class PayloadHeader:
    """Who sent a points or boxes message, when, from which reported pose, and how many
    items it holds (``cut``: points dropped by the sender as out of the wire's range)."""

    kind: str
    sender_id: int
    t_send: float
    pose: NDArray[np.float64]
    count: int
    cut: int = 0


@dataclass(frozen=True, eq=False)
class DecodedCloud:
    """A neighbour's cloud as received: float32 ``(n, 4)`` x, y, z, intensity in the sender's
    LiDAR frame, the header and the wire size."""

    header: PayloadHeader
    points: NDArray[np.float32]
    wire_nbytes: int

    @property
    def raw_nbytes(self) -> int:
        """Bytes of the float32 ``(n, 4)`` cloud this message stands for."""
        return 16 * self.header.count


@dataclass(frozen=True, eq=False)
class DecodedBoxes:
    """A neighbour's detections as received: float32 ``(n, 7)`` boxes in the sender's LiDAR
    frame, float32 ``(n,)`` scores, the header and the wire size."""

    header: PayloadHeader
    boxes: NDArray[np.float32]
    scores: NDArray[np.float32]
    wire_nbytes: int

    @property
    def raw_nbytes(self) -> int:
        return BOX_BYTES * self.header.count


def quantize_points(
    points: NDArray[np.floating],
) -> tuple[NDArray[np.int16], NDArray[np.uint8], int]:
    """``(N, 4)`` points -> int16 centimetre xyz ``(n, 3)``, uint8 intensity ``(n,)`` and how
    many points were cut (a coordinate beyond +-327.67 m). Refuses NaN/inf."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 4 or not np.issubdtype(points.dtype, np.floating):
        raise CodecError(f"points must be float (N, 4), got {points.dtype} {points.shape}")
    if not np.isfinite(points).all():
        bad = int(points.shape[0] - np.isfinite(points).all(axis=1).sum())
        raise CodecError(f"points: {bad} point(s) hold NaN/inf; refusing to encode")
    cm = np.rint(points[:, :3].astype(np.float64) * CM_PER_M)
    keep = (np.abs(cm) <= INT16_LIMIT).all(axis=1)
    intensity = np.rint(np.clip(points[keep, 3], 0.0, 1.0) * INTENSITY_STEPS)
    cut = int(points.shape[0] - keep.sum())
    return cm[keep].astype(np.int16), intensity.astype(np.uint8), cut


def encode_cloud(
    points: NDArray[np.floating],
    pose: NDArray[np.float64],
    t_send: float,
    sender_id: int,
    zstd_level: int = 3,
) -> bytes:
    """Code a cloud ``(N, 4)`` (sender LiDAR frame) and its reported pose into one message;
    points beyond the int16 range are dropped and counted in the header's ``cut``."""
    origin = wire.origin_fields(sender_id, t_send, pose)
    xyz, intensity, cut = quantize_points(points)
    n = int(xyz.shape[0])
    header = msgpack.packb({**origin, "n": n, "cut": cut})
    raw = np.ascontiguousarray(xyz.T).astype("<i2").tobytes() + intensity.tobytes()
    return wire.frame_message(POINTS_MAGIC, header, raw, zstd_level)


def encode_boxes(
    boxes: NDArray[np.floating],
    scores: NDArray[np.floating],
    pose: NDArray[np.float64],
    t_send: float,
    sender_id: int,
    zstd_level: int = 3,
) -> bytes:
    """Code detections (``(n, 7)`` boxes in the sender LiDAR frame, ``(n,)`` scores) and the
    reported pose into one message. Refuses NaN/inf and mismatched shapes."""
    origin = wire.origin_fields(sender_id, t_send, pose)
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 7 or scores.shape != (boxes.shape[0],):
        raise CodecError(
            f"boxes must be (n, 7) with (n,) scores, got {boxes.shape} and {scores.shape}"
        )
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise CodecError("boxes or scores hold NaN/inf; refusing to encode")
    header = msgpack.packb({**origin, "n": int(boxes.shape[0])})
    raw = boxes.astype("<f4").tobytes() + scores.astype("<f4").tobytes()
    return wire.frame_message(BOXES_MAGIC, header, raw, zstd_level)


def _count(h: dict[str, Any], key: str, cap: int, what: str) -> int:
    value = h[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CodecError(f"header: {key} must be an int >= 0, got {wire.describe(value)}")
    if value > cap:
        raise CodecError(f"oversized: {value} {what}, above the cap of {cap}")
    return value


def _guarded(decode: Callable[[], T]) -> T:
    """Run a decoder; anything but a CodecError becomes one (a decoder bug must not crash the
    receiver)."""
    try:
        return decode()
    except CodecError:
        raise
    except Exception as err:
        raise CodecError(f"message could not be decoded ({type(err).__name__})") from None


def decode_cloud(
    data: bytes,
    *,
    max_points: int = DEFAULT_MAX_POINTS,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> DecodedCloud:
    """A points message -> float32 ``(n, 4)`` in the sender's frame; raises only CodecError."""

    def run() -> DecodedCloud:
        header_bytes, payload = wire.unframe(data, max_message_bytes, POINTS_MAGIC)
        h = wire.header_map(header_bytes, _POINTS_KEYS)
        sender, t_send, pose = wire.parse_origin(h)
        n = _count(h, "n", max_points, "points")
        cut = _count(h, "cut", 2**62, "points cut")
        raw = wire.decompress_exact(payload, POINT_BYTES * n)
        xyz = np.frombuffer(raw, dtype="<i2", count=3 * n).reshape(3, n)
        points = np.empty((n, 4), np.float32)
        points[:, :3] = (xyz.T.astype(np.float64) / CM_PER_M).astype(np.float32)
        points[:, 3] = np.frombuffer(raw, np.uint8, offset=6 * n).astype(np.float32) / (
            INTENSITY_STEPS
        )
        header = PayloadHeader("points", sender, t_send, pose, n, cut)
        return DecodedCloud(header, points, len(data))

    return _guarded(run)


def decode_boxes(
    data: bytes,
    *,
    max_boxes: int = DEFAULT_MAX_BOXES,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> DecodedBoxes:
    """A boxes message -> float32 ``(n, 7)`` boxes and ``(n,)`` scores in the sender's frame;
    raises only CodecError (also for NaN/inf values)."""

    def run() -> DecodedBoxes:
        header_bytes, payload = wire.unframe(data, max_message_bytes, BOXES_MAGIC)
        h = wire.header_map(header_bytes, _BOXES_KEYS)
        sender, t_send, pose = wire.parse_origin(h)
        n = _count(h, "n", max_boxes, "boxes")
        raw = wire.decompress_exact(payload, BOX_BYTES * n)
        boxes = np.frombuffer(raw, "<f4", count=7 * n).reshape(n, 7).astype(np.float32)
        scores = np.frombuffer(raw, "<f4", offset=28 * n).astype(np.float32)
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise CodecError("payload contains NaN/inf values")
        return DecodedBoxes(
            PayloadHeader("boxes", sender, t_send, pose, n), boxes, scores, len(data)
        )

    return _guarded(run)


__all__ = [
    "BOXES_MAGIC",
    "DEFAULT_MAX_BOXES",
    "DEFAULT_MAX_POINTS",
    "POINTS_MAGIC",
    "DecodedBoxes",
    "DecodedCloud",
    "PayloadHeader",
    "decode_boxes",
    "decode_cloud",
    "encode_boxes",
    "encode_cloud",
    "quantize_points",
]
