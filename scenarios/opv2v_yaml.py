"""The per-frame yaml of an OPV2V / V2XSet CAV: parse it into a typed record, and build one.

One yaml per CAV per frame holds the LiDAR pose, the vehicle pose, the speed and the vehicles
around it (see ``/work/shared/OPV2V_FORMAT.md``). Units change here and nowhere else: degrees and
km/h in the file, radians and m/s in :class:`CavRecord`. Values are written the way the real
data has them, float32 numbers printed by PyYAML, and read with a safe loader.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from scenarios.geometry import matrix_to_pose, pose_to_matrix
from scenarios.safe_yaml import NoAliasSafeLoader, short_repr

KMH_PER_MS = 3.6


class OPV2VFormatError(ValueError):
    """An OPV2V / V2XSet file or folder that cannot be read; names the file and the problem."""


# Beyond this a coordinate is not a place on any map (CARLA towns span a few km): a pose of
# 1e308 m is finite but would overflow every transform built from it.
MAX_POSE_METRES = 1.0e5
MAX_POSE_DEGREES = 3600.0


class _Loader(NoAliasSafeLoader):
    """Safe loader that also reads ``1e-05`` (no dot) as a float, as OpenCOOD's loader does,
    and refuses YAML aliases (no alias bombs; OpenCDA never writes them)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass(frozen=True, eq=False)
class CavRecord:
    """What one CAV's yaml says at one frame, in code units (metres, radians, m/s).

    ``lidar_pose`` / ``vehicle_pose`` / ``predicted_pose``: 4x4 world <- LiDAR / vehicle body /
    localisation estimate (the last two None when absent). ``vehicles``: object id -> float64
    box (7,) x, y, z, l, w, h, yaw in the world frame; ``vehicle_speeds`` in m/s.
    """

    lidar_pose: NDArray[np.float64]
    vehicle_pose: NDArray[np.float64] | None
    predicted_pose: NDArray[np.float64] | None
    speed: float
    is_rsu: bool | None
    vehicles: dict[int, NDArray[np.float64]]
    vehicle_speeds: dict[int, float]


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a yaml mapping with the safe loader; errors name the file."""
    try:
        with path.open("rb") as stream:
            data = yaml.load(stream, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except OSError as exc:
        raise OPV2VFormatError(f"{path}: cannot read yaml ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        text = " ".join(str(exc).split())[:300]
        raise OPV2VFormatError(f"{path}: invalid yaml ({text})") from None
    if not isinstance(data, dict):
        raise OPV2VFormatError(f"{path}: expected a yaml mapping, got {type(data).__name__}")
    return data


def _numbers(value: Any, length: int, where: str) -> NDArray[np.float64]:
    """A list of ``length`` finite numbers, or an OPV2VFormatError saying what is wrong."""
    if not isinstance(value, list | tuple):
        raise OPV2VFormatError(
            f"{where}: expected a list of {length} numbers, got {short_repr(value)}"
        )
    if len(value) != length:
        raise OPV2VFormatError(f"{where}: expected {length} numbers, got {len(value)}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise OPV2VFormatError(f"{where}: non-numeric value {short_repr(item)}")
        if not math.isfinite(item):
            raise OPV2VFormatError(f"{where}: non-finite value {item!r}")
    return np.array(value, dtype=np.float64)


def _number(value: Any, where: str) -> float:
    return float(_numbers([value], 1, where)[0])


def _pose(data: Mapping[str, Any], key: str, where: str) -> NDArray[np.float64] | None:
    if key not in data:
        return None
    values = _numbers(data[key], 6, f"{where}: {key}")
    if np.abs(values[:3]).max() > MAX_POSE_METRES or np.abs(values[3:]).max() > MAX_POSE_DEGREES:
        raise OPV2VFormatError(
            f"{where}: {key}: {values.tolist()} is not a pose on a map (|x, y, z| <= "
            f"{MAX_POSE_METRES:g} m, |angles| <= {MAX_POSE_DEGREES:g} deg)"
        )
    return pose_to_matrix(values)


def vehicle_box(entry: Any, where: str) -> tuple[NDArray[np.float64], float]:
    """One ``vehicles`` entry -> (world box (7,), speed m/s).

    Box centre = ``location + center`` (both world frame, as OpenCOOD adds them), size =
    2 * ``extent``, yaw = ``angle[1]`` in radians (wrapped only when outside [-pi, pi)).
    """
    if not isinstance(entry, dict):
        raise OPV2VFormatError(f"{where}: expected a mapping, got {short_repr(entry)}")
    fields = {}
    for key in ("location", "center", "extent", "angle"):
        if key not in entry:
            raise OPV2VFormatError(f"{where}: missing key {key!r}")
        fields[key] = _numbers(entry[key], 3, f"{where}: {key}")
    yaw = math.radians(fields["angle"][1])
    if not -math.pi <= yaw < math.pi:
        yaw = (yaw + math.pi) % (2.0 * math.pi) - math.pi
    box = np.concatenate([fields["location"] + fields["center"], 2.0 * fields["extent"], [yaw]])
    speed = _number(entry["speed"], f"{where}: speed") / KMH_PER_MS if "speed" in entry else 0.0
    return box, speed


def parse_cav_yaml(data: Mapping[str, Any], where: str) -> CavRecord:
    """Validate one CAV's yaml mapping and convert it to a :class:`CavRecord`."""
    if "lidar_pose" not in data:
        raise OPV2VFormatError(f"{where}: missing key 'lidar_pose'")
    lidar_pose = _pose(data, "lidar_pose", where)
    assert lidar_pose is not None
    if "vehicles" not in data:
        raise OPV2VFormatError(f"{where}: missing key 'vehicles'")
    raw_vehicles = data["vehicles"] or {}
    if not isinstance(raw_vehicles, dict):
        raise OPV2VFormatError(f"{where}: 'vehicles' must be a mapping id -> vehicle")
    vehicles: dict[int, NDArray[np.float64]] = {}
    speeds: dict[int, float] = {}
    for key, entry in raw_vehicles.items():
        try:
            object_id = int(key)
        except (TypeError, ValueError):
            raise OPV2VFormatError(
                f"{where}: vehicle id {short_repr(key)} is not an integer"
            ) from None
        vehicles[object_id], speeds[object_id] = vehicle_box(entry, f"{where}: vehicle {key}")
    rsu = data.get("RSU")
    if rsu is not None and not isinstance(rsu, bool):
        raise OPV2VFormatError(f"{where}: 'RSU' must be true or false, got {short_repr(rsu)}")
    speed = _number(data["ego_speed"], f"{where}: ego_speed") if "ego_speed" in data else 0.0
    return CavRecord(
        lidar_pose=lidar_pose,
        vehicle_pose=_pose(data, "true_ego_pos", where),
        predicted_pose=_pose(data, "predicted_ego_pos", where),
        speed=speed / KMH_PER_MS,
        is_rsu=rsu,
        vehicles=vehicles,
        vehicle_speeds=speeds,
    )


def read_cav_yaml(path: Path) -> CavRecord:
    """Load and parse one ``NNNNNN.yaml``."""
    return parse_cav_yaml(load_yaml(path), str(path))


def _f32(values: Any) -> list[float]:
    """Numbers rounded to float32 and given back as Python floats (how OPV2V prints them)."""
    return [float(v) for v in np.asarray(values, dtype=np.float32).reshape(-1)]


def pose_to_yaml(matrix: NDArray[np.float64]) -> list[float]:
    """4x4 pose -> ``[x, y, z, roll, yaw, pitch]`` float32 values (metres, degrees)."""
    return _f32(matrix_to_pose(matrix))


def cav_yaml_dict(
    lidar_pose: NDArray[np.float64],
    vehicle_pose: NDArray[np.float64] | None,
    speed: float,
    is_rsu: bool,
    vehicles: Mapping[int, tuple[NDArray[np.float64], float]],
) -> dict[str, Any]:
    """Build the yaml mapping of one CAV at one frame.

    ``vehicles``: id -> (world box (7,), speed m/s). ``true_ego_pos`` is the vehicle pose, or
    the LiDAR pose when unknown; ``predicted_ego_pos`` equals it (perfect localisation).
    """
    true_pose = pose_to_yaml(lidar_pose if vehicle_pose is None else vehicle_pose)
    entries = {}
    for object_id, (box, object_speed) in vehicles.items():
        b = np.asarray(box, dtype=np.float64)
        entries[int(object_id)] = {
            "angle": _f32([0.0, math.degrees(b[6]), 0.0]),
            "center": [0.0, 0.0, 0.0],
            "extent": _f32(b[3:6] / 2.0),
            "location": _f32(b[:3]),
            "speed": _f32([object_speed * KMH_PER_MS])[0],
        }
    return {
        "RSU": bool(is_rsu),
        "ego_speed": _f32([speed * KMH_PER_MS])[0],
        "lidar_pose": pose_to_yaml(lidar_pose),
        "plan_trajectory": [],
        "predicted_ego_pos": list(true_pose),
        "true_ego_pos": true_pose,
        "vehicles": entries,
    }


def dump_yaml(data: Mapping[str, Any], path: Path) -> None:
    """Write a mapping in PyYAML's block style (as OpenCDA's dumps look)."""
    dumper: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with path.open("w", encoding="utf-8") as stream:
        yaml.dump(dict(data), stream, Dumper=dumper, default_flow_style=False, sort_keys=False)
