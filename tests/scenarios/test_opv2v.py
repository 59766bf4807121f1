"""OPV2V / V2XSet reader on a scenario written by hand from the format description."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from scenarios.geometry import pose_to_matrix
from scenarios.opv2v import OPV2VFormatError, OPV2VScenario, list_scenarios, opencood_cav_order
from scenarios.source import FrameSource

PCD = """# .PCD v0.7 - Point Cloud Data file format
VERSION 0.7
FIELDS x y z rgb
SIZE 4 4 4 4
TYPE F F F F
COUNT 1 1 1 1
WIDTH {n}
HEIGHT 1
VIEWPOINT 0 0 0 1 0 0 0
POINTS {n}
DATA ascii
{body}"""

EGO_YAML = """\
ego_speed: 36.0
lidar_pose: [2.0, 3.0, 1.9, 0.0, 90.0, 0.0]
true_ego_pos: [2.0, 3.0, 0.0, 0.0, 90.0, 0.0]
predicted_ego_pos: [2.1, 3.0, 0.0, 0.0, 90.0, 0.0]
plan_trajectory: [[1.0, 2.0, 3.0]]
camera0:
  cords: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
vehicles:
  650:
    location: [10.0, 0.0, 0.0]
    center: [0.5, 0.0, 0.8]
    angle: [0.0, 90.0, 0.0]
    extent: [2.0, 1.0, 0.75]
    speed: 18.0
  7:
    location: [-5.0, 4.0, 0.2]
    center: [0.0, 0.0, 0.5]
    angle: [0.0, -180.0, 0.0]
    extent: [2.5, 1.0, 0.8]
    speed: 0.0
"""

OTHER_YAML = """\
ego_speed: 18.0
lidar_pose: [10.5, 0.0, 1.9, 0.0, 90.0, 0.0]
true_ego_pos: [10.5, 0.0, 0.0, 0.0, 90.0, 0.0]
vehicles:
  641:
    location: [2.0, 3.0, 0.0]
    center: [0.0, 0.0, 0.7]
    angle: [0.0, 90.0, 0.0]
    extent: [2.2, 0.9, 0.7]
    speed: 36.0
  7:
    location: [99.0, 99.0, 0.0]
    center: [0.0, 0.0, 0.0]
    angle: [0.0, 0.0, 0.0]
    extent: [1.0, 1.0, 1.0]
"""

RSU_YAML = """\
RSU: true
lidar_pose: [0.0, 0.0, 4.0, 0.0, 0.0, 0.0]
vehicles:
  99:
    location: [20.0, -3.0, 0.0]
    center: [0.0, 0.0, 0.75]
    angle: [0.0, 45.0, 0.0]
    extent: [2.0, 1.0, 0.75]
    speed: 1e-05
"""


def _cav(root: Path, cav: str, stem: str, yaml_text: str, pcd_body: str = "1 2 3 0\n") -> None:
    folder = root / cav
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.yaml").write_text(yaml_text)
    (folder / f"{stem}.pcd").write_text(PCD.format(n=pcd_body.count("\n"), body=pcd_body))


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    root = tmp_path / "train" / "2021_08_16_22_26_54"
    packed = "1.78160863e-38"  # rgb bits 0xC20000: intensity 194 / 255
    for stem in ("000068", "000070"):
        _cav(root, "641", stem, EGO_YAML, f"1.5 -2.25 0.125 {packed}\n10 20 -1.75 0\n")
        _cav(root, "650", stem, OTHER_YAML)
    _cav(root, "-1", "000068", RSU_YAML)
    (root / "650" / "000068_additional.yaml").write_text("{not: [valid yaml")
    (root / "650" / "000068_camera0.png").write_bytes(b"\x89PNG")
    (root / "notes").mkdir()
    (root / "data_protocol.yaml").write_text("world: {town: Town06}\n")
    return root


def test_reads_hand_written_scenario(scenario: Path) -> None:
    source = OPV2VScenario(scenario)
    assert isinstance(source, FrameSource)
    assert (source.name, source.num_frames, source.rate_hz) == ("2021_08_16_22_26_54", 2, 10.0)
    assert source.cav_ids == [641, 650, -1] and source.frame_numbers == [68, 70]
    first, second = list(source.frames())
    assert (first.index, first.timestamp, second.index, second.timestamp) == (0, 0.0, 1, 0.1)
    assert first.ego_id == 641 and first.agent_ids == [641, 650, -1]
    assert second.agent_ids == [641, 650]  # the RSU has no dump at 000070

    ego = first.agent(641)
    np.testing.assert_allclose(
        ego.lidar_pose, [[0, -1, 0, 2], [1, 0, 0, 3], [0, 0, 1, 1.9], [0, 0, 0, 1]], atol=1e-12
    )
    np.testing.assert_allclose(ego.vehicle_pose[:3, 3], [2, 3, 0])
    assert ego.speed == pytest.approx(10.0) and not ego.is_rsu
    np.testing.assert_allclose(
        ego.points, [[1.5, -2.25, 0.125, 194 / 255], [10, 20, -1.75, 0]], rtol=1e-7
    )
    rsu = first.agent(-1)
    assert rsu.is_rsu and rsu.speed == 0.0 and rsu.vehicle_pose is None

    objects = first.objects
    assert objects.ids.tolist() == [7, 99, 641, 650] and objects.categories == ("car",) * 4
    expected = [
        [-5.0, 4.0, 0.7, 5.0, 2.0, 1.6, -math.pi],  # ego's entry wins over 650's
        [20.0, -3.0, 0.75, 4.0, 2.0, 1.5, math.pi / 4],
        [2.0, 3.0, 0.7, 4.4, 1.8, 1.4, math.pi / 2],
        [10.5, 0.0, 0.8, 4.0, 2.0, 1.5, math.pi / 2],
    ]
    np.testing.assert_allclose(objects.boxes, expected, atol=1e-12)

    # In the ego's LiDAR frame (yaw 90 at (2, 3, 1.9)): world (x, y) -> (y - 3, -(x - 2)).
    ids, boxes = first.objects_in(641)
    assert ids.tolist() == [7, 99, 650]
    np.testing.assert_allclose(boxes[2], [-3.0, -8.5, -1.1, 4.0, 2.0, 1.5, 0.0], atol=1e-5)
    np.testing.assert_allclose(boxes[0][:3], [1.0, 7.0, -1.2], atol=1e-5)
    assert source.frame(1) == second  # replayable


def test_opencood_order_moves_only_a_leading_negative_id() -> None:
    assert opencood_cav_order(["650", "-1", "641"]) == ["641", "650", "-1"]
    assert opencood_cav_order(["-2", "-1", "5"]) == ["-2", "5", "-1"]
    assert opencood_cav_order(["99", "100", "-7"]) == ["100", "99", "-7"]
    assert opencood_cav_order([]) == []


def test_ego_override_and_points_skipping(scenario: Path) -> None:
    frame = OPV2VScenario(scenario, ego_id=650, load_points=False).frame(0)
    assert frame.ego_id == 650 and frame.agent_ids == [650, 641, -1]
    assert frame.agent(641).points.shape == (0, 4)
    assert frame.objects.ids.tolist() == [7, 99, 641, 650]
    np.testing.assert_allclose(frame.objects.boxes[0], [99, 99, 0, 2, 2, 2, 0])  # 650's entry


def test_list_scenarios(scenario: Path) -> None:
    (scenario.parent / "empty_scenario").mkdir()
    assert list_scenarios(scenario.parent.parent, "train") == [scenario]
    assert list_scenarios(scenario.parent) == [scenario]
    with pytest.raises(OPV2VFormatError, match="no such dataset folder"):
        list_scenarios(scenario.parent.parent, "validate")


def test_out_of_range_frame(scenario: Path) -> None:
    with pytest.raises(IndexError, match=r"frame 2 out of range \[0, 2\)"):
        OPV2VScenario(scenario).frame(2)


def _break(scenario: Path, old: str, new: str, cav: str = "641") -> Path:
    path = scenario / cav / "000068.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("lidar_pose:", "lidar_pos:", "missing key 'lidar_pose'"),
        ("[2.0, 3.0, 1.9,", "[2.0, north, 1.9,", "lidar_pose: non-numeric value 'north'"),
        (
            "[2.0, 3.0, 1.9, 0.0, 90.0, 0.0]",
            "[2.0, 3.0, 1.9, 0.0, 90.0]",
            "lidar_pose: expected 6 numbers, got 5",
        ),
        ("[2.0, 3.0, 1.9,", "[.nan, 3.0, 1.9,", "lidar_pose: non-finite value"),
        ("true_ego_pos: [2.0", "true_ego_pos: [yes", "true_ego_pos: non-numeric value True"),
        ("vehicles:", "vehicle:", "missing key 'vehicles'"),
        (
            "    extent: [2.0, 1.0, 0.75]",
            "    extnt: [2.0, 1.0, 0.75]",
            "vehicle 650: missing key 'extent'",
        ),
        ("  7:\n", "  seven:\n", "vehicle id 'seven' is not an integer"),
        ("ego_speed: 36.0", "ego_speed: fast", "ego_speed: non-numeric value 'fast'"),
        ("ego_speed: 36.0", "ego_speed: [36.0", "invalid yaml"),
        ("ego_speed: 36.0\n", "RSU: maybe\n", "'RSU' must be true or false"),
    ],
)
def test_malformed_yaml_raises_naming_file(
    scenario: Path, old: str, new: str, problem: str
) -> None:
    path = _break(scenario, old, new)
    with pytest.raises(OPV2VFormatError, match=problem) as info:
        OPV2VScenario(scenario).frame(0)
    assert str(path) in str(info.value)


def test_yaml_that_is_not_a_mapping(scenario: Path) -> None:
    (scenario / "650" / "000070.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(OPV2VFormatError, match="000070.yaml: expected a yaml mapping, got list"):
        OPV2VScenario(scenario).frame(1)


def test_bad_or_missing_pcd(scenario: Path) -> None:
    pcd = scenario / "650" / "000068.pcd"
    pcd.write_text(PCD.format(n=2, body="1 2 3 0\n"))
    with pytest.raises(OPV2VFormatError, match="ascii body has 4 values; header says 2") as info:
        OPV2VScenario(scenario).frame(0)
    assert str(pcd) in str(info.value)
    pcd.unlink()
    with pytest.raises(OPV2VFormatError, match="000068.pcd: missing PCD file"):
        OPV2VScenario(scenario).frame(0)


def test_ego_missing_a_frame_is_an_error(scenario: Path) -> None:
    _cav(scenario, "650", "000072", OTHER_YAML)
    _cav(scenario, "-1", "000074", RSU_YAML)
    with pytest.raises(OPV2VFormatError, match="ego 641 has no dump for frame.s. 000072, 000074"):
        OPV2VScenario(scenario)


def test_scenario_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(OPV2VFormatError, match="does not exist"):
        OPV2VScenario(tmp_path / "nope")
    (tmp_path / "s" / "abc").mkdir(parents=True)
    with pytest.raises(OPV2VFormatError, match="no CAV folders"):
        OPV2VScenario(tmp_path / "s")
    (tmp_path / "s" / "12").mkdir()
    with pytest.raises(OPV2VFormatError, match="no frame yaml files"):
        OPV2VScenario(tmp_path / "s")
    with pytest.raises(OPV2VFormatError, match=r"ego 5 is not among CAVs \[12\]"):
        OPV2VScenario(tmp_path / "s", ego_id=5)


def test_pose_convention_matches_geometry(scenario: Path) -> None:
    _break(scenario, "[2.0, 3.0, 1.9, 0.0, 90.0, 0.0]", "[2.0, 3.0, 1.9, 5.0, 30.0, -10.0]")
    ego = OPV2VScenario(scenario).frame(0).agent(641)
    np.testing.assert_array_equal(ego.lidar_pose, pose_to_matrix([2, 3, 1.9, 5, 30, -10]))
