"""Channel presets: YAML files in ``channel/presets/``, loaded with importlib.resources.

=========  ======  ===============================  ======  ===================  ========
preset     Mbps    latency                          range   loss                 max age
=========  ======  ===============================  ======  ===================  ========
ideal      inf     0                                inf     none                 none
dsrc       6       20 ms + U[0, 80 ms]              300 m   1% Bernoulli         0.5 s
cv2x       20      10 ms + lognormal(median 10 ms)  450 m   1% Bernoulli         0.5 s
congested  3       50 ms + Exp(mean 50 ms)          200 m   10% Bernoulli        0.3 s
bursty     12      20 ms + U[0, 80 ms]              300 m   GE, 15.8%, 4-msg     0.5 s
=========  ======  ===============================  ======  ===================  ========

dsrc: IEEE 802.11p rates 3-27 Mbps in 10 MHz (6 Mbps default), 20-100 ms end to end, a few
hundred metres of reliable range. cv2x: 3GPP Rel-14 LTE-V2X PC5 sidelink; TR 22.885 allows
100 ms, typical tens of ms. dsrc, cv2x and congested also have a logistic reception fall-off
near the range limit (see the YAML). Range, loss and the congested and bursty numbers are
engineering choices, explained in each YAML file. Every preset has zero pose error; sweep it
with ``config.with_pose_error(PoseErrorConfig.level(sigma))``.

The ``medium`` section (:class:`~channel.medium.MediumConfig`) shares the air between senders
in carrier-sense range: 802.11p EDCA numbers (slot 13 us, SIFS 32 us, AIFS 110 us, CW 15,
40 us PHY preamble + 36 B MAC header per 1,500 B frame) for dsrc, congested and bursty; a
sensing-based SPS stand-in for cv2x (1 ms subframes, a 20-subframe selection window, 2,500 B
transport blocks). With the medium modelling access and air time, ``latency`` stands for stack
and processing delay after the last bit; its numbers are kept as the sources give them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from importlib import resources
from typing import Annotated, Any

import yaml
from pydantic import Field

from channel.broadcast import BroadcastChannel
from channel.delivery import DeliveryQueue
from channel.links import (
    Bandwidth,
    LatencyConfig,
    LinkConfig,
    LinkModel,
    LossConfig,
    RangeConfig,
)
from channel.medium import MediumConfig
from channel.pose_error import PoseErrorConfig, PoseErrorModel
from configkit import Float, Section, Str, config_dataclass, validate

#: Seconds a receiver keeps a message; None: messages never expire.
MaxAge = Annotated[Float, Field(ge=0.0)]


@config_dataclass
class ChannelFile:
    """A channel as a preset file writes it: the link's sections at the top level, beside the
    medium, the receivers' maximum age and the pose error (what :class:`ChannelConfig` holds)."""

    description: Str = ""
    range: Section[RangeConfig] = field(default_factory=RangeConfig)
    loss: Section[LossConfig] = field(default_factory=LossConfig)
    latency: Section[LatencyConfig] = field(default_factory=LatencyConfig)
    bandwidth_mbps: Bandwidth | None = None
    medium: Section[MediumConfig] = field(default_factory=MediumConfig)
    max_age_s: MaxAge | None = None
    pose_error: Section[PoseErrorConfig] = field(default_factory=PoseErrorConfig)


@config_dataclass
class ChannelConfig:
    """The whole channel: link behaviour, the shared medium, the receivers' maximum age, and
    pose error."""

    link: LinkConfig = field(default_factory=LinkConfig)
    max_age_s: MaxAge | None = None
    pose_error: PoseErrorConfig = field(default_factory=PoseErrorConfig)
    description: Str = ""
    medium: MediumConfig = field(default_factory=MediumConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "channel") -> ChannelConfig:
        """Build from a mapping with keys ``description``, ``range``, ``loss``, ``latency``,
        ``bandwidth_mbps``, ``medium``, ``max_age_s`` and ``pose_error``; unknown keys raise
        naming them."""
        parsed = validate(ChannelFile, {} if data is None else data, where)
        link = LinkConfig(parsed.range, parsed.loss, parsed.latency, parsed.bandwidth_mbps)
        return cls(link, parsed.max_age_s, parsed.pose_error, parsed.description, parsed.medium)

    def with_pose_error(self, pose_error: PoseErrorConfig) -> ChannelConfig:
        """A copy with another pose error (e.g. ``PoseErrorConfig.level(0.4)``)."""
        return dataclasses.replace(self, pose_error=pose_error)

    def make_queue(self, seed: int = 0) -> DeliveryQueue:
        """A fresh point-to-point :class:`DeliveryQueue` (every link its own bandwidth and
        queue; no shared medium) with this link behaviour and maximum age."""
        return DeliveryQueue(LinkModel(self.link, seed), self.max_age_s)

    def make_channel(self, seed: int = 0) -> BroadcastChannel:
        """A fresh :class:`BroadcastChannel`: one shared medium, one transmission per sender,
        a reception per listener (what ``cosim run`` uses)."""
        return BroadcastChannel(LinkModel(self.link, seed), self.medium, self.max_age_s, seed)

    def make_pose_model(self, seed: int = 0) -> PoseErrorModel:
        """A fresh per-sender :class:`PoseErrorModel` with this pose error."""
        return PoseErrorModel(self.pose_error, seed)


def list_presets() -> list[str]:
    """Names of the shipped presets, sorted."""
    folder = resources.files("channel") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> ChannelConfig:
    """Load and validate ``channel/presets/<name>.yaml``."""
    names = list_presets()
    if name not in names:
        raise ValueError(f"unknown channel preset {name!r}; presets are {names}")
    text = (resources.files("channel") / "presets" / f"{name}.yaml").read_text(encoding="utf-8")
    return ChannelConfig.from_dict(yaml.safe_load(text), where=f"preset {name}")


__all__ = ["ChannelConfig", "ChannelFile", "list_presets", "load_preset"]
