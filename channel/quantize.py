"""Value coding of the transmitted cells: float32, float16, or int8 with per-channel affine params.

Error bounds (``x`` a float32 input value, ``x'`` what the receiver gets back):

=========  ==========================================================================
float32    exact.
float16    ``|x - x'| <= max(|x| * 2**-11, 2**-25)`` (round-to-nearest; 2**-25 is half
           the smallest float16 subnormal). ``|x| > 65504`` cannot be coded: rejected.
int8       per channel ``c``: ``lo = min(min x_c, 0)``, ``hi = max(max x_c, 0)``,
           ``scale_c = (hi - lo) / 255``, ``zero_point_c = -128 - round(lo / scale_c)``,
           ``q = clip(round(x / scale_c) + zero_point_c, -128, 127)``,
           ``x' = (q - zero_point_c) * scale_c``, so ``|x - x'| <= scale_c / 2`` (plus
           float32 rounding, below ``1e-4 * scale_c``). The range always includes 0, so
           zeros (ReLU-sparse cells) come back exactly 0.
=========  ==========================================================================

Statistics for int8 are taken over the transmitted cells only, so sparsification also
tightens the quantization step.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

DTYPES = ("float32", "float16", "int8")
FLOAT16_MAX = float(np.finfo(np.float16).max)
# Bytes of per-channel parameters for int8: a float32 scale and an int8 zero point.
INT8_PARAM_BYTES = 4 + 1


def value_itemsize(dtype: str) -> int:
    """Bytes per transmitted value for a wire dtype name."""
    return {"float32": 4, "float16": 2, "int8": 1}[dtype]


def param_nbytes(dtype: str, channels: int) -> int:
    """Bytes of quantization parameters in the payload (0 for float dtypes)."""
    return channels * INT8_PARAM_BYTES if dtype == "int8" else 0


def quantize_int8(
    values: NDArray[np.float32],
) -> tuple[NDArray[np.int8], NDArray[np.float32], NDArray[np.int8]]:
    """Per-row (channel) affine int8 coding of a ``(C, N)`` float32 array: ``(q, scale, zp)``."""
    channels = values.shape[0]
    if values.shape[1] == 0:
        lo = np.zeros(channels, dtype=np.float32)
        hi = np.zeros(channels, dtype=np.float32)
    else:
        lo = np.minimum(values.min(axis=1), np.float32(0))
        hi = np.maximum(values.max(axis=1), np.float32(0))
    span = (hi.astype(np.float64) - lo.astype(np.float64)) / 255.0
    scale = np.where(span > 0, span, 1.0).astype(np.float32)
    zero_point = (-128 - np.rint(lo / scale)).clip(-128, 127).astype(np.int8)
    scaled = values / scale[:, None]
    np.rint(scaled, out=scaled)
    scaled += zero_point.astype(np.float32)[:, None]
    np.clip(scaled, -128, 127, out=scaled)
    return scaled.astype(np.int8), scale, zero_point


def dequantize_int8(
    q: NDArray[np.int8], scale: NDArray[np.float32], zero_point: NDArray[np.int8]
) -> NDArray[np.float32]:
    """Inverse of :func:`quantize_int8` up to the rounding bound: ``(q - zp) * scale``."""
    out = q.astype(np.float32)
    out -= zero_point.astype(np.float32)[:, None]
    out *= scale[:, None]
    return out


def encode_values(values: NDArray[np.float32], dtype: str) -> bytes:
    """Payload bytes for ``(C, N)`` values: int8 params (scales, zero points) then the values."""
    if dtype == "float32":
        return values.astype("<f4", copy=False).tobytes()
    if dtype == "float16":
        if values.size and float(np.abs(values).max()) > FLOAT16_MAX:
            raise ValueError(
                f"feature magnitude exceeds the float16 maximum {FLOAT16_MAX:g}; "
                "use dtype float32 or int8"
            )
        return values.astype("<f2").tobytes()
    q, scale, zero_point = quantize_int8(values)
    return scale.astype("<f4").tobytes() + zero_point.tobytes() + q.tobytes()


def decode_values(
    data: bytes, dtype: str, channels: int, count: int
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    """Inverse of :func:`encode_values`: ``((C, N) float32, per-channel scale or None)``.

    The caller has checked ``len(data)``; a bad int8 scale raises ``ValueError``.
    """
    if dtype == "float32":
        return np.frombuffer(data, dtype="<f4").reshape(channels, count).astype(np.float32), None
    if dtype == "float16":
        return np.frombuffer(data, dtype="<f2").reshape(channels, count).astype(np.float32), None
    scale = np.frombuffer(data, dtype="<f4", count=channels).astype(np.float32)
    zero_point = np.frombuffer(data, dtype=np.int8, count=channels, offset=4 * channels)
    q = np.frombuffer(data, dtype=np.int8, offset=INT8_PARAM_BYTES * channels)
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError("int8 scales must be finite and positive")
    return dequantize_int8(q.reshape(channels, count), scale, zero_point), scale
