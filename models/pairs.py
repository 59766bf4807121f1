"""Diff-KD training pairs: the same cooperative sample clean (teacher) and corrupted (student).

Each training sample draws, from a generator seeded by ``(seed, epoch, index)``, whether it is
corrupted (``clean_fraction`` stay clean), which of the seven sensor corruptions and at which
severity (at most the curriculum's ``max_severity`` for the epoch: "progressive" training leads
the student from easy to hard), which agents carry it (RCP-Bench: every agent, the ego only, the
neighbours only, or one of those at random) and a pose-error level per neighbour (Gaussian on
x, y and yaw, OpenCOOD / CoAlign levels, reported to the ego as an AGF cue). The student sample
keeps the clean one as ``sample.clean``: uncorrupted points and true transforms, which the
teacher encodes. Numpy only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from configkit import Float, config_dataclass, validate
from models.batch import CooperativeSample
from scenarios.corruptions import CORRUPTION_NAMES, SEVERITIES, CorruptionContext, corrupt
from scenarios.frame import Frame
from scenarios.lidar_config import LidarConfig

#: Who carries the corruption: RCP-Bench's global / ego / CAV interference, or one at random.
Target = Literal["all", "ego", "neighbours", "random"]
TARGETS: tuple[str, ...] = Target.__args__
CorruptionName = Literal[CORRUPTION_NAMES]  # type: ignore[valid-type]
Severity = Literal[SEVERITIES]  # type: ignore[valid-type]

#: The sensor context of an agent (its LiDAR, speed, yaw rate) by agent id.
ContextOf = Callable[[int], CorruptionContext]


@config_dataclass
class PairConfig:
    """How a training sample is corrupted (the ``corrupt`` section of a training config)."""

    corruptions: tuple[CorruptionName, ...] = Field(CORRUPTION_NAMES, min_length=1)
    severities: tuple[Severity, ...] = Field(SEVERITIES, min_length=1)
    clean_fraction: Float = Field(0.25, ge=0.0, le=1.0)
    target: Target = "all"
    # m and degrees (the OpenCOOD levels)
    pose_error_levels: tuple[Annotated[Float, Field(ge=0.0, le=2.0)], ...] = Field(
        (0.0, 0.2, 0.4), min_length=1
    )
    # max severity in epoch 1, 2, ...; the last repeats
    curriculum: tuple[Severity, ...] = Field((1, 2, 3), min_length=1)

    @property
    def progressive(self) -> bool:
        """True when the curriculum raises the severity over epochs."""
        return len(set(self.curriculum)) > 1

    def max_severity(self, epoch: int) -> int:
        """The curriculum's cap for ``epoch`` (1-based); the last entry holds afterwards."""
        return self.curriculum[min(max(epoch, 1), len(self.curriculum)) - 1]

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "corrupt") -> PairConfig:
        """From a config section; unknown keys and bad values name ``where``."""
        return validate(cls, data, where)


def cleanliness(severity: int) -> float:
    """The noise adapter's target for a sample at ``severity`` (0 clean): 1, 0.75, 0.5, 0.25."""
    return 1.0 - severity / (max(SEVERITIES) + 1)


def perturb_transform(
    transform: NDArray[np.float64], sigma: float, rng: np.random.Generator
) -> NDArray[np.float64]:
    """A neighbour->ego transform as the neighbour's noisy reported pose makes it: a planar
    error of ``sigma`` m on x, y and ``sigma`` degrees on yaw in the neighbour's frame."""
    dx, dy = rng.normal(0.0, sigma, 2) if sigma > 0 else (0.0, 0.0)
    dyaw = math.radians(float(rng.normal(0.0, sigma))) if sigma > 0 else 0.0
    error = np.eye(4)
    c, s = math.cos(dyaw), math.sin(dyaw)
    error[:2, :2] = [[c, -s], [s, c]]
    error[:2, 3] = (dx, dy)
    return transform @ error


def make_pair(
    sample: CooperativeSample,
    config: PairConfig,
    max_severity: int,
    rng: np.random.Generator,
    context_of: ContextOf,
) -> CooperativeSample:
    """The student's view of clean ``sample`` (see the module docstring); ``sample`` becomes
    its ``clean`` field; the student's ``corruption`` / ``severity`` are those of the *ego's*
    points (what the refiner repairs). The draws are taken in a fixed order, whatever is
    enabled."""
    clean_draw = rng.random()
    name = config.corruptions[int(rng.integers(len(config.corruptions)))]
    allowed = [s for s in config.severities if s <= max_severity] or [min(config.severities)]
    severity = int(allowed[int(rng.integers(len(allowed)))])
    target = config.target if config.target != "random" else TARGETS[int(rng.integers(3))]
    corrupt_seed = int(rng.integers(2**31))
    levels = config.pose_error_levels
    sigmas = np.array(
        [levels[int(rng.integers(len(levels)))] for _ in sample.neighbour_ids], dtype=np.float32
    )
    transforms = (
        np.stack(
            [
                perturb_transform(t, float(s), rng)
                for t, s in zip(sample.neighbour_to_ego, sigmas, strict=True)
            ]
        )
        if sample.num_neighbours
        else np.zeros((0, 4, 4))
    )
    if clean_draw < config.clean_fraction:
        name, severity = "none", 0

    def hit(agent_id: int, points: NDArray[np.float32], hits: bool) -> NDArray[np.float32]:
        if severity == 0 or not hits:
            return points
        seq = np.random.SeedSequence(corrupt_seed, spawn_key=(agent_id % (2**31),))
        return corrupt(points, name, severity, np.random.default_rng(seq), context_of(agent_id))

    ego_hit = target in ("all", "ego") and severity > 0
    neighbours_hit = target in ("all", "neighbours") and severity > 0
    return dataclasses.replace(
        sample,
        ego_points=hit(sample.ego_id, sample.ego_points, ego_hit),
        neighbour_points=tuple(
            hit(a, p, neighbours_hit)
            for a, p in zip(sample.neighbour_ids, sample.neighbour_points, strict=True)
        ),
        neighbour_to_ego=transforms,
        neighbour_pose_sigma=sigmas,
        neighbour_severity=np.full(sample.num_neighbours, severity if neighbours_hit else 0),
        corruption=name if ego_hit else "none",
        severity=severity if ego_hit else 0,
        clean=sample,
    )


@dataclass(frozen=True)
class PairMaker:
    """The dataset hook: ``maker(sample, frame, rng, epoch)`` -> the student's sample, with the
    epoch's curriculum cap, each agent's LiDAR (``lidars`` by the sample's source, else the
    default) and speed from the stored frame (yaw rate 0: one frame has no history)."""

    config: PairConfig
    lidars: dict[str, LidarConfig] = dataclasses.field(default_factory=dict)

    def __call__(
        self, sample: CooperativeSample, frame: Frame, rng: np.random.Generator, epoch: int
    ) -> CooperativeSample:
        lidar = self.lidars.get(sample.source, LidarConfig())

        def context_of(agent_id: int) -> CorruptionContext:
            return CorruptionContext(lidar=lidar, speed_mps=float(frame.agent(agent_id).speed))

        return make_pair(sample, self.config, self.config.max_severity(epoch), rng, context_of)
