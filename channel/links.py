"""Sender -> receiver link model: range, loss (Bernoulli / Gilbert-Elliott), latency, bandwidth.

Everything is evaluated once per message at its send time. Each directed link ``(sender,
receiver)`` has its own ``numpy`` Generator, derived from the model seed and the two ids, so
a link's events do not change when other links are added, and its own state: the
Gilbert-Elliott channel state and the time its transmitter is busy until.

Timing of a message of ``wire_bytes`` sent at ``t_send`` on a link::

    tx_start = max(t_send, previous tx_end on this link)       # per-link FIFO queue
    tx_end   = tx_start + 8 * wire_bytes / (bandwidth_mbps * 1e6)
    arrival  = tx_end + base_s + jitter

A message occupies its link even when it is then out of range or lost (the sender cannot
know). That timing is the point-to-point model (:class:`~channel.delivery.DeliveryQueue`, the
robustness benchmark); the simulation's shared medium (:mod:`channel.broadcast`) decides air
time itself and asks :meth:`LinkModel.receive` only for range, loss and latency. Per message
the link draws three uniforms (reception, loss, GE transition) and one jitter sample, always,
so the random stream does not depend on outcomes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from configkit import Float, Section, config_dataclass, validate

JitterKind = Literal["none", "uniform", "normal-truncated", "exponential", "lognormal"]
LossModelName = Literal["none", "bernoulli", "gilbert_elliott"]
JITTER_KINDS: tuple[str, ...] = JitterKind.__args__
LOSS_MODELS: tuple[str, ...] = LossModelName.__args__
NonNegative = Annotated[Float, Field(ge=0.0)]
Probability = Annotated[Float, Field(ge=0.0, le=1.0)]
#: Link rate in Mbps; None: serialization takes no time.
Bandwidth = Annotated[Float, Field(gt=0.0)]


@config_dataclass
class RangeConfig:
    """Hard cut-off ``max_m`` (None = unlimited) and an optional logistic reception curve
    ``p(d) = 1 / (1 + exp((d - d50_m) / width_m))`` (``d50_m`` None = always received)."""

    max_m: NonNegative | None = None
    d50_m: NonNegative | None = None
    width_m: Float = Field(10.0, gt=0.0)

    def reception_prob(self, distance_m: float) -> float:
        """Probability a message sent over ``distance_m`` (within ``max_m``) is received."""
        if self.d50_m is None:
            return 1.0
        z = (distance_m - self.d50_m) / self.width_m
        return 0.0 if z > 700 else 1.0 / (1.0 + math.exp(z))


@config_dataclass
class LossConfig:
    """Packet loss. ``bernoulli``: each message lost with ``p``. ``gilbert_elliott``: a
    good/bad Markov chain stepped once per message on the link (``p_gb`` good->bad,
    ``p_bg`` bad->good) losing with ``loss_good`` / ``loss_bad`` in each state.

    Long-run GE loss rate ``(p_gb * loss_bad + p_bg * loss_good) / (p_gb + p_bg)``; mean
    bad-state sojourn ``1 / p_bg`` messages. Links start in the good state.
    """

    model: LossModelName = "none"
    p: Probability = 0.0
    p_gb: Probability = 0.0
    p_bg: Probability = 1.0
    loss_good: Probability = 0.0
    loss_bad: Probability = 1.0

    def __post_init__(self) -> None:
        if self.model == "gilbert_elliott" and self.p_bg == 0 and self.p_gb > 0:
            raise ValueError("loss p_bg must be > 0: the bad state would be absorbing")

    def stationary_loss(self) -> float:
        """Long-run fraction of messages lost by this model (ignoring range)."""
        if self.model == "none":
            return 0.0
        if self.model == "bernoulli":
            return self.p
        if self.p_gb + self.p_bg == 0:
            return self.loss_good
        return (self.p_gb * self.loss_bad + self.p_bg * self.loss_good) / (self.p_gb + self.p_bg)


@config_dataclass
class LatencyConfig:
    """Latency after transmission: ``base_s + jitter``, jitter >= 0 with scale ``jitter_s``.

    ``uniform``: U[0, jitter_s]. ``normal-truncated``: N(0, jitter_s) truncated to >= 0
    (half-normal, mean ``jitter_s * sqrt(2/pi)``). ``exponential``: mean ``jitter_s``.
    ``lognormal``: median ``jitter_s``, log-std ``sigma``.
    """

    base_s: NonNegative = 0.0
    jitter: JitterKind = "none"
    jitter_s: NonNegative = 0.0
    sigma: NonNegative = 0.5

    def sample_jitter(self, rng: np.random.Generator) -> float:
        """One jitter draw (seconds); draws exactly one variate whatever the kind."""
        z = (
            float(rng.standard_normal())
            if self.jitter in ("normal-truncated", "lognormal")
            else float(rng.random())
        )
        if self.jitter == "none":
            return 0.0
        if self.jitter == "uniform":
            return self.jitter_s * z
        if self.jitter == "normal-truncated":
            return self.jitter_s * abs(z)
        if self.jitter == "exponential":
            return -self.jitter_s * math.log1p(-z)
        return self.jitter_s * math.exp(self.sigma * z)


@config_dataclass
class LinkConfig:
    """One link's behaviour; ``bandwidth_mbps`` None = serialization takes no time."""

    range: Section[RangeConfig] = field(default_factory=RangeConfig)
    loss: Section[LossConfig] = field(default_factory=LossConfig)
    latency: Section[LatencyConfig] = field(default_factory=LatencyConfig)
    bandwidth_mbps: Bandwidth | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "link") -> LinkConfig:
        """Build from a mapping with sections ``range``, ``loss``, ``latency`` and
        ``bandwidth_mbps``; an unknown key anywhere raises ``ValueError`` naming it."""
        return validate(cls, {} if data is None else data, where)


@dataclass(frozen=True)
class LinkOutcome:
    """What happened to one message on one link. ``arrival`` is None when it never arrives."""

    sender: int
    receiver: int
    t_send: float
    wire_bytes: int
    distance_m: float
    tx_start: float
    tx_end: float
    arrival: float | None
    dropped: str | None  # None, "out_of_range" or "lost"
    ge_bad: bool  # the Gilbert-Elliott state the message was sent in (False for other models)


@dataclass
class _LinkState:
    rng: np.random.Generator
    busy_until: float = -math.inf
    ge_bad: bool = False


def id_key(value: int) -> int:
    """Map any int id to a non-negative int for ``SeedSequence.spawn_key`` (zigzag)."""
    value = int(value)
    return 2 * value if value >= 0 else -2 * value - 1


class LinkModel:
    """All directed links of a simulation, sharing one :class:`LinkConfig` and one seed."""

    def __init__(self, config: LinkConfig | None = None, seed: int = 0) -> None:
        self.config = config or LinkConfig()
        self.seed = int(seed)
        self._links: dict[tuple[int, int], _LinkState] = {}

    def _state(self, sender: int, receiver: int) -> _LinkState:
        key = (int(sender), int(receiver))
        state = self._links.get(key)
        if state is None:
            seq = np.random.SeedSequence(self.seed, spawn_key=(0, id_key(key[0]), id_key(key[1])))
            state = _LinkState(np.random.default_rng(seq))
            self._links[key] = state
        return state

    def transmit(
        self,
        sender: int,
        receiver: int,
        t_send: float,
        wire_bytes: int,
        sender_xy: tuple[float, float] = (0.0, 0.0),
        receiver_xy: tuple[float, float] = (0.0, 0.0),
    ) -> LinkOutcome:
        """Send one message of ``wire_bytes`` at ``t_send`` between two world x, y positions."""
        cfg = self.config
        if not math.isfinite(t_send) or wire_bytes < 0:
            raise ValueError(f"bad message: t_send={t_send}, wire_bytes={wire_bytes}")
        state = self._state(sender, receiver)
        tx_start = max(float(t_send), state.busy_until)
        tx_time = (
            0.0 if cfg.bandwidth_mbps is None else 8.0 * wire_bytes / (cfg.bandwidth_mbps * 1e6)
        )
        tx_end = tx_start + tx_time
        state.busy_until = tx_end
        distance = math.hypot(receiver_xy[0] - sender_xy[0], receiver_xy[1] - sender_xy[1])
        ge_bad = state.ge_bad
        dropped, latency = self._draw(state, distance)
        arrival = None if dropped else tx_end + latency
        return LinkOutcome(
            int(sender),
            int(receiver),
            float(t_send),
            int(wire_bytes),
            distance,
            tx_start,
            tx_end,
            arrival,
            dropped,
            ge_bad,
        )

    def receive(self, sender: int, receiver: int, distance_m: float) -> tuple[str | None, float]:
        """One reception on link ``sender -> receiver`` of a message whose timing is decided
        elsewhere (the shared medium): ``(dropped, latency_s)`` with ``dropped`` None,
        ``"out_of_range"`` or ``"lost"``. The same draws as :meth:`transmit`, always taken."""
        return self._draw(self._state(sender, receiver), float(distance_m))

    def _draw(self, state: _LinkState, distance: float) -> tuple[str | None, float]:
        """Range, loss and latency of one message on a link; steps its Gilbert-Elliott state."""
        cfg = self.config
        u_rx, u_loss, u_ge = (float(u) for u in state.rng.random(3))
        jitter = cfg.latency.sample_jitter(state.rng)
        loss = cfg.loss
        if loss.model == "bernoulli":
            lost = u_loss < loss.p
        elif loss.model == "gilbert_elliott":
            lost = u_loss < (loss.loss_bad if state.ge_bad else loss.loss_good)
            state.ge_bad = (u_ge >= loss.p_bg) if state.ge_bad else (u_ge < loss.p_gb)
        else:
            lost = False
        dropped: str | None = None
        if cfg.range.max_m is not None and distance > cfg.range.max_m:
            dropped = "out_of_range"
        elif u_rx >= cfg.range.reception_prob(distance) or lost:
            dropped = "lost"
        return dropped, cfg.latency.base_s + jitter
