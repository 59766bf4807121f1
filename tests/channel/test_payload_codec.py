"""Early- and late-fusion messages: round trips (hypothesis), exact byte layout, cut points, and
tampered, truncated, NaN and oversized messages refused with a CodecError that says why."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from channel.codec import GridHeader, encode_feature
from channel.payload_codec import (
    BOXES_MAGIC,
    POINTS_MAGIC,
    decode_boxes,
    decode_cloud,
    encode_boxes,
    encode_cloud,
)
from channel.wire import FORMAT_VERSION, CodecError, _digest

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
POSE = np.array(
    [[0.0, -1.0, 0.0, 10.0], [1.0, 0.0, 0.0, -2.0], [0.0, 0.0, 1.0, 1.5], [0.0, 0.0, 0.0, 1.0]]
)
# float32 input already rounds a coordinate near 327 m by up to 2**-16 m.
XYZ_TOL = 0.005 + 2.0**-15
coords = st.floats(-327.5, 327.5, width=32)
unit = st.floats(0.0, 1.0, width=32)


def _cloud(draw: st.DrawFn, n: int) -> np.ndarray:
    xyz = draw(hnp.arrays(np.float32, (n, 3), elements=coords))
    intensity = draw(hnp.arrays(np.float32, (n, 1), elements=unit))
    return np.hstack([xyz, intensity])


@st.composite
def clouds(draw: st.DrawFn) -> np.ndarray:
    return _cloud(draw, draw(st.integers(0, 60)))


@SETTINGS
@given(points=clouds(), t=st.floats(0, 1e5), sender=st.integers(-(2**40), 2**40))
def test_points_round_trip_within_half_a_centimetre(
    points: np.ndarray, t: float, sender: int
) -> None:
    message = encode_cloud(points, POSE, t, sender)
    decoded = decode_cloud(message)
    assert decoded.header.sender_id == sender and decoded.header.t_send == t
    assert decoded.header.count == len(points) and decoded.header.cut == 0
    np.testing.assert_array_equal(decoded.header.pose, POSE)
    assert decoded.points.dtype == np.float32 and decoded.points.shape == points.shape
    if len(points):
        assert np.abs(decoded.points[:, :3] - points[:, :3]).max() <= XYZ_TOL
        assert np.abs(decoded.points[:, 3] - points[:, 3]).max() <= 0.5 / 255 + 1e-7
    assert decoded.wire_nbytes == len(message) and decoded.raw_nbytes == 16 * len(points)


@SETTINGS
@given(data=st.data(), n=st.integers(0, 40))
def test_boxes_round_trip_exactly(data: st.DataObject, n: int) -> None:
    finite = st.floats(-1e6, 1e6, width=32)
    boxes = data.draw(hnp.arrays(np.float32, (n, 7), elements=finite))
    scores = data.draw(hnp.arrays(np.float32, (n,), elements=unit))
    decoded = decode_boxes(encode_boxes(boxes, scores, POSE, 0.3, 4))
    np.testing.assert_array_equal(decoded.boxes, boxes)
    np.testing.assert_array_equal(decoded.scores, scores)
    assert decoded.header.count == n and decoded.raw_nbytes == 32 * n


def _parts(message: bytes) -> tuple[dict, bytes]:
    """The header map and the decompressed payload of a message."""
    _, _, header, payload, _ = msgpack.unpackb(message)
    return msgpack.unpackb(header), zstandard.ZstdDecompressor().decompress(payload)


def test_points_byte_layout_by_hand() -> None:
    """Column-major int16 centimetres, then uint8 intensity: 7 bytes per point."""
    points = np.array([[1.234, -0.005, 2.0, 1.0], [-327.67, 327.67, 0.0, 0.5]], np.float32)
    header, raw = _parts(encode_cloud(points, np.eye(4), 0.2, 7))
    assert header["n"] == 2 and header["cut"] == 0 and len(raw) == 2 * 7
    xyz = np.frombuffer(raw[:12], "<i2").reshape(3, 2)
    np.testing.assert_array_equal(xyz, [[123, -32767], [0, 32767], [200, 0]])  # -0.5 cm -> 0
    assert list(raw[12:]) == [255, 128]


def test_points_beyond_the_int16_range_are_cut_and_counted() -> None:
    points = np.array(
        [[400.0, 0, 0, 0.1], [1.0, 2.0, 3.0, 0.2], [0, -327.68, 0, 0.3], [0, 0, 327.674, 0.4]],
        np.float32,
    )
    decoded = decode_cloud(encode_cloud(points, np.eye(4), 0.0, 1))
    assert decoded.header.cut == 2 and decoded.header.count == 2
    np.testing.assert_allclose(decoded.points[:, :3], [[1, 2, 3], [0, 0, 327.67]], atol=1e-4)
    with pytest.raises(CodecError, match="NaN/inf"):
        encode_cloud(np.array([[np.nan, 0, 0, 0]], np.float32), np.eye(4), 0.0, 1)
    with pytest.raises(CodecError, match=r"float \(N, 4\)"):
        encode_cloud(np.zeros((3, 3), np.float32), np.eye(4), 0.0, 1)


def test_boxes_byte_layout_and_size() -> None:
    boxes = np.array([[5.0, 0.0, -1.0, 4.5, 1.8, 1.5, 0.25]] * 3, np.float32)
    scores = np.array([0.9, 0.5, 0.25], np.float32)
    message = encode_boxes(boxes, scores, np.eye(4), 0.1, 2)
    header, raw = _parts(message)
    assert header["n"] == 3 and len(raw) == 3 * 32
    np.testing.assert_array_equal(np.frombuffer(raw[:84], "<f4").reshape(3, 7), boxes)
    np.testing.assert_array_equal(np.frombuffer(raw[84:], "<f4"), scores)
    assert len(message) < 400  # a few hundred bytes; the 128-byte pose is most of it
    with pytest.raises(CodecError, match="NaN/inf"):
        encode_boxes(boxes * np.nan, scores, np.eye(4), 0.1, 2)


def _resign(magic: bytes, header: dict, raw: bytes, declared: int | None = None) -> bytes:
    """A checksum-valid message from whatever header and payload an attacker chooses."""
    header_bytes = msgpack.packb(header)
    params = zstandard.ZstdCompressionParameters(write_content_size=declared is None)
    payload = zstandard.ZstdCompressor(compression_params=params).compress(raw)
    if declared is not None:  # a frame that lies about its size
        payload = zstandard.ZstdCompressor().compress(b"\0" * declared)
    return msgpack.packb(
        [magic, FORMAT_VERSION, header_bytes, payload, _digest(header_bytes, payload)]
    )


def _origin() -> dict:
    return {"sender": 3, "t": 0.1, "pose": np.eye(4).astype("<f8").tobytes()}


def test_tampered_points_messages_are_refused_with_a_reason() -> None:
    good = encode_cloud(np.ones((10, 4), np.float32) * 0.5, np.eye(4), 0.1, 3)
    with pytest.raises(CodecError, match="truncated or malformed"):
        decode_cloud(good[:-5])
    flipped = bytearray(good)
    flipped[-20] ^= 0x40
    with pytest.raises(CodecError, match="checksum mismatch|malformed"):
        decode_cloud(bytes(flipped))
    with pytest.raises(CodecError, match="oversized: 5000000 points, above the cap of 1048576"):
        decode_cloud(_resign(POINTS_MAGIC, {**_origin(), "n": 5_000_000, "cut": 0}, b""))
    with pytest.raises(CodecError, match="above the cap of 8"):
        decode_cloud(good, max_points=8)
    with pytest.raises(CodecError, match="frame declares 700 bytes, header implies 70"):
        decode_cloud(_resign(POINTS_MAGIC, {**_origin(), "n": 10, "cut": 0}, b"", 700))
    nan_pose = {**_origin(), "pose": np.full((4, 4), np.nan).astype("<f8").tobytes()}
    with pytest.raises(CodecError, match="pose contains NaN"):
        decode_cloud(_resign(POINTS_MAGIC, {**nan_pose, "n": 0, "cut": 0}, b""))
    with pytest.raises(CodecError, match="n must be an int >= 0"):
        decode_cloud(_resign(POINTS_MAGIC, {**_origin(), "n": -1, "cut": 0}, b""))
    with pytest.raises(CodecError, match="not a v2x points message"):
        decode_cloud(encode_boxes(np.zeros((1, 7)), np.zeros(1), np.eye(4), 0.1, 3))
    feature = encode_feature(
        np.ones((2, 12, 16), np.float32), np.eye(4), 0.1, 3, GridHeader(0.0, 0.0, 8.0, 6.0, 0.5)
    )
    with pytest.raises(CodecError, match="not a v2x points message"):
        decode_cloud(feature)


def test_tampered_boxes_messages_are_refused_with_a_reason() -> None:
    nan_box = np.array([[0, 0, 0, 4, 2, 1.5, np.nan]], "<f4").tobytes() + np.float32(0.5).tobytes()
    with pytest.raises(CodecError, match="payload contains NaN/inf"):
        decode_boxes(_resign(BOXES_MAGIC, {**_origin(), "n": 1}, nan_box))
    with pytest.raises(CodecError, match="oversized: 100 boxes, above the cap of 20"):
        decode_boxes(_resign(BOXES_MAGIC, {**_origin(), "n": 100}, b"\0" * 3200), max_boxes=20)
    with pytest.raises(CodecError, match="missing \\['n'\\]"):
        decode_boxes(_resign(BOXES_MAGIC, _origin(), b""))
    with pytest.raises(CodecError, match="not a v2x boxes message"):
        decode_boxes(encode_cloud(np.zeros((1, 4), np.float32), np.eye(4), 0.1, 3))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_codec_error(data: bytes) -> None:
    for decode in (decode_cloud, decode_boxes):
        with pytest.raises(CodecError):
            decode(data)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_every_bit_flip_is_refused(position: int, bit: int) -> None:
    for message, decode in (
        (encode_cloud(np.full((30, 4), 0.25, np.float32), POSE, 0.1, 3), decode_cloud),
        (encode_boxes(np.ones((5, 7)), np.full(5, 0.5), POSE, 0.1, 3), decode_boxes),
    ):
        corrupted = bytearray(message)
        corrupted[position % len(message)] ^= 1 << bit
        with pytest.raises(CodecError):
            decode(bytes(corrupted))
