"""LiDAR sensor corruptions at severities 1-3: the ``corrupt`` entry point, registry, table.

``corrupt(points, name, severity, seed, context)`` applies one of the seven physically
motivated corruptions (Robo3D lineage) to an agent's float32 ``(N, 4)`` sensor-frame points.
Conventions, the same for all seven:

- severity 0 is the clean cloud (a copy); 1, 2, 3 are light, moderate, heavy; anything else
  is a ``ValueError`` naming it, as is an unknown corruption name;
- the output is float32 ``(M, 4)``, finite, intensity in [0, 1], in the input's sensor frame;
  kept points keep their order and added points come last;
- empty input returns an empty ``(0, 4)`` cloud: with no rays there is nothing to scatter
  along, so even fog adds no backscatter;
- the same seed (or an equally seeded Generator) gives the same output.

``CORRUPTION_TABLE`` holds each model and its parameters per severity; ``render_table()``
writes it as the markdown table used in docs/method.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scenarios.corruption_models import (
    BeamMissingParams,
    CorruptionContext,
    CrosstalkParams,
    EmiParams,
    FogParams,
    IncompleteEchoParams,
    MotionBlurParams,
    WetGroundParams,
    beam_missing,
    crosstalk,
    emi,
    fog,
    incomplete_echo,
    motion_blur,
    wet_ground,
)

__all__ = [
    "CORRUPTIONS",
    "CORRUPTION_NAMES",
    "CORRUPTION_TABLE",
    "SEVERITIES",
    "CorruptionContext",
    "CorruptionSpec",
    "corrupt",
    "render_table",
]

SEVERITIES: tuple[int, ...] = (1, 2, 3)

CorruptionFn = Callable[
    [NDArray[np.float32], Any, np.random.Generator, CorruptionContext], NDArray[np.float32]
]


@dataclass(frozen=True)
class CorruptionSpec:
    """One corruption: its physical model in a line and its parameters at severities 1, 2, 3."""

    model: str
    levels: tuple[Any, Any, Any]

    def at(self, severity: int) -> Any:
        """The parameter dataclass for severity 1, 2 or 3."""
        return self.levels[severity - 1]

    def rows(self) -> list[tuple[str, tuple[Any, ...]]]:
        """(label, values at severities 1-3) for each parameter, in declaration order."""
        return [
            (f.metadata["label"], tuple(getattr(level, f.name) for level in self.levels))
            for f in fields(self.levels[0])
        ]


#: The registry: corruption name -> model function, in the order of the design document.
CORRUPTIONS: dict[str, CorruptionFn] = {
    "beam_missing": beam_missing,
    "motion_blur": motion_blur,
    "fog": fog,
    "crosstalk": crosstalk,
    "emi": emi,
    "wet_ground": wet_ground,
    "incomplete_echo": incomplete_echo,
}
CORRUPTION_NAMES: tuple[str, ...] = tuple(CORRUPTIONS)

CORRUPTION_TABLE: dict[str, CorruptionSpec] = {
    "beam_missing": CorruptionSpec(
        "whole laser rings lost (dead or occluded emitters)",
        (BeamMissingParams(0.25), BeamMissingParams(0.5), BeamMissingParams(0.75)),
    ),
    "motion_blur": CorruptionSpec(
        "uncompensated ego motion over the sweep (t = azimuth / 2 pi f; speed, yaw rate from "
        "context) + Gaussian jitter",
        (MotionBlurParams(0.05), MotionBlurParams(0.10), MotionBlurParams(0.20)),
    ),
    "fog": CorruptionSpec(
        "Beer-Lambert I exp(-2 alpha r), alpha = ln 20 / MOR; loss below threshold; "
        "backscatter near the sensor",
        (
            FogParams(150.0, 0.05, 0.01, 8.0),
            FogParams(80.0, 0.05, 0.02, 8.0),
            FogParams(40.0, 0.05, 0.04, 8.0),
        ),
    ),
    "crosstalk": CorruptionSpec(
        "another LiDAR's pulses: extra returns at uniform random ranges on existing rays",
        (CrosstalkParams(0.02, 0.2), CrosstalkParams(0.05, 0.2), CrosstalkParams(0.10, 0.2)),
    ),
    "emi": CorruptionSpec(
        "interference garbles azimuth sectors of some rings: random range or lost",
        (EmiParams(0.1, 30.0, 0.5), EmiParams(0.2, 60.0, 0.5), EmiParams(0.3, 90.0, 0.5)),
    ),
    "wet_ground": CorruptionSpec(
        "water film: ground returns lost / dimmed, objects mirrored below ground "
        "(z' = 2 z_ground - z)",
        (
            WetGroundParams(0.2, 0.3, 0.7, 0.1, 2.0, 0.3),
            WetGroundParams(0.2, 0.5, 0.5, 0.2, 2.0, 0.3),
            WetGroundParams(0.2, 0.7, 0.3, 0.3, 2.0, 0.3),
        ),
    ),
    "incomplete_echo": CorruptionSpec(
        "weak echoes from dark paint lost; strength = intensity x seeded patch albedo",
        (
            IncompleteEchoParams(0.3, 0.5, 0.1, 1.0),
            IncompleteEchoParams(0.4, 0.7, 0.1, 1.0),
            IncompleteEchoParams(0.5, 0.9, 0.1, 1.0),
        ),
    ),
}


def _format(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def render_table() -> str:
    """Markdown table: corruption | model | parameter | severity 1 | 2 | 3 (one row each)."""
    lines = [
        "| corruption | model | parameter | severity 1 | severity 2 | severity 3 |",
        "|---|---|---|---|---|---|",
    ]
    for name, spec in CORRUPTION_TABLE.items():
        rows = spec.rows()
        labels = "; ".join(label for label, _ in rows)
        per_level = ["; ".join(_format(values[i]) for _, values in rows) for i in range(3)]
        lines.append(f"| {name} | {spec.model} | {labels} | " + " | ".join(per_level) + " |")
    return "\n".join(lines)


def _check_points(points: Any) -> NDArray[np.float32]:
    p = np.asarray(points, dtype=np.float32)
    if p.ndim != 2 or p.shape[1] != 4:
        raise ValueError(f"corrupt: points must be (N, 4) x,y,z,intensity, got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("corrupt: points contain NaN or inf")
    return p


def corrupt(
    points: NDArray[np.floating],
    name: str,
    severity: int,
    rng_or_seed: int | np.random.Generator,
    context: CorruptionContext | None = None,
) -> NDArray[np.float32]:
    """Apply corruption ``name`` at ``severity`` (0 = clean copy, 1-3) to sensor-frame points.

    ``context`` defaults to ``CorruptionContext()`` (the default LidarConfig, standing still).
    Raises ValueError for an unknown name, a severity outside {0, 1, 2, 3}, or bad points.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {list(CORRUPTION_NAMES)}")
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer):
        raise ValueError(f"corruption severity must be an int in 0..3, got {severity!r}")
    if severity not in (0, *SEVERITIES):
        raise ValueError(f"corruption severity {severity!r} is not one of 0 (clean), 1, 2, 3")
    p = _check_points(points)
    if severity == 0 or p.shape[0] == 0:
        return p.copy()
    rng = (
        rng_or_seed
        if isinstance(rng_or_seed, np.random.Generator)
        else (np.random.default_rng(rng_or_seed))
    )
    ctx = CorruptionContext() if context is None else context
    out = CORRUPTIONS[name](p, CORRUPTION_TABLE[name].at(int(severity)), rng, ctx)
    return np.ascontiguousarray(out, dtype=np.float32).reshape(-1, 4)


corrupt.__doc__ = f"{corrupt.__doc__}\n    Severity table:\n\n{render_table()}\n"
