"""Writing Frames as an OPV2V scenario and reading them back."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from scenarios.frame import AgentObservation, Frame, ObjectSet
from scenarios.geometry import pose_to_matrix
from scenarios.opv2v import OPV2VScenario
from scenarios.opv2v_writer import opv2v_canonical, write_opv2v
from scenarios.pcd import read_pcd


def _f32(*values: float) -> list[float]:
    return [float(v) for v in np.float32(values)]


def _on_grid_frames() -> list[Frame]:
    """Frames whose every value is representable in the files (the exact round-trip case)."""
    rng = np.random.default_rng(7)

    def agent(agent_id: int, pose: list[float], kmh: float, rsu: bool = False) -> AgentObservation:
        points = rng.uniform(-50, 50, (20, 4)).astype(np.float32)
        points[:, 3] = np.float32(rng.integers(0, 256, 20)) / np.float32(255)
        body = pose_to_matrix(_f32(*pose[:2], 0.0, *pose[3:]))
        return AgentObservation(
            agent_id,
            pose_to_matrix(_f32(*pose)),
            points,
            speed=float(np.float32(kmh)) / 3.6,
            vehicle_pose=body,
            is_rsu=rsu,
        )

    def box(x: float, y: float, yaw_deg: float) -> list[float]:
        return [*_f32(x, y, 0.8), *_f32(4.5, 1.9, 1.6), math.radians(float(np.float32(yaw_deg)))]

    frames = []
    for k in range(3):
        agents = [
            agent(1, [10.1 + k, -3.3, 1.9, 0.0, 12.5, 0.0], 30.7),
            agent(2, [40.2, 7.7 + k, 1.95, 0.3, -170.25, -1.2], 12.1),
            agent(-1, [0.0, 0.0, 4.0, 0.0, 90.0, 0.0], 0.0, rsu=True),
        ]
        if k == 1:
            agents.pop(1)  # agent 2 has no dump at this frame
        boxes = {1: box(10.1 + k, -3.3, 12.5), 5: box(25.3, 3.1, -88.8), 9: box(-7.7, 30.3, 179)}
        if k != 1:
            boxes[2] = box(40.2, 7.7 + k, -170.25)
        ids = sorted(boxes)
        frames.append(
            Frame(
                k / 10,
                k,
                {a.agent_id: a for a in agents},
                ObjectSet(np.array(ids), np.array([boxes[i] for i in ids])),
                ego_id=1,
            )
        )
    return frames


def test_on_grid_frames_round_trip_exactly(tmp_path: Path) -> None:
    frames = _on_grid_frames()
    write_opv2v(frames, tmp_path / "scenario", start_frame=68)
    source = OPV2VScenario(tmp_path / "scenario")
    assert source.frame_numbers == [68, 70, 72] and source.cav_ids == [1, 2, -1]
    assert list(source.frames()) == frames
    assert opv2v_canonical(frames) == frames


def test_written_files_look_like_opv2v(tmp_path: Path) -> None:
    frames = _on_grid_frames()
    out = write_opv2v(frames, tmp_path / "s", start_frame=68, vehicle_radius=20.0)
    assert sorted(p.name for p in out.iterdir()) == ["-1", "1", "2", "data_protocol.yaml"]
    assert sorted(p.name for p in (out / "2").iterdir()) == [
        "000068.pcd",
        "000068.yaml",
        "000072.pcd",
        "000072.yaml",
    ]
    data = yaml.safe_load((out / "1" / "000070.yaml").read_text())
    assert set(data) == {
        "RSU",
        "ego_speed",
        "lidar_pose",
        "plan_trajectory",
        "predicted_ego_pos",
        "true_ego_pos",
        "vehicles",
    }
    assert data["RSU"] is False and data["plan_trajectory"] == []
    assert data["lidar_pose"] == _f32(11.1, -3.3, 1.9, 0.0, 12.5, 0.0)
    assert data["true_ego_pos"] == data["predicted_ego_pos"] == _f32(11.1, -3.3, 0, 0, 12.5, 0)
    assert data["ego_speed"] == float(np.float32(30.7))
    # Ego at (11.1, -3.3): object 5 at (25.3, 3.1) is 15.6 m away, 9 at (-7.7, 30.3) is 38.5 m.
    assert list(data["vehicles"]) == [5]
    assert data["vehicles"][5] == {
        "angle": _f32(0.0, -88.8, 0.0),
        "center": [0.0, 0.0, 0.0],
        "extent": _f32(2.25, 0.95, 0.8),
        "location": _f32(25.3, 3.1, 0.8),
        "speed": 0.0,
    }
    # The RSU at the origin: 1 is 10.6 m away, 5 is 25.5 m, 2 is 40.9 m.
    rsu = yaml.safe_load((out / "-1" / "000068.yaml").read_text())
    assert rsu["RSU"] is True and list(rsu["vehicles"]) == [1]
    assert rsu["vehicles"][1]["speed"] == float(np.float32(30.7))
    assert (
        (out / "1" / "000068.pcd")
        .read_text()
        .startswith("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z rgb\n")
    )
    np.testing.assert_array_equal(read_pcd(out / "2" / "000072.pcd"), frames[2].agent(2).points)
    protocol = yaml.safe_load((out / "data_protocol.yaml").read_text())
    assert protocol["start_frame"] == 68 and protocol["cav_ids"] == [1, 2, -1]


def _arbitrary_frames(rng: np.random.Generator) -> list[Frame]:
    frames = []
    for k in range(2):
        agents = {}
        for agent_id in (3, 40):
            pose = pose_to_matrix([*rng.uniform(-300, 300, 3), *rng.uniform(-60, 60, 3)])
            points = rng.normal(0, 30, (50, 4)).astype(np.float32)
            agents[agent_id] = AgentObservation(agent_id, pose, points, speed=rng.uniform(0, 30))
        boxes = np.column_stack(
            [
                rng.uniform(-300, 300, (4, 3)),
                rng.uniform(1, 5, (4, 3)),
                rng.uniform(-np.pi, np.pi, 4),
            ]
        )
        objects = ObjectSet(np.array([40, 11, 3, 12]), boxes, ("car", "van", "car", "truck"))
        frames.append(Frame(0.7 + k * 0.25, 5 + k, agents, objects, ego_id=3))
    return frames


@pytest.mark.parametrize("encoding", ["ascii", "binary", "binary_compressed"])
def test_arbitrary_frames_read_back_as_canonical(tmp_path: Path, encoding: str) -> None:
    frames = _arbitrary_frames(np.random.default_rng(3))
    write_opv2v(frames, tmp_path / encoding, encoding=encoding)
    read = list(OPV2VScenario(tmp_path / encoding).frames())
    canonical = opv2v_canonical(frames)
    assert read == canonical and opv2v_canonical(canonical) == canonical
    for got, original in zip(read, frames, strict=True):
        for agent_id, agent in original.agents.items():
            back = got.agent(agent_id)
            np.testing.assert_allclose(back.lidar_pose, agent.lidar_pose, atol=2e-5)
            np.testing.assert_array_equal(back.vehicle_pose, back.lidar_pose)
            assert back.speed == pytest.approx(agent.speed, rel=1e-6)
            np.testing.assert_array_equal(back.points[:, :3], agent.points[:, :3])
            assert np.abs(back.points[:, 3] - np.clip(agent.points[:, 3], 0, 1)).max() <= 0.5 / 255
        order = np.argsort(original.objects.ids)
        assert got.objects.ids.tolist() == [3, 11, 12, 40]
        assert got.objects.categories == ("car",) * 4
        np.testing.assert_allclose(got.objects.boxes, original.objects.boxes[order], atol=2e-5)
    assert [(f.index, f.timestamp) for f in read] == [(0, 0.0), (1, 0.1)]


def test_intensity_field_keeps_exact_intensity(tmp_path: Path) -> None:
    frames = _arbitrary_frames(np.random.default_rng(4))
    write_opv2v(frames, tmp_path / "s", encoding="binary", intensity_field="intensity")
    read = OPV2VScenario(tmp_path / "s").frame(1)
    np.testing.assert_array_equal(read.agent(40).points, frames[1].agent(40).points)


def test_an_agent_object_nobody_else_lists_is_lost(tmp_path: Path) -> None:
    frame = _arbitrary_frames(np.random.default_rng(5))[0]
    alone = Frame(0.0, 0, {3: frame.agent(3)}, frame.objects, ego_id=3)
    write_opv2v([alone], tmp_path / "s")
    assert OPV2VScenario(tmp_path / "s").frame(0).objects.ids.tolist() == [11, 12, 40]


def test_writer_refusals(tmp_path: Path) -> None:
    frames = _arbitrary_frames(np.random.default_rng(6))
    with pytest.raises(ValueError, match="ego 40 would not be OpenCOOD's ego"):
        write_opv2v([Frame(0.0, 0, f.agents, f.objects, ego_id=40) for f in frames], tmp_path / "a")
    mixed = [frames[0], Frame(0.1, 1, frames[1].agents, frames[1].objects, ego_id=40)]
    with pytest.raises(ValueError, match=r"same ego, got egos \[3, 40\]"):
        write_opv2v(mixed, tmp_path / "b")
    with pytest.raises(ValueError, match="no frames"):
        write_opv2v([], tmp_path / "c")
    with pytest.raises(ValueError, match="do not fit 6 digits"):
        write_opv2v(frames, tmp_path / "d", start_frame=999_999)
    write_opv2v(frames, tmp_path / "e")
    with pytest.raises(FileExistsError, match="not empty"):
        write_opv2v(frames, tmp_path / "e")
