"""Detection losses: sigmoid focal loss, smooth-L1 on residuals with the sine yaw difference,
and direction-bin labels for the optional direction classifier."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Element-wise focal loss (Lin et al. 2017) of logits against 0/1 targets, unreduced.

    ``-alpha_t (1 - p_t)^gamma log(p_t)``; the log term comes from the numerically stable
    binary cross-entropy with logits.
    """
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1.0 - prob) * (1.0 - targets)
    alpha_t = alpha * targets + (1.0 - alpha) * (1.0 - targets)
    return alpha_t * (1.0 - p_t).pow(gamma) * ce


def sine_yaw_residuals(
    pred: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the yaw residual (last column) of pred/target by ``sin(a)cos(b)`` and
    ``cos(a)sin(b)``, so that their difference is ``sin(a - b)``: smooth at the +-pi seam and
    blind to a flip by pi (the direction classifier, if any, resolves that)."""
    a, b = pred[..., 6:7], target[..., 6:7]
    pred_s = torch.cat([pred[..., :6], torch.sin(a) * torch.cos(b)], dim=-1)
    target_s = torch.cat([target[..., :6], torch.cos(a) * torch.sin(b)], dim=-1)
    return pred_s, target_s


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """Element-wise smooth-L1 (Huber with slope 1), unreduced; ``beta = 1/9`` is SECOND's."""
    return F.smooth_l1_loss(pred, target, reduction="none", beta=beta)


def direction_labels(yaw: torch.Tensor, offset: float, num_bins: int = 2) -> torch.Tensor:
    """Bin index of ``yaw`` (radians) after shifting by ``offset``, with ``2 pi / num_bins``
    bins: which half of the circle the heading points to when ``num_bins == 2``."""
    shifted = torch.remainder(yaw - offset, 2.0 * math.pi)
    bins = torch.floor(shifted / (2.0 * math.pi / num_bins)).long()
    return bins.clamp(0, num_bins - 1)


def apply_direction(
    yaw: torch.Tensor, bins: torch.Tensor, offset: float, num_bins: int = 2
) -> torch.Tensor:
    """Fold ``yaw`` into one bin's period and move it to bin ``bins``; result wrapped to
    ``[-pi, pi)``. Inverse of :func:`direction_labels` up to the pi ambiguity it resolves."""
    period = 2.0 * math.pi / num_bins
    base = torch.remainder(yaw - offset, period)
    out = base + offset + period * bins.to(yaw.dtype)
    return torch.remainder(out + math.pi, 2.0 * math.pi) - math.pi
