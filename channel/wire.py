"""The wire frame every message kind shares: msgpack framing, zstandard payload, BLAKE2b check.

Layout (format version 1), one msgpack array of five items::

    [magic: bin (the kind), version: int, header: bin, payload: bin, checksum: bin(16)]

* ``header`` is a msgpack map, carried as bytes so the checksum covers its exact encoding; every
  kind starts it with the same origin fields (:func:`origin_fields`, :func:`parse_origin`).
* ``payload`` is one zstandard frame with its content size recorded; a receiver decompresses
  exactly the size the header implies (:func:`decompress_exact`), never more.
* ``checksum`` is BLAKE2b-128 over the length-prefixed header and payload: it detects
  truncation, bit flips and tampering (it is an integrity check, not authentication).

Everything here raises :class:`CodecError` -- never another exception -- for what it refuses,
with texts bounded by :data:`MAX_ERROR_CHARS` that describe an attacker's values by type and a
short prefix (:func:`describe`), never by ``repr`` of a whole structure. The kinds themselves:
:mod:`channel.codec` (feature maps), :mod:`channel.payload_codec` (points, boxes).
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any

import msgpack
import numpy as np
import zstandard
from numpy.typing import NDArray

FORMAT_VERSION = 1
MAGIC = b"V2XF"
# One magic per payload kind (points and boxes: channel.payload_codec): a receiver names the
# kind it expects, so a message of another kind is refused before its header is read.
POINTS_MAGIC = b"V2XP"
BOXES_MAGIC = b"V2XB"
MAGIC_KINDS = {MAGIC: "feature", POINTS_MAGIC: "points", BOXES_MAGIC: "boxes"}
CHECKSUM_BYTES = 16
DEFAULT_MAX_DECOMPRESSED_BYTES = 256 * 2**20
DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20
MAX_ERROR_CHARS = 240
_SCALAR_CHARS = 32


class CodecError(ValueError):
    """A message cannot be encoded or decoded; the text says what is wrong.

    The text is cut to :data:`MAX_ERROR_CHARS`, so an error string stored in a log stays small
    whatever the message held.
    """

    def __init__(self, message: str) -> None:
        text = str(message)
        if len(text) > MAX_ERROR_CHARS:
            text = text[: MAX_ERROR_CHARS - 3] + "..."
        super().__init__(text)


class GridMismatchError(CodecError):
    """The header describes a map other than the one the receiver expects."""


def describe(value: Any) -> str:
    """A short, bounded description of an untrusted value: a scalar's clipped repr, else the
    type name and length (never the repr of a nested structure, which can be huge or deep)."""
    if value is None or isinstance(value, bool | int | float):
        text = repr(value)
    elif isinstance(value, str | bytes | bytearray):
        text = repr(value[:_SCALAR_CHARS]) + ("..." if len(value) > _SCALAR_CHARS else "")
        return f"{type(value).__name__} {text}"
    elif isinstance(value, list | tuple | dict):
        return f"{type(value).__name__} of length {len(value)}"
    else:
        return type(value).__name__
    return text if len(text) <= _SCALAR_CHARS else text[:_SCALAR_CHARS] + "..."


def _digest(header: bytes, payload: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=CHECKSUM_BYTES)
    h.update(struct.pack("<QQ", len(header), len(payload)))
    h.update(header)
    h.update(payload)
    return h.digest()


def frame_message(magic: bytes, header: bytes, raw_payload: bytes, zstd_level: int) -> bytes:
    """The wire frame every message kind shares: ``[magic, version, header, zstd(payload),
    checksum]`` (the module docstring); ``magic`` names the kind."""
    payload = zstandard.ZstdCompressor(level=zstd_level).compress(raw_payload)
    return msgpack.packb([magic, FORMAT_VERSION, header, payload, _digest(header, payload)])


def unframe(data: Any, max_message_bytes: int, magic: bytes = MAGIC) -> tuple[bytes, bytes]:
    """Check magic (the expected kind), version and checksum; return (header bytes,
    compressed payload). Raises only :class:`CodecError` for what it refuses."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"message must be bytes, got {type(data).__name__}")
    if len(data) > max_message_bytes:
        raise CodecError(f"message of {len(data)} bytes exceeds the cap of {max_message_bytes}")
    try:
        outer = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except msgpack.ExtraData as err:
        raise CodecError("malformed message: trailing bytes after the frame") from err
    except Exception as err:  # msgpack raises several types for bad input; all mean the same
        raise CodecError(f"truncated or malformed message framing ({type(err).__name__})") from err
    if not isinstance(outer, list) or len(outer) != 5 or outer[0] != magic:
        raise CodecError(
            f"not a v2x {MAGIC_KINDS.get(magic, 'unknown')} message (bad magic or layout)"
        )
    _, version, header, payload, checksum = outer
    if type(version) is not int or version != FORMAT_VERSION:
        raise CodecError(
            f"unknown format version {describe(version)}; this decoder reads {FORMAT_VERSION}"
        )
    if not all(isinstance(x, bytes) for x in (header, payload, checksum)):
        raise CodecError("malformed message: header, payload and checksum must be bytes")
    if _digest(header, payload) != checksum:
        raise CodecError("checksum mismatch: message truncated, corrupted or tampered")
    return header, payload


def header_map(header_bytes: bytes, keys: frozenset[str]) -> dict[str, Any]:
    """The msgpack header map, which must hold exactly ``keys``."""
    try:
        h = msgpack.unpackb(header_bytes, raw=False, strict_map_key=True)
    except Exception as err:
        raise CodecError(f"malformed header ({type(err).__name__})") from err
    if not isinstance(h, dict) or set(h) != keys:
        if isinstance(h, dict):
            extra = sorted(describe(k) for k in list(set(h) - keys)[:3])
            missing = sorted(keys - set(h))
            got = f"missing {missing}, unexpected {extra}{'...' if len(h) > 8 else ''}"
        else:
            got = f"a {type(h).__name__}, not a map"
        raise CodecError(f"malformed header: {got}")
    return h


def parse_origin(h: dict[str, Any]) -> tuple[int, float, NDArray[np.float64]]:
    """Who sent a message, when, and from which reported pose: the header fields every kind
    carries (``sender`` int, ``t`` finite float, ``pose`` 128 bytes of 4x4 float64)."""
    sender, t_send, pose = h["sender"], h["t"], h["pose"]
    if not isinstance(sender, int) or isinstance(sender, bool):
        raise CodecError(f"header: sender must be an int, got {describe(sender)}")
    if not isinstance(t_send, float) or not math.isfinite(t_send):
        raise CodecError(f"header: send time must be a finite float, got {describe(t_send)}")
    if not isinstance(pose, bytes) or len(pose) != 128:
        raise CodecError("header: pose must be 128 bytes (4x4 float64)")
    pose_m = np.frombuffer(pose, dtype="<f8").reshape(4, 4).astype(np.float64)
    if not np.isfinite(pose_m).all():
        raise CodecError("header: pose contains NaN/inf")
    return sender, t_send, pose_m


def origin_fields(sender_id: int, t_send: float, pose: NDArray[np.float64]) -> dict[str, Any]:
    """The header fields :func:`parse_origin` reads, checked on the sending side."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        raise CodecError(f"pose must be a finite 4x4 matrix, got shape {pose.shape}")
    if not math.isfinite(t_send):
        raise CodecError(f"t_send must be finite, got {t_send}")
    if not -(2**63) <= int(sender_id) < 2**63:
        raise CodecError(f"sender_id must fit in int64, got {sender_id}")
    return {"sender": int(sender_id), "t": float(t_send), "pose": pose.astype("<f8").tobytes()}


def decompress_exact(payload: bytes, expected: int) -> bytes:
    """The zstandard frame's content, which must declare and hold exactly ``expected`` bytes
    (the size the header implies): nothing larger is ever decompressed."""
    try:
        declared = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as err:
        raise CodecError(f"payload is not a zstandard frame ({err})") from err
    if declared != expected:
        raise CodecError(
            f"oversized or inconsistent payload: frame declares {declared} bytes, "
            f"header implies {expected}"
        )
    try:
        raw = zstandard.ZstdDecompressor().decompress(
            payload, max_output_size=expected, allow_extra_data=False
        )
    except zstandard.ZstdError as err:
        raise CodecError(f"payload does not decompress ({err})") from err
    if len(raw) != expected:
        raise CodecError(f"payload decompressed to {len(raw)} bytes, expected {expected}")
    return raw
