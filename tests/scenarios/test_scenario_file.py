"""Scenario YAML files: built-ins load, the registry matches the files, bad files are rejected."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from scenarios.scenario_file import (
    BUILTIN_DIR,
    BUILTIN_SCENARIOS,
    DEFAULT_SCENARIO,
    list_builtin,
    load_scenario,
)


def _base() -> dict[str, Any]:
    return yaml.safe_load((BUILTIN_DIR / "intersection.yaml").read_text())


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_registry_lists_exactly_the_builtin_files() -> None:
    files = {p.stem for p in BUILTIN_DIR.glob("*.yaml")}
    assert files == set(BUILTIN_SCENARIOS)
    assert {"intersection", "highway"} <= files and len(files) >= 3
    assert DEFAULT_SCENARIO == "intersection"
    assert all(desc and "\n" not in desc for desc in list_builtin().values())


@pytest.mark.parametrize("name", sorted(BUILTIN_SCENARIOS))
def test_builtins_load_with_valid_values(name: str) -> None:
    sc = load_scenario(name)
    assert sc.name == name and sc.layout == name
    assert 2 <= sc.connected <= 7 and sc.connected <= sc.vehicles
    assert sc.num_frames == round(sc.duration_s * 10)
    assert sc.lidar.channels == 32 and sc.lidar.rays_per_channel == 1800


def test_default_scenario_matches_the_brief() -> None:
    sc = load_scenario("intersection")
    assert sc.connected == 4 and 45 <= sc.vehicles + sc.parked <= 55
    assert (sc.lidar.upper_fov, sc.lidar.lower_fov) == (15.0, -25.0)


def test_loading_by_path_and_defaults_fill_in(tmp_path: Path) -> None:
    data = _base()
    del data["map"]["arm_length"], data["lidar"]["noise_stddev"], data["traffic"]["mix"]
    sc = load_scenario(_write(tmp_path, data))
    assert sc.map_params["arm_length"] == 150.0 and sc.lidar.noise_stddev == 0.0
    assert sc.mix == {"car": 0.7, "van": 0.2, "truck": 0.1}


def _mutations() -> list[tuple[str, Any, str]]:
    """(description, edit function, key the error must name)."""

    def setter(path: tuple[str, ...], value: Any):
        def edit(d: dict[str, Any]) -> None:
            for k in path[:-1]:
                d = d[k]
            d[path[-1]] = value

        return edit

    def deleter(path: tuple[str, ...]):
        def edit(d: dict[str, Any]) -> None:
            for k in path[:-1]:
                d = d[k]
            del d[path[-1]]

        return edit

    return [
        ("unknown top key", setter(("weather",), "rain"), "weather"),
        ("unknown map key", setter(("map", "roundabouts"), 2), "roundabouts"),
        ("unknown lidar key", setter(("lidar", "beams"), 64), "beams"),
        ("missing seed", deleter(("seed",)), "seed"),
        ("missing vehicles", deleter(("traffic", "vehicles")), "vehicles"),
        ("missing layout", deleter(("map", "layout")), "layout"),
        ("wrong type seed", setter(("seed",), "zero"), "seed"),
        ("bool is not int", setter(("traffic", "parked"), True), "parked"),
        ("float channels", setter(("lidar", "channels"), 32.5), "channels"),
        ("wrong type map", setter(("map",), [1, 2]), "map"),
        ("too many cavs", setter(("traffic", "connected"), 8), "connected"),
        ("too few cavs", setter(("traffic", "connected"), 1), "connected"),
        ("cavs above vehicles", setter(("traffic", "vehicles"), 3), "connected"),
        ("negative range", setter(("lidar", "range"), -1.0), "range"),
        ("duration zero", setter(("duration_s",), 0), "duration_s"),
        ("bad layout", setter(("map", "layout"), "roundabout"), "layout"),
        ("highway key on junction", setter(("map", "median_width"), 3.0), "median_width"),
        ("fov inverted", setter(("lidar", "lower_fov"), 20.0), "lower_fov"),
        ("bad mix", setter(("traffic", "mix"), {"bus": 1.0}), "mix"),
        ("heights inverted", setter(("map", "building_height_min"), 50.0), "building_height_min"),
    ]


@pytest.mark.parametrize(("what", "edit", "key"), _mutations(), ids=[m[0] for m in _mutations()])
def test_invalid_files_name_the_file_and_the_key(tmp_path: Path, what: str, edit, key: str) -> None:
    data = copy.deepcopy(_base())
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(ValueError) as err:
        load_scenario(path)
    assert str(path) in str(err.value), what
    assert key in str(err.value), what


def test_unknown_name_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a built-in"):
        load_scenario("no_such_scenario")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_scenario(bad)
