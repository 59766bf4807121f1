"""The benchmark's input is BEV-like and the int8 + 10% sparsity target holds on it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from channel.codec import CodecConfig, encode_feature

_PATH = Path(__file__).resolve().parents[2] / "bench" / "bench_codec.py"
_spec = importlib.util.spec_from_file_location("bench_codec", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_bench_feature_is_relu_sparse_and_structured() -> None:
    f = bench.bev_like_feature()
    assert f.shape == (64, 128, 128) and f.dtype == np.float32 and f.min() == 0.0
    occupied = (f != 0).any(axis=0)
    assert 0.15 < occupied.mean() < 0.4 and 0.8 < np.mean(f == 0) < 0.95
    # Spatial structure: neighbouring occupied cells are strongly correlated, unlike noise.
    a, b = f[:, :, :-1], f[:, :, 1:]
    both = occupied[:, :-1] & occupied[:, 1:]
    assert np.corrcoef(a[:, both].ravel(), b[:, both].ravel())[0, 1] > 0.5


def test_int8_topk10_is_at_least_50x_smaller_than_float32() -> None:
    f = bench.bev_like_feature()
    msg = encode_feature(f, np.eye(4), 0.0, 1, bench.GRID, CodecConfig("int8", {"topk": 0.1}))
    assert f.nbytes / len(msg) >= 50.0
