"""Scenario definition files: schema, validation, loading, and the registry of built-ins.

A scenario YAML sets the map (layout + parameters), traffic, the connected vehicles, the LiDAR
(``LidarConfig`` fields), the duration and the seed. Loading checks every key against an
explicit schema; an unknown key, a missing one, a wrong type or a value out of range raises a
ValueError that names the file and the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from scenarios.lidar_config import LidarConfig
from scenarios.safe_yaml import load_yaml_file, short_repr

BUILTIN_DIR = Path(__file__).parent / "builtin"
RATE_HZ = 10.0

#: The built-in scenarios, ``name -> one-line description``; each lives in builtin/<name>.yaml.
BUILTIN_SCENARIOS: dict[str, str] = {
    "intersection": "Urban 4-way signalised intersection; corner buildings hide cross traffic "
    "from each approach (the default).",
    "highway": "Straight 3+3-lane divided highway with many trucks, noise barriers aside.",
    "t_junction": "Urban T-junction closed by a building row; traffic turns in from a side road.",
}
DEFAULT_SCENARIO = "intersection"


@dataclass(frozen=True)
class Key:
    """One schema entry: accepted type(s), whether required, default, bounds, choices."""

    kind: type | tuple[type, ...]
    required: bool = True
    default: Any = None
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()


_JUNCTION = {
    "arm_length": Key(float, False, 150.0, 60.0, 500.0),
    "lanes_per_direction": Key(int, False, 1, 1, 3),
    "lane_width": Key(float, False, 3.5, 2.8, 4.5),
    "speed_limit": Key(float, False, 13.9, 3.0, 40.0),
    "building_height_min": Key(float, False, 8.0, 2.0, 100.0),
    "building_height_max": Key(float, False, 30.0, 2.0, 200.0),
    "signal_green": Key(float, False, 8.0, 3.0, 120.0),
    "signal_clearance": Key(float, False, 2.0, 0.0, 30.0),
}
_HIGHWAY = {
    "length": Key(float, False, 1200.0, 300.0, 5000.0),
    "lanes_per_direction": Key(int, False, 3, 1, 5),
    "lane_width": Key(float, False, 3.75, 2.8, 4.5),
    "median_width": Key(float, False, 3.0, 0.5, 30.0),
    "speed_limit": Key(float, False, 27.0, 10.0, 45.0),
    "building_height_min": Key(float, False, 6.0, 2.0, 100.0),
    "building_height_max": Key(float, False, 20.0, 2.0, 200.0),
}
#: Map parameters allowed for each layout (besides ``layout`` itself).
LAYOUT_SCHEMAS: dict[str, dict[str, Key]] = {
    "intersection": _JUNCTION,
    "t_junction": _JUNCTION,
    "highway": _HIGHWAY,
}
_TRAFFIC = {
    "vehicles": Key(int, True, None, 2, 200),
    "parked": Key(int, True, None, 0, 200),
    "connected": Key(int, True, None, 2, 7),
    "mix": Key(dict, False, {"car": 0.7, "van": 0.2, "truck": 0.1}),
}
_LIDAR_BOUNDS: dict[str, tuple[float, float]] = {
    "channels": (1, 128), "range": (1.0, 500.0), "upper_fov": (-90.0, 90.0),
    "lower_fov": (-90.0, 90.0), "points_per_second": (1_000, 10_000_000),
    "rotation_frequency": (1.0, 100.0), "mount_height": (0.0, 10.0), "noise_stddev": (0.0, 5.0),
    "atmosphere_attenuation_rate": (0.0, 1.0), "dropoff_general_rate": (0.0, 1.0),
    "dropoff_intensity_limit": (0.0, 1.0), "dropoff_zero_intensity": (0.0, 1.0),
}
_LIDAR = {
    f.name: Key(int if f.type in ("int", int) else float, False, f.default, *_LIDAR_BOUNDS[f.name])
    for f in fields(LidarConfig)
}
_TOP = {
    "name": Key(str),
    "description": Key(str, False, ""),
    "map": Key(dict),
    "traffic": Key(dict),
    "lidar": Key(dict),
    "duration_s": Key(float, True, None, 0.1, 3600.0),
    "seed": Key(int, True, None, 0, 2**32 - 1),
}


@dataclass(frozen=True)
class Scenario:
    """A validated scenario definition."""

    name: str
    description: str
    layout: str
    map_params: dict[str, Any]
    vehicles: int
    parked: int
    connected: int
    mix: dict[str, float]
    lidar: LidarConfig
    duration_s: float
    seed: int
    source: str = field(default="", compare=False)

    @property
    def num_frames(self) -> int:
        return max(1, int(round(self.duration_s * RATE_HZ)))


def _check(section: Mapping[str, Any], schema: dict[str, Key], where: str) -> dict[str, Any]:
    """Validate one mapping against a schema; return it with defaults filled in."""
    if not isinstance(section, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(section).__name__}")
    unknown = sorted(str(k) for k in set(section) - set(schema))
    if unknown:
        raise ValueError(
            f"{where}: unknown key {short_repr(unknown[0])}; allowed: {sorted(schema)}")
    out: dict[str, Any] = {}
    for name, key in schema.items():
        label = f"{where}.{name}" if where.count(":") else f"{where}: {name}"
        if name not in section:
            if key.required:
                raise ValueError(f"{label}: missing required key {name!r}")
            out[name] = key.default
            continue
        value = section[name]
        kinds = key.kind if isinstance(key.kind, tuple) else (key.kind,)
        ok = isinstance(value, kinds) and not isinstance(value, bool)
        if key.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ValueError(
                f"{label}: key {name!r} must be {'/'.join(k.__name__ for k in kinds)}, "
                f"got {type(value).__name__} {short_repr(value)}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{label}: key {name!r} = {value!r} must be a finite number")
        if key.low is not None and value < key.low or key.high is not None and value > key.high:
            raise ValueError(
                f"{label}: key {name!r} = {short_repr(value)} outside [{key.low}, {key.high}]")
        if key.choices and value not in key.choices:
            raise ValueError(
                f"{label}: key {name!r} = {short_repr(value)} not one of {list(key.choices)}")
        out[name] = value
    return out


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    """Validate a parsed YAML document; errors name ``source`` and the offending key."""
    top = _check(data if data is not None else {}, _TOP, source)
    map_section = dict(top["map"]) if isinstance(top["map"], Mapping) else top["map"]
    if not isinstance(map_section, dict) or "layout" not in map_section:
        raise ValueError(f"{source}: map.layout: missing required key 'layout'")
    layout = map_section.pop("layout")
    if not isinstance(layout, str) or layout not in LAYOUT_SCHEMAS:
        raise ValueError(f"{source}: map.layout: key 'layout' = {short_repr(layout)} "
                         f"not one of {sorted(LAYOUT_SCHEMAS)}")
    params = _check(map_section, LAYOUT_SCHEMAS[layout], f"{source}: map")
    if params["building_height_min"] > params["building_height_max"]:
        raise ValueError(f"{source}: map.building_height_min: key 'building_height_min' "
                         "must not exceed building_height_max")
    traffic = _check(top["traffic"], _TRAFFIC, f"{source}: traffic")
    mix = traffic["mix"]
    if not isinstance(mix, Mapping) or not mix or any(
        k not in ("car", "van", "truck") or not isinstance(v, int | float) or isinstance(v, bool)
        or not math.isfinite(v) or v < 0
        for k, v in mix.items()
    ) or sum(mix.values()) <= 0:
        raise ValueError(f"{source}: traffic.mix: key 'mix' must map car/van/truck to finite "
                         f"weights >= 0 with a positive sum, got {short_repr(mix)}")
    if traffic["connected"] > traffic["vehicles"]:
        raise ValueError(f"{source}: traffic.connected: key 'connected' "
                         f"({traffic['connected']}) exceeds vehicles ({traffic['vehicles']})")
    lidar_fields = _check(top["lidar"], _LIDAR, f"{source}: lidar")
    try:
        lidar = LidarConfig(**lidar_fields)
    except ValueError as err:
        raise ValueError(f"{source}: lidar: {err}") from None
    return Scenario(
        name=top["name"], description=top["description"], layout=layout, map_params=params,
        vehicles=traffic["vehicles"], parked=traffic["parked"], connected=traffic["connected"],
        mix={k: float(v) for k, v in mix.items()}, lidar=lidar, duration_s=top["duration_s"],
        seed=top["seed"], source=source,
    )


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A built-in scenario by name, or a scenario YAML file by path."""
    text = str(name_or_path)
    if text in BUILTIN_SCENARIOS:
        path = BUILTIN_DIR / f"{text}.yaml"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(
                f"scenario {text!r}: not a built-in ({sorted(BUILTIN_SCENARIOS)}) nor a file"
            )
    return parse_scenario(load_yaml_file(path), str(path))


def list_builtin() -> dict[str, str]:
    """``name -> one-line description`` of each built-in (for ``cosim scenarios list``)."""
    return dict(BUILTIN_SCENARIOS)
