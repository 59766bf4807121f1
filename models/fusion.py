"""Intermediate (feature) fusion strategies, one call signature, an explicit registry.

Every strategy is an ``nn.Module`` built with the BEV channel count and called as::

    fuse(ego, neighbours, masks) -> (B, C, H, W)

``ego`` ``(C, H, W)`` or ``(B, C, H, W)`` is the ego's own (possibly refined) feature;
``neighbours`` ``(B, K, C, H, W)`` are the neighbours' features already warped into the ego grid
(:mod:`models.warp`); ``masks`` ``(B, K, 1, H, W)`` are 1 where neighbour k has data for that
cell (inside its warped grid and its message arrived) and 0 elsewhere — a neighbour whose
message was lost is simply an all-zero mask, and ``K`` may be 0. The ego is always valid.

Room for what comes later: Adaptive Gated Fusion is a subclass that owns a small gate network
(the ``channels`` argument sizes it): it aggregates the valid neighbours (masked attention, as
:class:`AttentionFusion` does), computes a per-cell gate ``g = sigmoid(conv([ego, agg]))`` of
shape ``(B, 1, H, W)`` and returns ``g * ego + (1 - g) * agg``; nothing in the signature changes.
The diffusion refiner acts on ``ego`` (and optionally each neighbour) *before* fusion, so it
chains in front of any strategy. Late fusion (boxes merged by NMS) and early fusion (points
merged before encoding, :mod:`models.early_fusion`) are not feature fusions and live elsewhere.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn


class FusionStrategy(nn.Module):
    """Base class: checks and normalises shapes, then calls :meth:`combine`."""

    name: ClassVar[str] = ""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"fusion: channels must be >= 1, got {channels}")
        self.channels = channels

    def forward(
        self, ego: torch.Tensor, neighbours: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor:
        ego4 = ego.unsqueeze(0) if ego.dim() == 3 else ego
        b, c, h, w = ego4.shape
        if c != self.channels:
            raise ValueError(
                f"fusion[{self.name}]: ego has {c} channels, built for {self.channels}"
            )
        if neighbours.dim() != 5 or neighbours.shape[0] != b or neighbours.shape[2:] != (c, h, w):
            raise ValueError(
                f"fusion[{self.name}]: neighbours must be ({b}, K, {c}, {h}, {w}), "
                f"got {tuple(neighbours.shape)}"
            )
        k = neighbours.shape[1]
        if tuple(masks.shape) != (b, k, 1, h, w):
            raise ValueError(
                f"fusion[{self.name}]: masks must be ({b}, {k}, 1, {h}, {w}), "
                f"got {tuple(masks.shape)}"
            )
        return self.combine(ego4, neighbours, masks.to(ego4.dtype))

    def fuse(
        self, ego: torch.Tensor, neighbours: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor:
        """Alias of calling the module: ``(B, C, H, W)`` fused ego feature."""
        return self(ego, neighbours, masks)

    def combine(
        self, ego: torch.Tensor, neighbours: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor:
        """``ego`` ``(B, C, H, W)``, ``neighbours`` ``(B, K, C, H, W)``, float ``masks``."""
        raise NotImplementedError


class NoFusion(FusionStrategy):
    """Ego only: neighbours are ignored (the single-agent baseline)."""

    name = "none"

    def combine(
        self, ego: torch.Tensor, neighbours: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor:
        return ego


class MaxFusion(FusionStrategy):
    """F-Cooper: element-wise max over the ego and the neighbours valid at each cell."""

    name = "max"

    def combine(
        self, ego: torch.Tensor, neighbours: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor:
        if neighbours.shape[1] == 0:
            return ego
        hidden = neighbours.masked_fill(masks <= 0.5, float("-inf"))
        return torch.cat([ego.unsqueeze(1), hidden], dim=1).amax(dim=1)


class AttentionFusion(FusionStrategy):
    """AttFuse: per-cell scaled dot-product self-attention across agents, ego row kept.

    At each cell the agents' C-vectors attend to each other with ``q = k = v = feature`` and
    scores ``q.k / sqrt(C)``; invalid neighbours get zero weight. Only the ego's output row is
    returned, so only the ego query is computed. Parameter-free, as in OpenCOOD. With one agent
    (``K = 0`` or every neighbour masked out) the softmax has a single term and the output *is*
    the ego feature, bit for bit.
    """

    name = "attention"

    def combine(
        self, ego: torch.Tensor, neighbours: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor:
        ego_valid = torch.ones_like(ego[:, :1]).unsqueeze(1)  # (B, 1, 1, H, W)
        valid = torch.cat([ego_valid, masks], dim=1) > 0.5
        # Masked neighbours are zeroed, not just down-weighted, so garbage there cannot leak.
        agents = torch.cat([ego.unsqueeze(1), neighbours], dim=1).where(valid, 0.0)
        scores = (ego.unsqueeze(1) * agents).sum(dim=2, keepdim=True) / math.sqrt(self.channels)
        weights = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=1)
        return (weights * agents).sum(dim=1)


FUSION_STRATEGIES: dict[str, type[FusionStrategy]] = {
    "none": NoFusion,
    "max": MaxFusion,
    "attention": AttentionFusion,
}


def build_fusion(name: str, channels: int) -> FusionStrategy:
    """The strategy registered as ``name`` for ``channels``-wide BEV features."""
    if name not in FUSION_STRATEGIES:
        raise ValueError(f"fusion: unknown strategy {name!r}; known {sorted(FUSION_STRATEGIES)}")
    return FUSION_STRATEGIES[name](channels)
