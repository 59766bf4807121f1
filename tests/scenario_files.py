"""Small scenario YAMLs for tests: the built-in intersection with fewer vehicles and beams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from scenarios.scenario_file import BUILTIN_DIR


def write_scenario(
    path: Path,
    *,
    name: str = "tiny",
    duration_s: float = 1.0,
    channels: int = 8,
    points_per_second: int = 16_000,
    traffic: dict[str, Any] | None = None,
) -> Path:
    """Write the built-in intersection with a sparser LiDAR, ``duration_s`` long, to ``path``.

    ``traffic`` overrides keys of the scenario's ``traffic`` section (vehicles, parked, ...).
    """
    data = yaml.safe_load((BUILTIN_DIR / "intersection.yaml").read_text())
    data["name"] = name
    data["duration_s"] = duration_s
    data["lidar"].update(channels=channels, points_per_second=points_per_second)
    data["traffic"].update(traffic or {})
    path.write_text(yaml.safe_dump(data))
    return path


TINY_TRAFFIC = {"vehicles": 10, "parked": 2, "connected": 3}
