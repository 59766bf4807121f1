"""Codec benchmark: encode/decode throughput and compression ratio per payload option, as JSON.

Run: ``python bench/bench_codec.py [--level 3] [--repeats 20]``.

The input is a synthetic but BEV-like 64 x 128 x 128 float32 map (what a PointPillars-style
encoder gives after ReLU), not random noise:

* occupancy: cells a LiDAR would see -- two crossing road bands (with kerbs), 14 vehicle-sized
  blobs, and a point density falling off with range -- 26% of the cells; elsewhere every
  channel is exactly 0 (empty pillars);
* content: 8 spatially smooth latent fields (white noise low-pass filtered in the Fourier
  domain) mixed into 64 channels by a random matrix, plus a per-channel bias and a little
  per-cell noise, then ReLU -- so channels are correlated, spatially structured, and about
  half (52%) the values in occupied cells are zero, as after a ReLU; 87% zeros overall;
* the values keep full float32 mantissas, so float32 itself compresses only through the zeros.

Throughput is MB/s (1e6 bytes) of raw float32 input, median over the repeats, one core.

Validation: what the ego adds to a plain ``decode_feature`` before fusing a message -- the
header checked against the expected map before decompression (``expected_shape``/``grid``)
and :func:`agents.message_checks.check_message` (link sender and time, rigid pose in range,
per-channel value bounds). The header comparison is a tuple compare; the checks run on the
decoder's per-channel extremes (found in the pass that proves the values finite), so they cost
O(C), not a pass over the map. ``validate_ms`` is the median time of ``check_message`` on the
decoded message (checked decodes are asserted to pass), ``validate_fraction`` that over the
plain decode time; the target is < 0.05.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

from agents.message_checks import MessageExpectation, check_message
from channel.codec import CodecConfig, GridHeader, decode_feature, encode_feature

SHAPE = (64, 128, 128)
GRID = GridHeader(-51.2, -51.2, 51.2, 51.2, 0.8)
OPTIONS: dict[str, CodecConfig] = {
    "float32": CodecConfig("float32"),
    "float16": CodecConfig("float16"),
    "int8": CodecConfig("int8"),
    "float32+topk10%": CodecConfig("float32", {"topk": 0.1}),
    "float16+topk10%": CodecConfig("float16", {"topk": 0.1}),
    "int8+topk10%": CodecConfig("int8", {"topk": 0.1}),
    "int8+threshold": CodecConfig("int8", {"threshold": 1.0}),
}


def smooth_fields(rng: np.random.Generator, count: int, size: int, cutoff: float) -> np.ndarray:
    """``count`` low-pass filtered noise fields of ``size x size``, unit std each."""
    freq = np.fft.fftfreq(size)
    radius = np.hypot(freq[:, None], freq[None, :])
    kernel = np.exp(-((radius / cutoff) ** 2))
    noise = rng.standard_normal((count, size, size))
    fields = np.fft.ifft2(np.fft.fft2(noise) * kernel).real
    return fields / fields.std(axis=(1, 2), keepdims=True)


def bev_like_feature(seed: int = 0) -> np.ndarray:
    """The synthetic ReLU-sparse, spatially structured BEV map described above."""
    rng = np.random.default_rng(seed)
    channels, height, width = SHAPE
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    road = (np.abs(yy - 64) < 12) | (np.abs(xx - 70) < 10)
    kerb = (np.abs(np.abs(yy - 64) - 13) < 1.5) | (np.abs(np.abs(xx - 70) - 11) < 1.5)
    vehicles = np.zeros((height, width), dtype=bool)
    for _ in range(14):
        cy, cx = rng.integers(8, height - 8), rng.integers(8, width - 8)
        vehicles |= ((yy - cy) / 3.0) ** 2 + ((xx - cx) / 6.0) ** 2 < 1.0
    density = np.exp(-np.hypot(yy - 64, xx - 64) / 60.0)
    seen = rng.random((height, width)) < 0.9 * density
    occupied = (road & seen) | kerb | vehicles
    latent = smooth_fields(rng, 8, height, cutoff=0.05)
    mix = rng.normal(0.0, 1.0, size=(channels, 8)) / np.sqrt(8)
    bias = rng.normal(-0.2, 0.3, size=(channels, 1, 1))
    feat = np.einsum("ck,khw->chw", mix, latent) + bias
    feat += 0.1 * rng.standard_normal(feat.shape)
    feat[:, vehicles] += rng.uniform(0.5, 2.0, size=(channels, 1))  # objects light up
    feat = np.maximum(feat, 0.0) * occupied
    return feat.astype(np.float32)


def median_seconds(fn: object, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()  # type: ignore[operator]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(level: int, repeats: int) -> dict[str, object]:
    """Benchmark every option; returns the JSON-ready report."""
    feature = bev_like_feature()
    raw = feature.nbytes
    pose = np.eye(4)
    report: dict[str, object] = {
        "shape": list(SHAPE),
        "raw_float32_bytes": raw,
        "zero_fraction": round(float(np.mean(feature == 0)), 4),
        "zstd_level": level,
        "repeats": repeats,
        "python": platform.python_version(),
        "results": {},
    }
    results: dict[str, dict[str, float]] = {}
    # Per-channel bounds as a model would give them (here: twice the map's own range).
    high = feature.reshape(SHAPE[0], -1).max(axis=1) * 2.0 + 1.0
    expect = MessageExpectation(
        SHAPE, GRID, np.full(SHAPE[0], -0.01, np.float32), high.astype(np.float32)
    )
    ego_pose = np.eye(4)
    ego_pose[0, 3] = 30.0

    def validate(decoded: object) -> None:
        reason = check_message(decoded, 1, 0.0, ego_pose, expect)  # type: ignore[arg-type]
        assert reason is None, reason

    for name, base in OPTIONS.items():
        cfg = CodecConfig(base.dtype, base.sparsity, zstd_level=level)
        msg = encode_feature(feature, pose, 0.0, 1, GRID, cfg)
        enc_s = median_seconds(
            lambda c=cfg: encode_feature(feature, pose, 0.0, 1, GRID, c), repeats
        )
        dec_s = median_seconds(lambda m=msg: decode_feature(m), repeats)
        checked = decode_feature(msg, expected_shape=SHAPE, expected_grid=GRID)
        check_s = median_seconds(lambda d=checked: validate(d), repeats)
        decoded = decode_feature(msg)
        sent = decoded.mask
        err = float(np.abs(decoded.feature[:, sent] - feature[:, sent]).max(initial=0.0))
        results[name] = {
            "wire_bytes": len(msg),
            "ratio": round(raw / len(msg), 2),
            "encode_MBps": round(raw / enc_s / 1e6, 1),
            "decode_MBps": round(raw / dec_s / 1e6, 1),
            "decode_ms": round(dec_s * 1e3, 3),
            "validate_ms": round(check_s * 1e3, 4),
            "validate_fraction": round(check_s / dec_s, 4),
            "cells_sent_fraction": round(float(sent.mean()), 4),
            "max_abs_error_sent_cells": err,
        }
    report["results"] = results
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", type=int, default=3, help="zstd level (default 3)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(run(args.level, args.repeats), indent=2))


if __name__ == "__main__":
    main()
