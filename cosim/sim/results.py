"""What a run returns: its tables and summary (``SimulationResult``) and the ticks kept for
pictures (``RenderItem``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from agents.steps import EgoResult
from cosim.sim.run_config import RunConfig
from scenarios.frame import Frame


@dataclass
class RenderItem:
    """What a BEV picture of one tick needs."""

    frame: Frame
    ego_id: int
    result: EgoResult | None
    gt: np.ndarray


@dataclass
class SimulationResult:
    """A run's tables (pyarrow), its summary and the ticks kept for pictures."""

    config: RunConfig
    summary: dict[str, Any]
    messages: pa.Table
    receptions: pa.Table
    detections: pa.Table
    frames: pa.Table
    timings: pa.Table
    events: list[dict[str, Any]]
    renders: list[RenderItem] = field(default_factory=list)
    transmissions: pa.Table | None = None  # one row per broadcast (channel.TX_SCHEMA)
    busy: pa.Table | None = None  # busy ratio per tick and vehicle (channel.BUSY_SCHEMA)
