"""Decoder robustness: arbitrary bytes and corrupted messages raise CodecError and nothing else."""

from __future__ import annotations

import msgpack
import numpy as np
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channel.codec import CodecConfig, GridHeader, decode_feature, encode_feature
from channel.wire import FORMAT_VERSION, MAGIC, CodecError, _digest

GRID = GridHeader(0.0, 0.0, 8.0, 6.0, 0.5)  # 12 x 16 cells


def _message(dtype: str, sparsity: dict | None, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    f = np.maximum(rng.normal(size=(4, 12, 16)), 0).astype(np.float32)
    return encode_feature(f, np.eye(4), 0.3, 5, GRID, CodecConfig(dtype, sparsity))


MESSAGES = [_message(d, s) for d in ("float32", "float16", "int8") for s in (None, {"topk": 0.25})]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_only_codec_error(data: bytes) -> bool:
    """True if decoding raised CodecError, False if it succeeded; any other exception fails."""
    try:
        decode_feature(data)
    except CodecError:
        return True
    return False


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_codec_error(data: bytes) -> None:
    _decode_only_codec_error(data)


@FUZZ
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.binary(max_size=64)
        | st.text(max_size=16),
        lambda kids: (
            st.lists(kids, max_size=6) | st.dictionaries(st.text(max_size=8), kids, max_size=6)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_msgpack_values_raise_only_codec_error(value: object) -> None:
    # Structured garbage gets past the msgpack parser and exercises the field checks.
    assert _decode_only_codec_error(msgpack.packb(value))
    assert _decode_only_codec_error(msgpack.packb([b"V2XF", 1, value, value, value]))


HEADER_KEYS = ["sender", "t", "pose", "grid", "shape", "dtype", "sparse", "n"]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.binary(max_size=130)
    | st.sampled_from(["float32", "float16", "int8", "x"])
)
FIELD = SCALARS | st.lists(SCALARS, max_size=6)


VALID = {
    "sender": 1,
    "t": 0.0,
    "pose": np.eye(4).tobytes(),
    "grid": GRID.as_list(),
    "shape": [4, 12, 16],
    "dtype": "int8",
    "sparse": True,
    "n": 3,
}
# Each field valid or garbage, so that checks deep in the header are reached too.
HEADERS = st.fixed_dictionaries(
    {k: st.just(v) | FIELD for k, v in VALID.items()}
) | st.dictionaries(st.sampled_from(HEADER_KEYS + ["extra"]), FIELD, max_size=9)


@FUZZ
@given(HEADERS, st.binary(max_size=64), st.booleans())
def test_checksummed_garbage_headers_raise_only_codec_error(
    header: dict, payload: bytes, compress: bool
) -> None:
    # A valid checksum gets garbage past the integrity check into header and payload parsing.
    hb = msgpack.packb(header)
    frame = zstandard.ZstdCompressor().compress(payload) if compress else payload
    assert _decode_only_codec_error(
        msgpack.packb([MAGIC, FORMAT_VERSION, hb, frame, _digest(hb, frame)])
    )


@FUZZ
@given(st.sampled_from(range(len(MESSAGES))), st.data())
def test_mutated_messages_are_detected(index: int, data: st.DataObject) -> None:
    msg = bytearray(MESSAGES[index])
    n_edits = data.draw(st.integers(1, 4))
    for _ in range(n_edits):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, len(msg) - 1))
        if kind == "flip":
            msg[pos] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del msg[pos]
        else:
            msg.insert(pos, data.draw(st.integers(0, 255)))
    if bytes(msg) != MESSAGES[index]:
        assert _decode_only_codec_error(bytes(msg))


def test_every_single_byte_flip_is_detected() -> None:
    rng = np.random.default_rng(123)
    for msg in MESSAGES:
        for pos in range(len(msg)):
            bad = bytearray(msg)
            bad[pos] ^= int(rng.integers(1, 256))
            assert _decode_only_codec_error(bytes(bad)), f"flip at {pos} went unnoticed"


def test_random_multi_byte_flips_and_truncations_are_detected() -> None:
    rng = np.random.default_rng(7)
    for trial in range(2000):
        msg = MESSAGES[trial % len(MESSAGES)]
        bad = bytearray(msg)
        for pos in rng.choice(len(bad), size=int(rng.integers(2, 9)), replace=False):
            bad[pos] ^= int(rng.integers(1, 256))
        assert _decode_only_codec_error(bytes(bad))
        assert _decode_only_codec_error(msg[: int(rng.integers(0, len(msg)))])


def test_extreme_grid_numbers_raise_codec_error() -> None:
    for grid in (
        [-1e308, -1.0, 1e308, 1.0, 1.0],
        [0.0, 0.0, 1.0, 1.0, 1e-300],
        [0.0, 0.0, 1.0, 1.0, float("nan")],
    ):
        hb = msgpack.packb({**VALID, "grid": grid})
        frame = zstandard.ZstdCompressor().compress(b"")
        assert _decode_only_codec_error(
            msgpack.packb([MAGIC, FORMAT_VERSION, hb, frame, _digest(hb, frame)])
        )
