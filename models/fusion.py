"""Intermediate (feature) fusion strategies, one call signature, an explicit registry.

Every strategy is an ``nn.Module`` built with the BEV channel count and called as::

    fuse(ego, neighbours, masks) -> (B, C, H, W)

``ego`` ``(C, H, W)`` or ``(B, C, H, W)`` is the ego's own (possibly refined) feature;
``neighbours`` ``(B, K, C, H, W)`` are the neighbours' features already warped into the ego grid
(:mod:`models.warp`); ``masks`` ``(B, K, 1, H, W)`` are 1 where neighbour k has data for that
cell (inside its warped grid and its message arrived) and 0 elsewhere — a neighbour whose
message was lost is simply an all-zero mask, and ``K`` may be 0. The ego is always valid.

``cues`` ``(B, K, NUM_CUES)`` (optional, zeros when absent) are what the ego knows about each
neighbour's message besides its map (:data:`CUE_NAMES`: its age, whether it was warped with a
stale pose, the sender's reported pose-noise level); only :class:`AdaptiveGatedFusion` reads
them. Strategies take their hyperparameters from the model config (``fusion_options``), checked
against the strategy's ``Options`` dataclass. The diffusion refiner (:mod:`models.refiner`) acts
on ``ego`` (and optionally each neighbour) *before* fusion, so it chains in front of any
strategy. Late fusion (boxes merged by NMS) and early fusion (points merged before encoding,
:mod:`models.early_fusion`) are not feature fusions and live elsewhere.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from configkit import Int, config_dataclass, validate
from models.denoiser import pointwise

#: Per-neighbour cues, in this order, each scaled to about [0, 1] by :data:`CUE_SCALES`.
CUE_NAMES = ("age_s", "stale", "pose_sigma")
NUM_CUES = len(CUE_NAMES)
#: Divisors: 0.5 s is the channel presets' maximum message age, 0.6 the largest pose-error level.
CUE_SCALES = (0.5, 1.0, 0.6)


def cue_vector(age_s: float = 0.0, stale: bool = False, pose_sigma: float = 0.0) -> list[float]:
    """One neighbour's cues, scaled (see :data:`CUE_NAMES`)."""
    raw = (float(age_s), float(stale), float(pose_sigma))
    return [value / scale for value, scale in zip(raw, CUE_SCALES, strict=True)]


class FusionStrategy(nn.Module):
    """Base class: checks and normalises shapes, then calls :meth:`combine`."""

    name: ClassVar[str] = ""
    #: The dataclass of this strategy's hyperparameters (``fusion_options``); None: it has none.
    Options: ClassVar[type | None] = None

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"fusion: channels must be >= 1, got {channels}")
        self.channels = channels

    def forward(
        self,
        ego: torch.Tensor,
        neighbours: torch.Tensor,
        masks: torch.Tensor,
        cues: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The fused map ``(B, C, H, W)`` (shapes as :meth:`scored`)."""
        return self.scored(ego, neighbours, masks, cues)[0]

    def scored(
        self,
        ego: torch.Tensor,
        neighbours: torch.Tensor,
        masks: torch.Tensor,
        cues: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fused map and the per-neighbour reliability logits ``(B, K)`` the strategy
        computed on the way (None when it scores none), for a training target."""
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
        if cues is None:
            cues = ego4.new_zeros(b, k, NUM_CUES)
        if tuple(cues.shape) != (b, k, NUM_CUES):
            raise ValueError(
                f"fusion[{self.name}]: cues must be ({b}, {k}, {NUM_CUES}), got {tuple(cues.shape)}"
            )
        return self.combine_scored(ego4, neighbours, masks.to(ego4.dtype), cues.to(ego4))

    def combine_scored(
        self, ego: torch.Tensor, neighbours: torch.Tensor, masks: torch.Tensor, cues: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`combine` and the reliability logits (a strategy that scores overrides it)."""
        return self.combine(ego, neighbours, masks, cues), None

    def combine(
        self, ego: torch.Tensor, neighbours: torch.Tensor, masks: torch.Tensor, cues: torch.Tensor
    ) -> torch.Tensor:
        """``ego`` ``(B, C, H, W)``, ``neighbours`` ``(B, K, C, H, W)``, float ``masks``,
        ``cues`` ``(B, K, NUM_CUES)``."""
        raise NotImplementedError


class NoFusion(FusionStrategy):
    """Ego only: neighbours are ignored (the single-agent baseline)."""

    name = "none"

    def combine(
        self, ego: torch.Tensor, neighbours: torch.Tensor, masks: torch.Tensor, cues: torch.Tensor
    ) -> torch.Tensor:
        return ego


class MaxFusion(FusionStrategy):
    """F-Cooper: element-wise max over the ego and the neighbours valid at each cell."""

    name = "max"

    def combine(
        self, ego: torch.Tensor, neighbours: torch.Tensor, masks: torch.Tensor, cues: torch.Tensor
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
        self, ego: torch.Tensor, neighbours: torch.Tensor, masks: torch.Tensor, cues: torch.Tensor
    ) -> torch.Tensor:
        ego_valid = torch.ones_like(ego[:, :1]).unsqueeze(1)  # (B, 1, 1, H, W)
        valid = torch.cat([ego_valid, masks], dim=1) > 0.5
        # Masked neighbours are zeroed, not just down-weighted, so garbage there cannot leak.
        agents = torch.cat([ego.unsqueeze(1), neighbours], dim=1).where(valid, 0.0)
        scores = (ego.unsqueeze(1) * agents).sum(dim=2, keepdim=True) / math.sqrt(self.channels)
        weights = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=1)
        return (weights * agents).sum(dim=1)


@config_dataclass
class AGFOptions:
    """AGF's hyperparameters: ``key_channels`` of the attention's query/key projections,
    ``hidden`` width and ``kernel`` size of the gate's first convolution, ``reliability``
    channels of the per-neighbour reliability score (0: off)."""

    key_channels: Int = Field(16, ge=1)
    hidden: Int = Field(32, ge=1)
    kernel: Int = Field(3, ge=1, description="odd")
    # Channels of the per-neighbour reliability descriptor (:class:`NeighbourReliability`);
    # 0 = none (the module of earlier agf.pt / diffkd.pt files, which load unchanged).
    reliability: Int = Field(0, ge=0)

    def __post_init__(self) -> None:
        if self.kernel % 2 == 0:
            raise ValueError(f"fusion[agf]: kernel must be odd, got {self.kernel}")


class NeighbourReliability(nn.Module):
    """One reliability logit per neighbour ``(B, K)`` from what its whole map looks like.

    The gate's 3 x 3 window cannot tell fog backscatter or crosstalk clutter from a car, but
    the map as a whole can (the refiner's noise adapter reads the same corruptions from
    occupancy): a 1 x 1 projection to ``channels`` descriptors, pooled (mean and max) over
    the cells where the neighbour is valid, beside the ego's descriptors pooled over the same
    cells and the message cues, goes through a small MLP. Its last layer starts at zero, so a
    new score is 0 for every neighbour and the fusion is unchanged until training moves it.
    """

    def __init__(self, in_channels: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(in_channels, channels, 1)
        self.mlp = nn.Sequential(
            nn.Linear(4 * channels + NUM_CUES, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(
        self, ego: torch.Tensor, nbrs: torch.Tensor, valid: torch.Tensor, cues: torch.Tensor
    ) -> torch.Tensor:
        """``ego`` ``(B, C, H, W)``, zeroed ``nbrs`` ``(B, K, C, H, W)``, bool ``valid``
        ``(B, K, 1, H, W)``, ``cues`` ``(B, K, NUM_CUES)`` -> logits ``(B, K)``; a neighbour
        with no valid cell pools to zeros (its weight is zero anyway)."""
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

        stats = torch.cat([pooled(theirs), pooled(own.expand_as(theirs)), cues], dim=2)
        return self.mlp(stats).squeeze(2)


class AdaptiveGatedFusion(FusionStrategy):
    """AGF: attention-aggregated neighbours, blended with the ego by a per-cell learnt gate.

    At each cell the valid neighbours are weighted by ``softmax(q(ego) . k(nbr) / sqrt(D) +
    w . cues)`` (a masked neighbour gets weight 0 and is zeroed first, so nothing of it leaks),
    giving ``agg``. The gate ``g = sigmoid(conv([ego, agg, weighted cues, neighbour count]))``
    reads the ego's reliability against what arrived; the output is ``g * ego + (1 - g) * agg``.
    Where no neighbour is valid the output is the ego feature exactly (``g`` is forced to 1).
    With ``reliability`` > 0 a per-neighbour score ``r`` (:class:`NeighbourReliability`) is
    added to its attention logits and, weighted like the cues, to the gate's logit (times a
    learnt factor): a fogged or badly placed neighbour can be shut out as a whole.
    """

    name = "agf"
    Options = AGFOptions

    def __init__(self, channels: int, options: AGFOptions | None = None) -> None:
        super().__init__(channels)
        opts = options or AGFOptions()
        self.options = opts
        self.query = nn.Conv2d(channels, opts.key_channels, 1)
        self.key = nn.Conv2d(channels, opts.key_channels, 1)
        self.cue_bias = nn.Linear(NUM_CUES, 1)
        gate_in = 2 * channels + NUM_CUES + 1
        self.gate = nn.Sequential(
            nn.Conv2d(gate_in, opts.hidden, opts.kernel, padding=opts.kernel // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(opts.hidden, 1, 1),
        )
        self.reliability: NeighbourReliability | None = None
        if opts.reliability:
            self.reliability = NeighbourReliability(channels, opts.reliability, opts.hidden)
            self.reliability_gate = nn.Parameter(torch.zeros(()))

    def gate_map(
        self,
        ego: torch.Tensor,
        agg: torch.Tensor,
        cue_map: torch.Tensor,
        count: torch.Tensor,
        reliability_map: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``g`` ``(B, 1, H, W)`` in (0, 1) before the no-neighbour override."""
        logit = self.gate(torch.cat([ego, agg, cue_map, count], dim=1))
        if reliability_map is not None:
            logit = logit + self.reliability_gate * reliability_map
        return torch.sigmoid(logit)

    def combine(
        self, ego: torch.Tensor, neighbours: torch.Tensor, masks: torch.Tensor, cues: torch.Tensor
    ) -> torch.Tensor:
        return self.combine_scored(ego, neighbours, masks, cues)[0]

    def combine_scored(
        self, ego: torch.Tensor, neighbours: torch.Tensor, masks: torch.Tensor, cues: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, k, c, h, w = neighbours.shape
        if k == 0:
            return ego, None
        valid = masks > 0.5  # (B, K, 1, H, W)
        any_valid = valid.any(dim=1)  # (B, 1, H, W)
        nbrs = neighbours.where(valid, 0.0)
        query = self.query(ego).unsqueeze(1)  # (B, 1, D, H, W)
        keys = self.key(nbrs.flatten(0, 1)).view(b, k, -1, h, w)
        logits = (query * keys).sum(dim=2, keepdim=True) / math.sqrt(keys.shape[2])
        logits = logits + self.cue_bias(cues).view(b, k, 1, 1, 1)
        score = None
        if self.reliability is not None:
            score = self.reliability(ego, nbrs, valid, cues).view(b, k, 1, 1, 1)
            logits = logits + score
        # Cells with no valid neighbour get uniform logits (no all -inf softmax, no NaN); their
        # weights are zeroed by the mask and their gate forced to 1 below.
        logits = logits.masked_fill(~valid, float("-inf")).where(any_valid.unsqueeze(1), 0.0)
        weights = torch.softmax(logits, dim=1) * valid
        agg = (weights * nbrs).sum(dim=1)
        cue_map = (weights * cues.view(b, k, NUM_CUES, 1, 1)).sum(dim=1)
        count = valid.sum(dim=1).to(ego.dtype)
        reliability_map = None if score is None else (weights * score).sum(dim=1)
        gate = self.gate_map(ego, agg, cue_map, count, reliability_map).where(any_valid, 1.0)
        return gate * ego + (1.0 - gate) * agg, None if score is None else score.view(b, k)


FUSION_STRATEGIES: dict[str, type[FusionStrategy]] = {
    "none": NoFusion,
    "max": MaxFusion,
    "attention": AttentionFusion,
    "agf": AdaptiveGatedFusion,
}


def fusion_options(name: str, options: dict[str, Any] | None, where: str = "fusion") -> Any:
    """``options`` checked against strategy ``name``'s ``Options`` (None when it has none);
    an unknown key or a strategy that takes no options is an error naming ``where``."""
    if name not in FUSION_STRATEGIES:
        raise ValueError(f"{where}: unknown strategy {name!r}; known {sorted(FUSION_STRATEGIES)}")
    cls = FUSION_STRATEGIES[name].Options
    options = dict(options or {})
    if cls is None:
        if options:
            raise ValueError(f"{where}: fusion {name!r} takes no options, got {sorted(options)}")
        return None
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown option(s) {unknown} for fusion {name!r}; known {sorted(known)}"
        )
    return validate(cls, options, where)


def build_fusion(name: str, channels: int, options: dict[str, Any] | None = None) -> FusionStrategy:
    """The strategy registered as ``name`` for ``channels``-wide BEV features, with its
    ``options`` (the model config's ``fusion_options``)."""
    parsed = fusion_options(name, options)
    cls = FUSION_STRATEGIES[name]
    return cls(channels) if parsed is None else cls(channels, parsed)  # type: ignore[call-arg]
