"""SyntheticSource: the FrameSource contract, determinism, frame content, occlusion in the world."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import scenarios.synthetic as synthetic
from scenarios.frame import Frame
from scenarios.geometry import points_in_boxes
from scenarios.lidar_config import LidarConfig
from scenarios.scenario_file import BUILTIN_SCENARIOS, load_scenario
from scenarios.source import FrameSource
from scenarios.synthetic import SyntheticSource

SMALL_LIDAR = LidarConfig(channels=16, points_per_second=16 * 600 * 10, noise_stddev=0.02)


def _small(name: str = "intersection", **overrides: int) -> SyntheticSource:
    sc = dataclasses.replace(load_scenario(name), lidar=SMALL_LIDAR)
    return SyntheticSource(sc, **overrides)


def test_implements_the_frame_source_protocol() -> None:
    src = _small(num_frames=5)
    assert isinstance(src, FrameSource)
    assert (src.name, src.num_frames, src.rate_hz) == ("intersection", 5, 10.0)
    assert [f.index for f in src.frames(1, 4)] == [1, 2, 3]
    assert len(list(src.frames())) == 5
    with pytest.raises(IndexError):
        src.frame(5)


def test_default_frame_content() -> None:
    src = SyntheticSource.from_scenario("intersection", num_frames=3)
    f = src.frame(2)
    assert isinstance(f, Frame) and f.timestamp == pytest.approx(0.2) and f.index == 2
    assert f.agent_ids == [1, 2, 3, 4] and f.ego_id == 1
    assert len(f.objects) == 50 and set(f.agent_ids) <= set(f.objects.ids.tolist())
    assert set(f.objects.categories) <= {"car", "van", "truck"}
    assert set(f.objects.hits) == set(f.agent_ids)
    mount = src.scenario.lidar.mount_height
    for a, obs in f.agents.items():
        row = int(np.flatnonzero(f.objects.ids == a)[0])
        box = f.objects.boxes[row]
        assert obs.points.dtype == np.float32 and 40_000 < len(obs.points) <= 57_600
        np.testing.assert_allclose(obs.lidar_pose[:2, 3], box[:2])
        np.testing.assert_allclose(obs.lidar_pose[2, 3] - obs.vehicle_pose[2, 3], mount)
        np.testing.assert_allclose(obs.lidar_pose[:3, :3], obs.vehicle_pose[:3, :3])
        assert np.arctan2(obs.lidar_pose[1, 0], obs.lidar_pose[0, 0]) == pytest.approx(box[6])
        assert f.objects.hits[a][row] == 0  # own body returns nothing
        assert 0.0 <= obs.speed < 16.0
        assert np.linalg.norm(obs.points[:, :3], axis=1).max() <= 120.0


def test_hit_counts_agree_with_points_in_boxes() -> None:
    src = _small(num_frames=1)
    f = src.frame(0)
    for a, obs in f.agents.items():
        pose = obs.lidar_pose
        world = obs.points[:, :3].astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]
        grown = f.objects.boxes.copy()
        grown[:, 3:6] += 0.2  # covers range noise (0.02 m sigma)
        inside = points_in_boxes(world, grown).sum(axis=0)
        hits = f.objects.hits[a]
        assert hits.sum() > 100
        assert np.all(np.abs(inside - hits) <= np.maximum(3, 0.05 * hits))


def test_same_seed_same_frames_and_random_access(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "CHECKPOINT_EVERY", 4)
    a, b = _small(num_frames=10, seed=3), _small(num_frames=10, seed=3)
    run = list(a.frames())
    assert b.frame(9) == run[9]  # jump ahead
    assert b.frame(2) == run[2]  # back, re-simulated from a checkpoint
    assert b.frame(6) == run[6]
    assert a.frame(0) == run[0]
    assert run[9] != run[8]
    other = _small(num_frames=10, seed=4).frame(9)
    assert not np.array_equal(other.objects.boxes, run[9].objects.boxes)


def test_overrides_and_their_validation() -> None:
    src = _small(num_cavs=6, num_frames=2, seed=11)
    f = src.frame(1)
    assert f.agent_ids == [1, 2, 3, 4, 5, 6] and src.scenario.seed == 11
    for bad in (1, 8):
        with pytest.raises(ValueError, match="num_cavs"):
            _small(num_cavs=bad)
    with pytest.raises(ValueError, match="num_frames"):
        _small(num_frames=0)


@pytest.mark.parametrize("name", sorted(BUILTIN_SCENARIOS))
def test_every_builtin_produces_frames(name: str) -> None:
    src = _small(name, num_frames=3)
    for f in src.frames():
        assert 2 <= len(f.agents) <= 7 and f.ego_id == min(f.agent_ids)
        assert all(len(obs.points) > 1000 for obs in f.agents.values())
        assert all(f.objects.hits[a].sum() > 0 for a in f.agent_ids)


def test_buildings_hide_cross_traffic_so_cooperation_adds_objects() -> None:
    f = SyntheticSource.from_scenario("intersection", num_frames=1).frame(0)
    ids = f.objects.ids
    seen_by = {a: set(ids[f.objects.hits[a] >= 5].tolist()) - {a} for a in f.agent_ids}
    union = set().union(*seen_by.values())
    near = ids[np.hypot(f.objects.boxes[:, 0], f.objects.boxes[:, 1]) < 60.0]
    hidden_from_ego = set(near.tolist()) - seen_by[f.ego_id] - {f.ego_id}
    assert len(union) > len(seen_by[f.ego_id]) + 5
    assert len(hidden_from_ego & union) >= 3  # close to the junction, seen only by others
