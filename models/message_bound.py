"""Per-channel bounds on the values a sender's message map can hold, derived from the model.

An honest neighbour runs the same checkpoint as the ego. For a PointPillars encoder whose
pseudo-image is the message (``fuse_at: encoder``, every shipped intermediate-fusion model),
each value is a max over a pillar's points of ``ReLU(BN(W x))`` with ``x`` the decorated point:
coordinates inside the grid's ``point_range`` (voxelization drops the rest), intensity in
``[0, 1]`` (the project's convention, as OPV2V stores it), offsets to the pillar mean and
centre within a voxel. Interval bound propagation through the linear + eval-mode BatchNorm +
ReLU layers gives, per channel, the largest value any point cloud can produce. A message value
above it cannot come from an honest sender; the ego rejects such a message rather than clamping
it (a clamped ``x 100`` map would still be fused as a saturated, poisoned one).

Early fusion's messages (points, :mod:`channel.payload_codec`) need no bound of their own:
decoded intensity is a uint8 step of ``[0, 1]`` and voxelization drops coordinates outside the
grid, so a received cloud stays inside the input domain assumed here.

The bound is computed from the weights, so it needs nothing new in the checkpoint and holds for
every checkpoint of that architecture. For other message stages (a backbone output, the sparse
voxel encoder) :func:`message_value_bounds` returns ``None`` and the ego checks finiteness
and :data:`FALLBACK_ABS_BOUND` only.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from models.detector import CooperativeDetector
from models.device import to_numpy
from models.encoders.pointpillars import PFNLayer, PointPillarsEncoder

INTENSITY_RANGE = (0.0, 1.0)
# Used when no model-derived bound exists: far above any BEV feature a trained network emits,
# far below where float32 arithmetic in warp, fusion and the head starts to overflow.
FALLBACK_ABS_BOUND = 1.0e4


def _linear_interval(
    weight: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval of ``W x`` for ``x`` in ``[lo, hi]`` (elementwise), ``W`` ``(out, in)``."""
    pos, neg = weight.clamp(min=0), weight.clamp(max=0)
    return pos @ lo + neg @ hi, pos @ hi + neg @ lo


def _pfn_interval(
    layer: PFNLayer, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval of one PFN layer's per-point ``ReLU(BN(W x))`` (eval-mode BatchNorm), on the
    CPU whatever the model's device (the bounds are numpy)."""

    def cpu64(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to(device="cpu", dtype=torch.float64)

    z_lo, z_hi = _linear_interval(cpu64(layer.linear.weight), lo, hi)
    norm = layer.norm
    scale = cpu64(norm.weight) / torch.sqrt(cpu64(norm.running_var) + norm.eps)
    shift = cpu64(norm.bias) - cpu64(norm.running_mean) * scale
    a, b = scale * z_lo + shift, scale * z_hi + shift
    return torch.minimum(a, b).clamp(min=0), torch.maximum(a, b).clamp(min=0)


def pillar_bounds(encoder: PointPillarsEncoder) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(low, high)`` per output channel of a PointPillars encoder in eval mode."""
    x0, y0, z0, x1, y1, z1 = encoder.grid.point_range
    vx, vy, _ = encoder.grid.voxel_size
    dz = z1 - z0
    lo = torch.tensor(
        [x0, y0, z0, INTENSITY_RANGE[0], -vx, -vy, -dz, -vx / 2, -vy / 2], dtype=torch.float64
    )
    hi = torch.tensor(
        [x1, y1, z1, INTENSITY_RANGE[1], vx, vy, dz, vx / 2, vy / 2], dtype=torch.float64
    )
    for layer in encoder.layers:
        out_lo, out_hi = _pfn_interval(layer, lo, hi)
        if layer.last:
            lo, hi = out_lo, out_hi
        else:  # per-point output concatenated with the pillar max: both in the same interval
            lo, hi = torch.cat([out_lo, out_lo]), torch.cat([out_hi, out_hi])
    # An empty cell is zero, so zero is always a possible value.
    return np.minimum(to_numpy(lo), 0.0), np.maximum(to_numpy(hi), 0.0)


def message_value_bounds(
    model: CooperativeDetector,
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """Per-channel ``(low, high)`` of the model's message map, or ``None`` when the message
    stage is not one this module can bound (then only :data:`FALLBACK_ABS_BOUND` applies)."""
    encoder = model.features.encoder
    if model.fuse_at != "encoder" or not isinstance(encoder, PointPillarsEncoder):
        return None
    low, high = pillar_bounds(encoder)
    if low.shape != (model.message_shape[0],):
        return None
    return low, high
