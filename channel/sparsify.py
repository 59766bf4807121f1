"""Which BEV cells a sender transmits (Where2comm-style spatial sparsification).

Where2comm sends only the cells its confidence map marks as informative. Here a mask is a
``bool (H, W)`` array, chosen either by a threshold on a confidence map or by keeping the
top-k fraction of cells. When the caller has no detection-head confidence map,
:func:`default_confidence` (per-cell max of ``|feature|`` over channels) stands in for one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

SPARSITY_KEYS = ("threshold", "topk")


def validate_sparsity(sparsity: Mapping[str, Any] | None) -> dict[str, float] | None:
    """Check a sparsity spec: None, ``{"threshold": t}`` or ``{"topk": frac}``, 0 < frac <= 1."""
    if sparsity is None:
        return None
    if not isinstance(sparsity, Mapping) or len(sparsity) != 1:
        raise ValueError(
            f"sparsity must be None, {{'threshold': t}} or {{'topk': frac}}, got {sparsity!r}"
        )
    ((key, value),) = sparsity.items()
    if key not in SPARSITY_KEYS:
        raise ValueError(f"sparsity: unknown key {key!r}; known keys are {list(SPARSITY_KEYS)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"sparsity {key} must be finite, got {value}")
    if key == "topk" and not 0.0 < value <= 1.0:
        raise ValueError(f"sparsity topk is a fraction of cells in (0, 1], got {value}")
    return {key: value}


def default_confidence(feature: NDArray[np.float32]) -> NDArray[np.float32]:
    """Per-cell max of ``|feature|`` over channels, ``(H, W)``: a stand-in confidence map."""
    return np.abs(feature).max(axis=0)


def threshold_mask(confidence: NDArray[np.floating], threshold: float) -> NDArray[np.bool_]:
    """Cells whose confidence is strictly above ``threshold``."""
    return np.asarray(confidence) > threshold


def topk_mask(confidence: NDArray[np.floating], fraction: float) -> NDArray[np.bool_]:
    """The ``ceil(fraction * H * W)`` most confident cells (ties broken by flat index)."""
    conf = np.asarray(confidence)
    n_cells = conf.size
    k = min(n_cells, max(1, math.ceil(fraction * n_cells)))
    flat = conf.reshape(-1)
    # A stable sort on -confidence gives a deterministic choice among equal scores.
    order = np.argsort(-flat, kind="stable")[:k]
    mask = np.zeros(n_cells, dtype=bool)
    mask[order] = True
    return mask.reshape(conf.shape)


def select_mask(
    feature: NDArray[np.float32],
    sparsity: Mapping[str, Any] | None,
    confidence: NDArray[np.floating] | None = None,
) -> NDArray[np.bool_] | None:
    """Mask of cells to send for a ``(C, H, W)`` feature under ``sparsity``; ``None`` = dense."""
    spec = validate_sparsity(sparsity)
    if spec is None:
        return None
    _, height, width = feature.shape
    conf = default_confidence(feature) if confidence is None else np.asarray(confidence)
    if conf.shape != (height, width):
        raise ValueError(f"confidence map must be {(height, width)}, got {conf.shape}")
    if not np.isfinite(conf).all():
        raise ValueError("confidence map contains NaN or inf")
    if "threshold" in spec:
        return threshold_mask(conf, spec["threshold"])
    return topk_mask(conf, spec["topk"])


def pack_mask(mask: NDArray[np.bool_]) -> bytes:
    """One bit per cell, row-major, padded to whole bytes (``np.packbits``)."""
    return np.packbits(mask.reshape(-1)).tobytes()


def unpack_mask(data: bytes, shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Inverse of :func:`pack_mask`; the caller checks ``len(data)`` first."""
    n_cells = shape[0] * shape[1]
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n_cells)
    return bits.astype(bool).reshape(shape)


def packed_mask_nbytes(shape: tuple[int, int]) -> int:
    """Bytes :func:`pack_mask` produces for an ``(H, W)`` mask."""
    return (shape[0] * shape[1] + 7) // 8
