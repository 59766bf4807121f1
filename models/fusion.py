"""Intermediate (feature) fusion strategies, one call signature, an explicit registry.

Every strategy is an ``nn.Module`` built with the BEV channel count and called as::

    fuse(ego, neighbours, masks) -> (B, C, H, W)

``ego`` ``(C, H, W)`` or ``(B, C, H, W)`` is the ego's own (possibly refined) feature;
``neighbours`` ``(B, K, C, H, W)`` are the neighbours' features already warped into the ego grid
(:mod:`models.warp`); ``masks`` ``(B, K, 1, H, W)`` are 1 where neighbour k has data for that
cell (inside its warped grid and its message arrived) and 0 elsewhere — a neighbour whose
message was lost is simply an all-zero mask, and ``K`` may be 0. The ego is always valid.

``cues`` ``(B, K, NUM_CUES)`` (optional, zeros when absent) are what the ego knows about each
neighbour's message besides its map (:data:`models.cues.CUE_NAMES`: its age, whether it was
warped with a stale pose, the sender's reported pose-noise level), and ``profiles``
``(B, K, PROFILE_SIZE)`` (optional, zeros when absent) each neighbour's own occupancy by range
band (:func:`models.cues.occupancy_profile`); only :class:`AdaptiveGatedFusion` reads them.
Strategies take their hyperparameters from the model config (``fusion_options``), checked
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

from configkit import Bool, Int, config_dataclass, validate
from models.cues import NUM_CUES, PROFILE_SIZE
from models.denoiser import pointwise
from models.reliability import NeighbourReliability


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
        # While True a strategy that scores its neighbours ignores the scores: every neighbour
        # trusted alike, none dropped (models.harm measures what each one adds that way).
        self.neutral_trust = False

    def forward(
        self,
        ego: torch.Tensor,
        neighbours: torch.Tensor,
        masks: torch.Tensor,
        cues: torch.Tensor | None = None,
        profiles: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The fused map ``(B, C, H, W)`` (shapes as :meth:`scored`)."""
        return self.scored(ego, neighbours, masks, cues, profiles)[0]

    def scored(
        self,
        ego: torch.Tensor,
        neighbours: torch.Tensor,
        masks: torch.Tensor,
        cues: torch.Tensor | None = None,
        profiles: torch.Tensor | None = None,
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
        if profiles is None:
            profiles = ego4.new_zeros(b, k, PROFILE_SIZE)
        if tuple(profiles.shape) != (b, k, PROFILE_SIZE):
            raise ValueError(
                f"fusion[{self.name}]: profiles must be ({b}, {k}, {PROFILE_SIZE}), "
                f"got {tuple(profiles.shape)}"
            )
        return self.combine_scored(
            ego4, neighbours, masks.to(ego4.dtype), cues.to(ego4), profiles.to(ego4)
        )

    @property
    def reads_profiles(self) -> bool:
        """Whether :meth:`scored` reads ``profiles`` (the caller may skip computing them)."""
        return False

    def combine_scored(
        self,
        ego: torch.Tensor,
        neighbours: torch.Tensor,
        masks: torch.Tensor,
        cues: torch.Tensor,
        profiles: torch.Tensor,
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
    channels of the per-neighbour reliability score (0: off). The defaults of the three newer
    options build the module of earlier agf.pt / diffkd.pt files, which load unchanged."""

    key_channels: Int = Field(16, ge=1)
    hidden: Int = Field(32, ge=1)
    kernel: Int = Field(3, ge=1, description="odd")
    # Channels of the per-neighbour reliability descriptor (models.reliability).
    reliability: Int = Field(0, ge=0)
    # The score also reads each neighbour's occupancy profile by range band (models.cues).
    profile: Bool = False
    # The score scales the neighbours' share of the blend: 1 - g becomes (1 - g) * rho, rho the
    # attention-weighted sigmoid of the scores, so a distrusted neighbour leaves the ego as is.
    shut_out: Bool = False
    # A 1 x 1 projection of the gate input to this many channels before its k x k convolution
    # (0: none). 16 cuts the gate's multiply-adds per cell from 19.6 k to 3.4 k on the CPU preset.
    gate_reduce: Int = Field(0, ge=0)
    # A neighbour whose trust sigmoid(r) is below this is dropped (as if its message were lost;
    # 0: never), with or without shut_out. Half-trusting a fogged neighbour keeps nearly all of
    # its harm; without shut_out a trusted neighbour is fused exactly as it would be without it.
    drop_below: float = Field(0.0, ge=0.0, lt=1.0)

    def __post_init__(self) -> None:
        if self.kernel % 2 == 0:
            raise ValueError(f"fusion[agf]: kernel must be odd, got {self.kernel}")
        if (self.profile or self.shut_out) and not self.reliability:
            raise ValueError("fusion[agf]: profile and shut_out need a reliability score (> 0)")
        if self.drop_below and not self.reliability:
            raise ValueError("fusion[agf]: drop_below needs a reliability score (> 0)")


class AdaptiveGatedFusion(FusionStrategy):
    """AGF: attention-aggregated neighbours, blended with the ego by a per-cell learnt gate.

    At each cell the valid neighbours are weighted by ``softmax(q(ego) . k(nbr) / sqrt(D) +
    w . cues)`` (a masked neighbour gets weight 0 and is zeroed first, so nothing of it leaks),
    giving ``agg``. The gate ``g = sigmoid(conv([ego, agg, weighted cues, neighbour count]))``
    reads the ego's reliability against what arrived; the output is ``g * ego + (1 - g) * agg``.
    Where no neighbour is valid the output is the ego feature exactly (``g`` is forced to 1).
    With ``reliability`` > 0 a per-neighbour score ``r`` (:class:`NeighbourReliability`) is
    added to its attention logits and either (``shut_out``) scales the neighbours' share by
    ``rho = sum_k weight_k sigmoid(r_k)``, or, weighted like the cues, enters the gate's logit
    times a learnt factor: a fogged or badly placed neighbour can be shut out as a whole.
    With ``drop_below`` a neighbour whose ``sigmoid(r)`` is below it is dropped, as if lost.
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
        reduce: list[nn.Module] = []
        if opts.gate_reduce:
            reduce, gate_in = [nn.Conv2d(gate_in, opts.gate_reduce, 1)], opts.gate_reduce
        self.gate = nn.Sequential(
            *reduce,
            nn.Conv2d(gate_in, opts.hidden, opts.kernel, padding=opts.kernel // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(opts.hidden, 1, 1),
        )
        self.reliability: NeighbourReliability | None = None
        if opts.reliability:
            self.reliability = NeighbourReliability(
                channels,
                opts.reliability,
                opts.hidden,
                profile_size=PROFILE_SIZE if opts.profile else 0,
                # A trust starts trusting (sigmoid(2) = 0.88), not halving or dropping everyone.
                bias=2.0 if opts.shut_out or opts.drop_below else 0.0,
            )
            if not opts.shut_out:
                self.reliability_gate = nn.Parameter(torch.zeros(()))

    @property
    def reads_profiles(self) -> bool:
        return self.options.profile

    def gate_map(
        self,
        ego: torch.Tensor,
        agg: torch.Tensor,
        cue_map: torch.Tensor,
        count: torch.Tensor,
        reliability_map: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``g`` ``(B, 1, H, W)`` in (0, 1) before the no-neighbour override."""
        x = torch.cat([ego, agg, cue_map, count], dim=1)
        if self.options.gate_reduce:
            x = pointwise(self.gate[0], x)
            logit = self.gate[1:](x)
        else:
            logit = self.gate(x)
        if reliability_map is not None:
            logit = logit + self.reliability_gate * reliability_map
        return torch.sigmoid(logit)

    def combine(
        self, ego: torch.Tensor, neighbours: torch.Tensor, masks: torch.Tensor, cues: torch.Tensor
    ) -> torch.Tensor:
        profiles = ego.new_zeros(*cues.shape[:2], PROFILE_SIZE)
        return self.combine_scored(ego, neighbours, masks, cues, profiles)[0]

    def combine_scored(
        self,
        ego: torch.Tensor,
        neighbours: torch.Tensor,
        masks: torch.Tensor,
        cues: torch.Tensor,
        profiles: torch.Tensor,
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
        if self.reliability is not None and not self.neutral_trust:
            score = self.reliability(ego, nbrs, valid, cues, profiles).view(b, k, 1, 1, 1)
            logits = logits + score
            if self.options.drop_below:
                valid = valid & (torch.sigmoid(score) >= self.options.drop_below)
                any_valid = valid.any(dim=1)
        # Cells with no valid neighbour get uniform logits (no all -inf softmax, no NaN); their
        # weights are zeroed by the mask and their gate forced to 1 below.
        logits = logits.masked_fill(~valid, float("-inf")).where(any_valid.unsqueeze(1), 0.0)
        weights = torch.softmax(logits, dim=1) * valid
        # One multiply-add per neighbour instead of a (B, K, C, H, W) product and its sum.
        agg = nbrs[:, 0] * weights[:, 0]
        for i in range(1, k):
            agg = agg.addcmul(nbrs[:, i], weights[:, i])
        cue_map = (weights * cues.view(b, k, NUM_CUES, 1, 1)).sum(dim=1)
        count = valid.sum(dim=1).to(ego.dtype)
        if score is not None and self.options.shut_out:
            trust = (weights * torch.sigmoid(score)).sum(dim=1)  # (B, 1, H, W)
            gate = 1.0 - (1.0 - self.gate_map(ego, agg, cue_map, count)) * trust
        else:
            reliability_map = None if score is None else (weights * score).sum(dim=1)
            gate = self.gate_map(ego, agg, cue_map, count, reliability_map)
        gate = gate.where(any_valid, 1.0)
        # lerp is exact at its ends: a gate of 1 returns the ego, 0 the neighbours, bit for bit.
        return torch.lerp(agg, ego, gate), None if score is None else score.view(b, k)


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
