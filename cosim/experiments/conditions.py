"""The robustness benchmark's conditions: which faults at which levels (``Condition``,
``build_conditions``), and the loss model a loss condition stands for."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from channel.links import LossConfig
from channel.pose_error import POSE_ERROR_LEVELS
from scenarios.corruptions import CORRUPTION_NAMES, SEVERITIES

KINDS = ("clean", "sensor", "pose", "latency", "loss")
#: Who carries a sensor corruption: every agent, the ego only, the neighbours only (RCP-Bench's
#: global, ego and CAV interference).
CORRUPT_TARGETS = ("all", "ego", "neighbours")
GROUPS = {
    "sensor": ("sensor",),
    "comm": ("pose", "latency", "loss"),
    "pose": ("pose",),
    "latency": ("latency",),
    "loss": ("loss",),
}
LATENCY_MS: tuple[int, ...] = (0, 100, 200)
LOSS_RATES: tuple[float, ...] = (0.1, 0.3)
LOSS_MODELS = ("bernoulli", "gilbert_elliott")
#: Mean Gilbert-Elliott burst (bad-state sojourn) in messages: p_bg = 1 / BURST_MESSAGES.
BURST_MESSAGES = 4.0


@dataclass(frozen=True)
class Condition:
    """One fault at one level: ``kind`` (see :data:`KINDS`), ``name`` (corruption, ``sigma``,
    ``latency``, ``none`` / ``bernoulli`` / ``gilbert_elliott``) and ``level`` (severity, pose
    sigma, milliseconds, or loss fraction)."""

    kind: str
    name: str
    level: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"condition kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "sensor" and (
            self.name not in CORRUPTION_NAMES or self.level not in SEVERITIES
        ):
            raise ValueError(f"sensor condition needs a corruption and severity 1-3: {self}")
        if self.kind == "loss" and not (
            self.name in ("none", *LOSS_MODELS) and 0.0 <= self.level <= 1.0
        ):
            raise ValueError(f"loss condition needs a model and a rate in [0, 1]: {self}")
        if self.kind == "loss" and self.name == "gilbert_elliott" and self.level >= 1.0:
            raise ValueError("gilbert_elliott loss rate must be < 1 (the bad state absorbs)")
        if self.kind in ("pose", "latency") and not self.level >= 0:
            raise ValueError(f"{self.kind} level must be >= 0, got {self.level}")

    @property
    def label(self) -> str:
        """Short unique name: ``clean``, ``fog/2``, ``pose/0.2``, ``latency/100ms``,
        ``bernoulli/10%``."""
        if self.kind == "clean":
            return "clean"
        if self.kind == "sensor":
            return f"{self.name}/{int(self.level)}"
        if self.kind == "pose":
            return f"pose/{self.level:g}"
        if self.kind == "latency":
            return f"latency/{self.level:g}ms"
        return f"{self.name}/{100 * self.level:g}%"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Condition:
        return cls(str(data["kind"]), str(data["name"]), float(data["level"]))


CLEAN = Condition("clean", "clean", 0.0)


def build_conditions(
    groups: tuple[str, ...] = ("sensor", "comm"), severities: tuple[int, ...] = SEVERITIES
) -> list[Condition]:
    """The benchmark's conditions, clean first: sensor = 7 corruptions x 3 severities (21; only
    ``severities`` of them when given, e.g. ``(2,)`` for the seven an mRCE at severity 2 needs),
    pose = sigma 0 / 0.2 / 0.4 / 0.6 (4), latency = 0 / 100 / 200 ms (3), loss = none 0 %,
    Bernoulli and Gilbert-Elliott at 10 % and 30 % (5). 34 in all with both groups."""
    unknown = sorted(set(severities) - set(SEVERITIES))
    if unknown or not severities:
        raise ValueError(f"severities must be among {list(SEVERITIES)}, got {list(severities)}")
    kinds: list[str] = []
    for group in groups:
        if group not in GROUPS:
            raise ValueError(f"unknown condition group {group!r}; known: {list(GROUPS)}")
        kinds += [k for k in GROUPS[group] if k not in kinds]
    out = [CLEAN]
    if "sensor" in kinds:
        out += [
            Condition("sensor", n, float(s))
            for n in CORRUPTION_NAMES
            for s in SEVERITIES
            if s in severities
        ]
    if "pose" in kinds:
        out += [Condition("pose", "sigma", float(s)) for s in POSE_ERROR_LEVELS]
    if "latency" in kinds:
        out += [Condition("latency", "latency", float(ms)) for ms in LATENCY_MS]
    if "loss" in kinds:
        out.append(Condition("loss", "none", 0.0))
        out += [Condition("loss", m, p) for m in LOSS_MODELS for p in LOSS_RATES]
    return out


def loss_config(condition: Condition) -> LossConfig:
    """The channel loss model of a ``loss`` condition (GE: good state lossless, bad state
    loses everything, p_bg = 1 / BURST_MESSAGES, p_gb set so the mean loss is ``level``)."""
    p = condition.level
    if condition.name == "none" or p == 0.0:
        return LossConfig()
    if condition.name == "bernoulli":
        return LossConfig(model="bernoulli", p=p)
    p_bg = 1.0 / BURST_MESSAGES
    return LossConfig(
        model="gilbert_elliott", p_gb=p * p_bg / (1.0 - p), p_bg=p_bg, loss_good=0.0, loss_bad=1.0
    )
