"""Re-signed mutations of real messages: a forger who recomputes the checksum gets past the
integrity check, so header parsing, the pre-decompression checks and payload decoding must
hold on their own. Decoding raises only CodecError, or returns the original map when the
mutation changed nothing, or a finite map of exactly the declared shape."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channel import codec
from channel.codec import CodecConfig, GridHeader, decode_feature, encode_feature
from channel.wire import (
    FORMAT_VERSION,
    MAGIC,
    MAX_ERROR_CHARS,
    CodecError,
    GridMismatchError,
    _digest,
)

GRID = GridHeader(0.0, 0.0, 8.0, 6.0, 0.5)  # 12 x 16 cells
SHAPE = (4, 12, 16)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _message(dtype: str, sparsity: dict | None) -> bytes:
    rng = np.random.default_rng(3)
    f = np.maximum(rng.normal(size=SHAPE), 0).astype(np.float32)
    return encode_feature(f, np.eye(4), 0.3, 5, GRID, CodecConfig(dtype, sparsity))


MESSAGES = [_message(d, s) for d in ("float32", "float16", "int8") for s in (None, {"topk": 0.25})]


def _parts(message: bytes) -> tuple[dict, bytes]:
    _, _, header, payload, _ = msgpack.unpackb(message)
    return msgpack.unpackb(header), zstandard.ZstdDecompressor().decompress(payload)


def _sign(header: dict | bytes, raw_payload: bytes, declare_size: bool = True) -> bytes:
    hb = header if isinstance(header, bytes) else msgpack.packb(header)
    cctx = zstandard.ZstdCompressor(write_content_size=declare_size)
    payload = cctx.compress(raw_payload)
    return msgpack.packb([MAGIC, FORMAT_VERSION, hb, payload, _digest(hb, payload)])


def _check(mutated: bytes, original: bytes) -> None:
    try:
        got = decode_feature(mutated, expected_shape=SHAPE, expected_grid=GRID)
    except CodecError as err:
        assert len(str(err)) <= MAX_ERROR_CHARS
        return
    if mutated == original:
        want = decode_feature(original)
        np.testing.assert_array_equal(got.feature, want.feature)
        return
    assert got.feature.shape == SHAPE and np.isfinite(got.feature).all()
    assert got.feature.dtype == np.float32


VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.binary(max_size=200)
    | st.text(max_size=40),
    lambda kids: (
        st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=12,
)
KEYS = ["sender", "t", "pose", "grid", "shape", "dtype", "sparse", "n"]


@FUZZ
@given(
    st.sampled_from(range(len(MESSAGES))), st.sampled_from(KEYS + ["extra"]), VALUES, st.booleans()
)
def test_resigned_header_field_mutations(index: int, key: str, value: object, drop: bool) -> None:
    original = MESSAGES[index]
    header, raw = _parts(original)
    if drop and key in header:
        del header[key]
    else:
        header[key] = value
    _check(_sign(header, raw), original)


@FUZZ
@given(st.sampled_from(range(len(MESSAGES))), st.data())
def test_resigned_payload_mutations(index: int, data: st.DataObject) -> None:
    original = MESSAGES[index]
    header, raw = _parts(original)
    body = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "set_ff"]))
        pos = data.draw(st.integers(0, max(0, len(body) - 1)))
        if kind == "flip" and body:
            body[pos] ^= data.draw(st.integers(1, 255))
        elif kind == "cut" and body:
            del body[pos]
        elif kind == "insert":
            body.insert(pos, data.draw(st.integers(0, 255)))
        elif body:  # 0xff bytes make float16/float32 NaN/inf and int8 extremes
            body[pos : pos + 4] = b"\xff\xff\xff\x7f"[: len(body[pos : pos + 4])]
    mutated = _sign(header, bytes(body), declare_size=data.draw(st.booleans()))
    _check(mutated, original if bytes(body) == raw else b"")


def test_deeply_nested_header_field_is_a_short_codec_error() -> None:
    header, raw = _parts(MESSAGES[0])
    deep: list = []
    for _ in range(1000):
        deep = [deep]
    header["sender"] = deep
    with pytest.raises(CodecError) as err:
        decode_feature(_sign(header, raw))
    assert len(str(err.value)) <= MAX_ERROR_CHARS


def test_huge_header_string_gives_a_bounded_error() -> None:
    header, raw = _parts(MESSAGES[0])
    header["dtype"] = "x" * 5_000_000
    with pytest.raises(CodecError) as err:
        decode_feature(_sign(header, raw))
    assert len(str(err.value)) <= MAX_ERROR_CHARS
    assert "str 'xxxx" in str(err.value)


def test_big_declared_map_is_refused_before_decompression(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 1 x 8192 x 8192 float32 is 256 MiB; a receiver expecting SHAPE refuses it from the header.
    big = GridHeader(0.0, 0.0, 4096.0, 4096.0, 0.5)
    header, _ = _parts(MESSAGES[0])
    header.update(
        grid=big.as_list(), shape=[1, 8192, 8192], n=8192 * 8192, dtype="float32", sparse=False
    )
    bomb = _sign(header, bytes(4 * 8192 * 8192 // 1024))  # small on the wire either way

    def never(*_: object) -> bytes:
        raise AssertionError("the payload was decompressed")

    monkeypatch.setattr(codec, "decompress_exact", never)
    with pytest.raises(GridMismatchError, match=r"\(1, 8192, 8192\), expected \(4, 12, 16\)"):
        decode_feature(bomb, expected_shape=SHAPE, expected_grid=GRID)


def test_payload_longer_than_the_header_implies_is_refused() -> None:
    # Same shape as expected but the payload claims more than that map can hold.
    header, raw = _parts(MESSAGES[0])
    bloated = _sign(header, raw + bytes(4 * 4 * 12 * 16))
    with pytest.raises(CodecError, match="inconsistent payload"):
        decode_feature(bloated, expected_shape=SHAPE, expected_grid=GRID)
