"""Scenario definition files: schema, validation, loading, and the registry of built-ins.

A scenario YAML sets the map (layout + parameters), traffic, the connected vehicles, the LiDAR
(``LidarConfig`` fields), the duration and the seed. Loading validates the file against
:class:`ScenarioFile` (pydantic); an unknown key, a missing one, a wrong type or a value out of
range raises a ValueError that names the file, the key path and what is allowed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from configkit import Float, Int, Str, config_dataclass, validate
from scenarios.lidar_config import LidarConfig
from scenarios.safe_yaml import load_yaml_file

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


def _bounded(kind: Any, low: float, high: float) -> Any:
    return Annotated[kind, Field(ge=low, le=high)]


@config_dataclass
class JunctionMap:
    """An urban junction (``intersection``: four arms, ``t_junction``: three)."""

    layout: Literal["intersection", "t_junction"]
    arm_length: Float = Field(150.0, ge=60.0, le=500.0)
    lanes_per_direction: Int = Field(1, ge=1, le=3)
    lane_width: Float = Field(3.5, ge=2.8, le=4.5)
    speed_limit: Float = Field(13.9, ge=3.0, le=40.0)
    building_height_min: Float = Field(8.0, ge=2.0, le=100.0)
    building_height_max: Float = Field(30.0, ge=2.0, le=200.0)
    signal_green: Float = Field(8.0, ge=3.0, le=120.0)
    signal_clearance: Float = Field(2.0, ge=0.0, le=30.0)

    def __post_init__(self) -> None:
        _check_heights(self.building_height_min, self.building_height_max)


@config_dataclass
class HighwayMap:
    """A straight divided highway."""

    layout: Literal["highway"]
    length: Float = Field(1200.0, ge=300.0, le=5000.0)
    lanes_per_direction: Int = Field(3, ge=1, le=5)
    lane_width: Float = Field(3.75, ge=2.8, le=4.5)
    median_width: Float = Field(3.0, ge=0.5, le=30.0)
    speed_limit: Float = Field(27.0, ge=10.0, le=45.0)
    building_height_min: Float = Field(6.0, ge=2.0, le=100.0)
    building_height_max: Float = Field(20.0, ge=2.0, le=200.0)

    def __post_init__(self) -> None:
        _check_heights(self.building_height_min, self.building_height_max)


def _check_heights(low: float, high: float) -> None:
    if low > high:
        raise ValueError(
            f"building_height_min ({low}) must not exceed building_height_max ({high})"
        )


#: Map parameters allowed for each layout (besides ``layout`` itself).
LAYOUT_SCHEMAS: dict[str, type] = {
    "intersection": JunctionMap,
    "t_junction": JunctionMap,
    "highway": HighwayMap,
}
MapSection = Annotated[JunctionMap | HighwayMap, Field(discriminator="layout")]
VehicleKind = Literal["car", "van", "truck"]


@config_dataclass
class TrafficSection:
    """Moving vehicles (connected ones included), parked ones, connected agents, type mix."""

    vehicles: Annotated[Int, Field(ge=2, le=200)]
    parked: Annotated[Int, Field(ge=0, le=200)]
    connected: Annotated[Int, Field(ge=2, le=7)]
    mix: dict[VehicleKind, Annotated[Float, Field(ge=0.0)]] = field(
        default_factory=lambda: {"car": 0.7, "van": 0.2, "truck": 0.1}
    )

    def __post_init__(self) -> None:
        if not self.mix or sum(self.mix.values()) <= 0:
            raise ValueError("mix: weights must have a positive sum")
        if self.connected > self.vehicles:
            raise ValueError(f"connected: {self.connected} exceeds vehicles ({self.vehicles})")


_LIDAR_BOUNDS: dict[str, tuple[float, float]] = {
    "channels": (1, 128),
    "range": (1.0, 500.0),
    "upper_fov": (-90.0, 90.0),
    "lower_fov": (-90.0, 90.0),
    "points_per_second": (1_000, 10_000_000),
    "rotation_frequency": (1.0, 100.0),
    "mount_height": (0.0, 10.0),
    "noise_stddev": (0.0, 5.0),
    "atmosphere_attenuation_rate": (0.0, 1.0),
    "dropoff_general_rate": (0.0, 1.0),
    "dropoff_intensity_limit": (0.0, 1.0),
    "dropoff_zero_intensity": (0.0, 1.0),
}


def _lidar_section() -> type:
    """The ``lidar`` section: LidarConfig's fields and defaults, each within the scenario
    file's bounds (what a plausible spinning LiDAR has)."""

    def post_init(self: Any) -> None:
        LidarConfig(**asdict(self))  # the sensor's own cross-field checks (fov order)

    namespace: dict[str, Any] = {
        "__doc__": "A scenario's LiDAR: LidarConfig's fields and defaults, bounded.",
        "__post_init__": post_init,
        "__annotations__": {
            f.name: _bounded(Int if f.type in ("int", int) else Float, *_LIDAR_BOUNDS[f.name])
            for f in fields(LidarConfig)
        },
        **{f.name: f.default for f in fields(LidarConfig)},
    }
    section = type("LidarSection", (), namespace)
    return config_dataclass(section)


LidarSection = _lidar_section()


@config_dataclass
class ScenarioFile:
    """A scenario YAML file as written: map, traffic, LiDAR, duration and seed."""

    name: Str
    map: MapSection
    traffic: TrafficSection
    lidar: LidarSection  # type: ignore[valid-type]
    duration_s: Annotated[Float, Field(ge=0.1, le=3600.0)]
    seed: Annotated[Int, Field(ge=0, le=2**32 - 1)]
    description: Str = ""


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


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    """Validate a parsed YAML document; errors name ``source``, the key path and what is
    allowed."""
    parsed = validate(ScenarioFile, {} if data is None else data, source)
    params = asdict(parsed.map)
    layout = params.pop("layout")
    traffic = parsed.traffic
    return Scenario(
        name=parsed.name,
        description=parsed.description,
        layout=layout,
        map_params=params,
        vehicles=traffic.vehicles,
        parked=traffic.parked,
        connected=traffic.connected,
        mix=dict(traffic.mix),
        lidar=LidarConfig(**asdict(parsed.lidar)),
        duration_s=parsed.duration_s,
        seed=parsed.seed,
        source=source,
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
