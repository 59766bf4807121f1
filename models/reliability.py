"""AGF's per-neighbour reliability score: one logit per received map, from the map as a whole.

The gate's 3 x 3 window cannot tell fog backscatter or crosstalk clutter from a car, but the
map as a whole can: a 1 x 1 projection to ``channels`` descriptors, pooled (mean and max) over
the cells where the neighbour is valid, beside the ego's descriptors pooled over the same
cells, the message cues and (optionally) the neighbour's own occupancy profile by range band
(:func:`models.cues.occupancy_profile`), goes through a small MLP.
"""

from __future__ import annotations

import torch
from torch import nn

from models.cues import NUM_CUES
from models.denoiser import pointwise


class NeighbourReliability(nn.Module):
    """Logits ``(B, K)``: how far to trust each neighbour's map. The last layer starts at
    zero weight and ``bias`` (0 keeps a fresh score out of the fusion's way; AGF's shut-out
    starts at a trusting bias), so only training moves it away from a constant."""

    def __init__(
        self, in_channels: int, channels: int, hidden: int, profile_size: int = 0, bias: float = 0.0
    ) -> None:
        super().__init__()
        self.profile_size = profile_size
        self.project = nn.Conv2d(in_channels, channels, 1)
        self.mlp = nn.Sequential(
            nn.Linear(4 * channels + NUM_CUES + profile_size, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.constant_(self.mlp[-1].bias, bias)

    def forward(
        self,
        ego: torch.Tensor,
        nbrs: torch.Tensor,
        valid: torch.Tensor,
        cues: torch.Tensor,
        profiles: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``ego`` ``(B, C, H, W)``, zeroed ``nbrs`` ``(B, K, C, H, W)``, bool ``valid``
        ``(B, K, 1, H, W)``, ``cues`` ``(B, K, NUM_CUES)``, ``profiles`` ``(B, K, P)`` (read
        only when built with ``profile_size`` P) -> logits ``(B, K)``; a neighbour with no
        valid cell pools to zeros."""
        b, k = nbrs.shape[:2]
        own = pointwise(self.project, ego).unsqueeze(1)  # (B, 1, R, H, W)
        theirs = pointwise(self.project, nbrs.flatten(0, 1)).view(b, k, -1, *nbrs.shape[-2:])
        weight = valid.to(ego.dtype)
        count = weight.sum(dim=(3, 4)).clamp_min(1.0)  # (B, K, 1)
        has_cell = valid.flatten(2).any(dim=2, keepdim=True)  # (B, K, 1)
        floor = torch.finfo(ego.dtype).min

        def pooled(x: torch.Tensor) -> torch.Tensor:
            mean = (x * weight).sum(dim=(3, 4)) / count
            peak = x.masked_fill(~valid, floor).amax(dim=(3, 4)).where(has_cell, 0.0)
            return torch.cat([mean, peak], dim=2)

        parts = [pooled(theirs), pooled(own.expand_as(theirs)), cues]
        if self.profile_size:
            if profiles is None or tuple(profiles.shape) != (b, k, self.profile_size):
                got = None if profiles is None else tuple(profiles.shape)
                raise ValueError(
                    f"reliability: profiles must be ({b}, {k}, {self.profile_size}), got {got}"
                )
            parts.append(profiles.to(ego.dtype))
        return self.mlp(torch.cat(parts, dim=2)).squeeze(2)
