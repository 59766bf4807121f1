"""Feature-map messages: a ``(C, H, W)`` float32 map and its reported pose, coded onto the
shared wire frame (:mod:`channel.wire`) under the ``V2XF`` magic; never pickle.

The header (a msgpack map) holds the origin fields (sender, send time, reported 4x4 float64
pose as 128 little-endian bytes), the grid as five floats, ``(C, H, W)``, the value dtype, the
sparse flag and the number of sent cells. The payload is: the packed cell mask
(:mod:`channel.sparsify`, only when sparse), then the int8 parameters (float32 scale, int8
zero point per channel, only for int8), then the ``(C, N)`` values, channel-major
(:mod:`channel.quantize`).

The decoder computes the exact decompressed size from the header, refuses sizes above a cap (no
decompression bombs) and raises :class:`~channel.wire.CodecError` -- never another exception --
for anything it cannot accept. A receiver that knows the map it expects passes
``expected_shape``/``expected_grid``: the header is then checked against them *before*
decompression and the cap becomes that map's exact size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgpack
import numpy as np
from numpy.typing import NDArray
from pydantic import AfterValidator, Field

from channel.quantize import DTYPES, decode_values, encode_values, param_nbytes, value_itemsize
from channel.sparsify import (
    pack_mask,
    packed_mask_nbytes,
    select_mask,
    unpack_mask,
    validate_sparsity,
)
from channel.wire import (
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    FORMAT_VERSION,
    MAGIC,
    CodecError,
    GridMismatchError,
    decompress_exact,
    describe,
    frame_message,
    header_map,
    origin_fields,
    parse_origin,
    unframe,
)
from configkit import Float, Int, Str, config_dataclass, validate


@dataclass(frozen=True)
class GridHeader:
    """BEV grid of a feature map as plain numbers (metres, sender LiDAR frame).

    ``x`` spans the ``W`` axis and ``y`` the ``H`` axis, so ``shape == (H, W) ==
    ((y_max - y_min) / cell_size, (x_max - x_min) / cell_size)``, matching
    ``models.GridSpec.bev_shape`` and ``models.GridSpec.cell_size``.
    """

    x_min: float
    y_min: float
    x_max: float
    y_max: float
    cell_size: float

    def __post_init__(self) -> None:
        values = (self.x_min, self.y_min, self.x_max, self.y_max, self.cell_size)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise ValueError(f"grid: all five numbers must be finite, got {values}")
        if self.cell_size <= 0 or self.x_max <= self.x_min or self.y_max <= self.y_min:
            raise ValueError(f"grid: need x_min < x_max, y_min < y_max, cell_size > 0: {values}")
        cells = (
            (self.x_max - self.x_min) / self.cell_size,
            (self.y_max - self.y_min) / self.cell_size,
        )
        if not all(math.isfinite(c) and c < 2**31 for c in cells):
            raise ValueError(f"grid: {cells} cells is not a usable size")

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` cells."""
        return (
            round((self.y_max - self.y_min) / self.cell_size),
            round((self.x_max - self.x_min) / self.cell_size),
        )

    def as_list(self) -> list[float]:
        return [
            float(self.x_min),
            float(self.y_min),
            float(self.x_max),
            float(self.y_max),
            float(self.cell_size),
        ]


DType = Literal[DTYPES]  # type: ignore[valid-type]


@config_dataclass
class CodecConfig:
    """How a sender codes its feature map: value dtype, optional sparsity
    (``{"topk": fraction}`` or ``{"threshold": t}``), zstd level."""

    dtype: DType = "float16"
    sparsity: Annotated[dict[Str, Float] | None, AfterValidator(validate_sparsity)] = None
    zstd_level: Int = Field(3, ge=-7, le=22)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "codec") -> CodecConfig:
        """Validate a mapping; errors name ``where``, the key path and what is allowed."""
        return validate(cls, {} if data is None else data, where)


@dataclass(frozen=True, eq=False)
class Header:
    """Everything about a message except its values."""

    version: int
    sender_id: int
    t_send: float
    pose: NDArray[np.float64]  # reported world <- sender-LiDAR, 4x4
    grid: GridHeader
    shape: tuple[int, int, int]  # (C, H, W)
    dtype: str
    sparse: bool
    n_cells: int  # cells whose values were sent (H * W when dense)

    @property
    def raw_nbytes(self) -> int:
        """Bytes of the dense float32 map this message stands for."""
        channels, height, width = self.shape
        return 4 * channels * height * width


@dataclass(frozen=True, eq=False)
class DecodedFeature:
    """What a receiver gets: dense float32 ``(C, H, W)`` (zeros outside ``mask``), the mask,
    the header, the int8 scales (``None`` for float dtypes) and the wire size.

    ``value_min``/``value_max`` (``(C,)``) are each channel's extremes over the *sent* values
    (zeros when none were sent): the decoder gets them in the same pass that proves every
    value finite, so a receiver can bound-check a map in O(C)."""

    header: Header
    feature: NDArray[np.float32]
    mask: NDArray[np.bool_]
    wire_nbytes: int
    scale: NDArray[np.float32] | None = field(default=None)
    value_min: NDArray[np.float32] | None = field(default=None)
    value_max: NDArray[np.float32] | None = field(default=None)

    @property
    def raw_nbytes(self) -> int:
        return self.header.raw_nbytes

    @property
    def ratio(self) -> float:
        """Raw float32 bytes / wire bytes."""
        return self.raw_nbytes / self.wire_nbytes


def encode_feature(
    feature: NDArray[np.float32],
    pose: NDArray[np.float64],
    t_send: float,
    sender_id: int,
    grid: GridHeader,
    config: CodecConfig | None = None,
    *,
    confidence: NDArray[np.floating] | None = None,
    mask: NDArray[np.bool_] | None = None,
) -> bytes:
    """Code a ``(C, H, W)`` float32 feature map and its reported pose into one message.

    ``confidence`` (``(H, W)``) feeds ``config.sparsity``; without it the per-cell max of
    ``|feature|`` is used. ``mask`` sends exactly those cells (then ``config.sparsity`` must
    be ``None``). Raises :class:`CodecError` for NaN/inf, wrong shapes or un-codable values.
    """
    config = config or CodecConfig()
    feature = np.asarray(feature)
    if feature.dtype != np.float32 or feature.ndim != 3 or 0 in feature.shape:
        raise CodecError(
            f"feature must be non-empty float32 (C, H, W), got {feature.dtype} {feature.shape}"
        )
    if not np.isfinite(feature).all():
        bad = int(np.size(feature) - np.count_nonzero(np.isfinite(feature)))
        raise CodecError(f"feature contains {bad} NaN/inf value(s); refusing to encode")
    origin = origin_fields(sender_id, t_send, pose)
    channels, height, width = feature.shape
    if grid.shape != (height, width):
        raise CodecError(f"grid {grid} is {grid.shape} cells but the feature is {(height, width)}")
    if mask is not None and config.sparsity is not None:
        raise CodecError("give either an explicit mask or config.sparsity, not both")
    try:
        if mask is None:
            mask = select_mask(feature, config.sparsity, confidence)
        elif np.shape(mask) != (height, width):
            raise ValueError(f"mask must be {(height, width)}, got {np.shape(mask)}")
        if mask is None:
            values = feature.reshape(channels, height * width)
            parts = [encode_values(values, config.dtype)]
        else:
            mask = np.asarray(mask, dtype=bool)
            values = feature[:, mask]
            parts = [pack_mask(mask), encode_values(values, config.dtype)]
    except ValueError as err:
        raise CodecError(str(err)) from err
    header = msgpack.packb(
        {
            **origin,
            "grid": grid.as_list(),
            "shape": [channels, height, width],
            "dtype": config.dtype,
            "sparse": mask is not None,
            "n": int(values.shape[1]),
        }
    )
    raw_payload = parts[0] if len(parts) == 1 else b"".join(parts)
    return frame_message(MAGIC, header, raw_payload, config.zstd_level)


_HEADER_KEYS = frozenset({"sender", "t", "pose", "grid", "shape", "dtype", "sparse", "n"})


def _parse_header(header_bytes: bytes) -> Header:
    h = header_map(header_bytes, _HEADER_KEYS)
    sender, t_send, pose_m = parse_origin(h)
    grid, shape = h["grid"], h["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    ):
        raise CodecError(f"header: shape must be three positive ints, got {describe(shape)}")
    if not isinstance(grid, list) or len(grid) != 5 or not all(isinstance(v, float) for v in grid):
        raise CodecError(f"header: grid must be five floats, got {describe(grid)}")
    try:
        grid_h = GridHeader(*grid)
    except ValueError as err:
        raise CodecError(f"header: {err}") from err
    channels, height, width = shape
    if grid_h.shape != (height, width):
        raise CodecError(f"header: grid is {grid_h.shape} cells but shape says {(height, width)}")
    if h["dtype"] not in DTYPES or not isinstance(h["sparse"], bool):
        raise CodecError(
            f"header: bad dtype {describe(h['dtype'])} or sparse flag {describe(h['sparse'])}"
        )
    n_cells = h["n"]
    if (
        not isinstance(n_cells, int)
        or isinstance(n_cells, bool)
        or not 0 <= n_cells <= height * width
        or (not h["sparse"] and n_cells != height * width)
    ):
        raise CodecError(
            f"header: {describe(n_cells)} sent cells is impossible for {height}x{width}"
        )
    return Header(
        FORMAT_VERSION,
        sender,
        t_send,
        pose_m,
        grid_h,
        (channels, height, width),
        h["dtype"],
        h["sparse"],
        n_cells,
    )


def peek_header(data: bytes, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Header:
    """Verify framing and checksum and return the header, without decompressing the payload;
    raises only :class:`CodecError`."""
    try:
        header_bytes, _ = unframe(data, max_message_bytes)
        return _parse_header(header_bytes)
    except CodecError:
        raise
    except Exception as err:  # see decode_feature
        raise CodecError(f"message header could not be read ({type(err).__name__})") from None


def decode_feature(
    data: bytes,
    *,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    expected_shape: tuple[int, int, int] | None = None,
    expected_grid: GridHeader | None = None,
) -> DecodedFeature:
    """Decode a message to a dense float32 map, its mask and header; raises only CodecError.

    ``max_decompressed_bytes`` caps both the dense float32 map the header describes and the
    decompressed payload. With ``expected_shape`` (``(C, H, W)``) and/or ``expected_grid``, a
    header that differs raises :class:`GridMismatchError` before anything is decompressed, and
    the cap is the expected map's own size. Any unforeseen failure inside the decoder is
    reported as a :class:`CodecError` too, so a receiver catching it is never taken down.
    """
    try:
        return _decode(
            data, max_decompressed_bytes, max_message_bytes, expected_shape, expected_grid
        )
    except CodecError:
        raise
    except Exception as err:  # a decoder bug must not become a crash of the receiver
        raise CodecError(f"message could not be decoded ({type(err).__name__})") from None


def _decode(
    data: bytes,
    max_decompressed_bytes: int,
    max_message_bytes: int,
    expected_shape: tuple[int, int, int] | None,
    expected_grid: GridHeader | None,
) -> DecodedFeature:
    header_bytes, payload = unframe(data, max_message_bytes)
    header = _parse_header(header_bytes)
    channels, height, width = header.shape
    if expected_shape is not None and header.shape != tuple(expected_shape):
        raise GridMismatchError(f"message map is {header.shape}, expected {tuple(expected_shape)}")
    if expected_grid is not None and header.grid != expected_grid:
        raise GridMismatchError(
            f"message grid is {header.grid.as_list()}, expected {expected_grid.as_list()}"
        )
    if expected_shape is not None:
        c, h, w = expected_shape
        max_decompressed_bytes = min(max_decompressed_bytes, 4 * c * h * w)
    if header.raw_nbytes > max_decompressed_bytes:
        raise CodecError(
            f"oversized: a {header.shape} float32 map is {header.raw_nbytes} bytes, "
            f"above the cap of {max_decompressed_bytes}"
        )
    mask_bytes = packed_mask_nbytes((height, width)) if header.sparse else 0
    params = param_nbytes(header.dtype, channels)
    value_bytes = channels * header.n_cells * value_itemsize(header.dtype)
    expected = mask_bytes + params + value_bytes
    raw = decompress_exact(payload, expected)
    if header.sparse:
        mask = unpack_mask(raw[:mask_bytes], (height, width))
        if int(np.count_nonzero(mask)) != header.n_cells:
            raise CodecError(
                f"mask has {np.count_nonzero(mask)} cells, header says {header.n_cells}"
            )
    else:
        mask = np.ones((height, width), dtype=bool)
    try:
        values, scale = decode_values(raw[mask_bytes:], header.dtype, channels, header.n_cells)
    except ValueError as err:
        raise CodecError(f"payload: {err}") from err
    if header.n_cells:
        # One pass each; NaN propagates into both and inf shows in one: no isfinite pass.
        value_min, value_max = values.min(axis=1), values.max(axis=1)
    else:
        value_min = value_max = np.zeros(channels, np.float32)
    if not (np.isfinite(value_min).all() and np.isfinite(value_max).all()):
        raise CodecError("payload contains NaN/inf values")
    if header.sparse:
        feature = np.zeros((channels, height * width), dtype=np.float32)
        feature[:, mask.reshape(-1)] = values
        feature = feature.reshape(channels, height, width)
    else:
        feature = values.reshape(channels, height, width)
    return DecodedFeature(header, feature, mask, len(data), scale, value_min, value_max)


@dataclass(frozen=True)
class ByteStats:
    """Byte accounting of one message: raw float32 bytes, wire bytes and their ratio."""

    raw_bytes: int
    wire_bytes: int

    @property
    def ratio(self) -> float:
        return self.raw_bytes / self.wire_bytes if self.wire_bytes else math.inf


def byte_stats(message: bytes) -> ByteStats:
    """Raw float32 and wire bytes of an encoded message (checks framing, no decompression)."""
    return ByteStats(peek_header(message).raw_nbytes, len(message))
