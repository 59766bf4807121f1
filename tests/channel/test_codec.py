"""Codec round trips within the stated quantization bounds, byte accounting and error cases."""

from __future__ import annotations

import itertools

import msgpack
import numpy as np
import pytest
import zstandard

from channel.codec import (
    CodecConfig,
    GridHeader,
    byte_stats,
    decode_feature,
    encode_feature,
    peek_header,
)
from channel.wire import FORMAT_VERSION, MAGIC, CodecError, _digest

GRID = GridHeader(-12.0, -8.0, 12.0, 8.0, 1.0)  # 16 x 24 cells


def bev_feature(seed: int = 0, channels: int = 8) -> np.ndarray:
    """A small ReLU-sparse map with blobs, plus a few negative values to exercise int8 zp."""
    rng = np.random.default_rng(seed)
    f = np.maximum(rng.normal(-0.5, 1.0, size=(channels, 16, 24)), 0.0)
    f[:, 4:8, 5:11] += rng.uniform(1, 5, size=(channels, 1, 1))
    f[0, 0, 0] = -0.75
    return f.astype(np.float32)


POSE = np.array(
    [[0.0, -1.0, 0.0, 10.5], [1.0, 0.0, 0.0, -3.25], [0.0, 0.0, 1.0, 1.9], [0.0, 0.0, 0.0, 1.0]]
)
SPARSITIES = [None, {"threshold": 1.0}, {"topk": 0.1}, {"topk": 1.0}]


@pytest.mark.parametrize(
    "dtype,sparsity", list(itertools.product(["float32", "float16", "int8"], SPARSITIES))
)
def test_round_trip_within_bound(dtype: str, sparsity: dict | None) -> None:
    f = bev_feature()
    msg = encode_feature(f, POSE, 1.25, 7, GRID, CodecConfig(dtype, sparsity, zstd_level=5))
    dec = decode_feature(msg)
    h = dec.header
    assert (h.version, h.sender_id, h.t_send, h.shape, h.dtype) == (
        FORMAT_VERSION,
        7,
        1.25,
        (8, 16, 24),
        dtype,
    )
    assert h.grid == GRID and np.array_equal(h.pose, POSE) and h.pose.dtype == np.float64
    assert dec.feature.dtype == np.float32 and dec.feature.shape == f.shape
    if sparsity is None or sparsity == {"topk": 1.0}:
        assert dec.mask.all()
    elif "topk" in sparsity:
        assert dec.mask.sum() == int(np.ceil(0.1 * 16 * 24))
    else:
        assert np.array_equal(dec.mask, np.abs(f).max(axis=0) > 1.0)
    assert h.n_cells == dec.mask.sum()
    assert np.all(dec.feature[:, ~dec.mask] == 0)  # unsent cells come back as zeros
    sent, got = f[:, dec.mask], dec.feature[:, dec.mask]
    err = np.abs(sent - got)
    if dtype == "float32":
        assert np.array_equal(sent, got)
    elif dtype == "float16":
        assert np.all(err <= np.maximum(np.abs(sent) * 2.0**-11, 2.0**-25))
    else:
        lo = np.minimum(sent.min(axis=1), 0)
        hi = np.maximum(sent.max(axis=1), 0)
        scale = (hi - lo) / 255
        np.testing.assert_allclose(dec.scale, scale, rtol=1e-6)
        assert np.all(err <= scale[:, None] * (0.5 + 1e-4))
        assert np.all(got[sent == 0] == 0)  # zeros stay exact
        assert err.max() > scale.min() * 0.1  # it really is quantized


def test_int8_constant_and_empty_channels() -> None:
    f = np.zeros((3, 16, 24), dtype=np.float32)
    f[1] = 2.5
    dec = decode_feature(encode_feature(f, POSE, 0.0, 1, GRID, CodecConfig("int8")))
    np.testing.assert_allclose(dec.feature, f, atol=2.5 / 255 / 2 + 1e-6)
    assert np.all(dec.feature[0] == 0)
    empty = np.zeros((16, 24), dtype=bool)
    dec = decode_feature(encode_feature(f, POSE, 0.0, 1, GRID, CodecConfig("int8"), mask=empty))
    assert dec.header.n_cells == 0 and not dec.mask.any() and not dec.feature.any()


def test_explicit_mask_and_confidence() -> None:
    f = bev_feature(1)
    mask = np.zeros((16, 24), dtype=bool)
    mask[3, 4] = mask[15, 23] = True
    dec = decode_feature(encode_feature(f, POSE, 0.0, 2, GRID, CodecConfig("float32"), mask=mask))
    assert np.array_equal(dec.mask, mask) and np.array_equal(dec.feature[:, mask], f[:, mask])
    conf = np.zeros((16, 24))
    conf[0, :5] = 0.9
    cfg = CodecConfig("float32", {"threshold": 0.5})
    dec = decode_feature(encode_feature(f, POSE, 0.0, 2, GRID, cfg, confidence=conf))
    assert dec.mask.sum() == 5 and dec.mask[0, :5].all()
    with pytest.raises(CodecError, match="not both"):
        encode_feature(f, POSE, 0.0, 2, GRID, cfg, mask=mask)


def test_byte_accounting() -> None:
    f = bev_feature(2)
    msg = encode_feature(f, POSE, 0.0, 3, GRID, CodecConfig("int8", {"topk": 0.1}))
    stats = byte_stats(msg)
    assert stats.raw_bytes == 8 * 16 * 24 * 4 == decode_feature(msg).raw_nbytes
    assert stats.wire_bytes == len(msg) == decode_feature(msg).wire_nbytes
    assert stats.ratio == pytest.approx(12288 / len(msg))
    assert stats.ratio > 5  # 10% of cells at one byte each, plus ~250 bytes of header


def test_encoding_is_deterministic() -> None:
    f = bev_feature(3)
    for cfg in (CodecConfig("float16"), CodecConfig("int8", {"topk": 0.3})):
        assert encode_feature(f, POSE, 0.5, 4, GRID, cfg) == encode_feature(
            f.copy(), POSE.copy(), 0.5, 4, GRID, cfg
        )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_encode_rejects_non_finite(bad: float) -> None:
    f = bev_feature()
    f[2, 3, 4] = bad
    with pytest.raises(CodecError, match="1 NaN/inf"):
        encode_feature(f, POSE, 0.0, 0, GRID)


def test_encode_rejects_bad_inputs() -> None:
    f = bev_feature()
    with pytest.raises(CodecError, match="float16 maximum"):
        encode_feature(f * 1e5, POSE, 0.0, 0, GRID, CodecConfig("float16"))
    with pytest.raises(CodecError, match="float32"):
        encode_feature(f.astype(np.float64), POSE, 0.0, 0, GRID)
    with pytest.raises(CodecError, match="grid"):
        encode_feature(f[:, :8], POSE, 0.0, 0, GRID)
    with pytest.raises(CodecError, match="pose"):
        encode_feature(f, np.eye(3), 0.0, 0, GRID)
    with pytest.raises(ValueError, match="dtype"):
        CodecConfig("bfloat16")
    with pytest.raises(ValueError, match="unknown key 'top'"):
        CodecConfig(sparsity={"top": 0.1})
    with pytest.raises(ValueError, match="fraction"):
        CodecConfig(sparsity={"topk": 1.5})


def _frame(
    header: dict, raw_payload: bytes, version: int = FORMAT_VERSION, frame: bytes | None = None
) -> bytes:
    """A message with a valid checksum around an arbitrary header and payload."""
    hb = msgpack.packb(header)
    payload = frame if frame is not None else zstandard.ZstdCompressor().compress(raw_payload)
    return msgpack.packb([MAGIC, version, hb, payload, _digest(hb, payload)])


def _header(**over: object) -> dict:
    h = {
        "sender": 1,
        "t": 0.0,
        "pose": np.eye(4).tobytes(),
        "grid": GRID.as_list(),
        "shape": [8, 16, 24],
        "dtype": "float32",
        "sparse": False,
        "n": 16 * 24,
    }
    h.update(over)
    return h


def test_crafted_messages_are_rejected_with_reasons() -> None:
    good = _frame(_header(), bytes(8 * 16 * 24 * 4))
    assert decode_feature(good).feature.shape == (8, 16, 24)
    cases = {
        "unknown format version 2": _frame(_header(), b"", version=2),
        "oversized": _frame(_header(shape=[100000, 16, 24]), b""),
        "frame declares": _frame(_header(), bytes(8 * 16 * 24 * 4 + 1)),
        "malformed header": _frame(_header(extra=1), b""),
        "shape says": _frame(_header(shape=[8, 16, 25]), b""),
        "sent cells": _frame(_header(n=5), b""),
        "not a zstandard frame": _frame(_header(), b"", frame=b"\x00" * 16),
        "checksum mismatch": good[:-1] + bytes([good[-1] ^ 1]),
        "trailing": good + b"\x00",
        "truncated": good[: len(good) // 2],
        "bad magic": msgpack.packb([b"XXXX", 1, b"", b"", b""]),
    }
    for reason, msg in cases.items():
        with pytest.raises(CodecError, match=reason):
            decode_feature(msg)
    with pytest.raises(CodecError, match="exceeds the cap"):
        decode_feature(good, max_message_bytes=100)
    with pytest.raises(CodecError, match="oversized"):
        decode_feature(good, max_decompressed_bytes=1000)


def test_decompression_bomb_without_content_size_is_rejected() -> None:
    # A frame that does not declare its size (streamed) could expand without bound.
    stream = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    bomb = stream.compress(bytes(8 * 16 * 24 * 4)) + stream.flush()
    with pytest.raises(CodecError, match="frame declares -1"):
        decode_feature(_frame(_header(), b"", frame=bomb))


def test_peek_header_matches_decode() -> None:
    msg = encode_feature(bev_feature(), POSE, 2.0, 9, GRID, CodecConfig("int8", {"topk": 0.2}))
    h = peek_header(msg)
    assert (h.sender_id, h.t_send, h.sparse, h.raw_nbytes) == (9, 2.0, True, 12288)
