"""The vehicle and ego steps as plain code (no Ray): codec round trip, reported poses, stale
messages, bad messages, newest-per-sender, sensor corruption."""

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.payloads import neighbour_to_ego
from agents.steps import Inbound, Vehicle, VehicleSpec, sense_points
from channel import CodecConfig, PoseErrorConfig, PoseErrorModel, decode_feature, peek_header
from models.checkpoint import load_checkpoint
from models.detector import CooperativeDetector
from models.inference import detect_features, encode_points, fuse_and_detect
from models.received import NeighbourFeature
from scenarios.frame import Frame
from scenarios.source import open_source
from tests.agents.helpers import (
    tiny_config,
    tiny_model,
    write_small_scenario,
    write_tiny_diffkd_checkpoint,
)


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list[Frame]:
    path = write_small_scenario(tmp_path_factory.mktemp("steps") / "small.yaml")
    source = open_source(path, num_frames=3)
    return [source.frame(i) for i in range(3)]


def _pair(frame: Frame, spec: VehicleSpec) -> tuple[Vehicle, Vehicle, int]:
    model = tiny_model()
    ego_id = frame.ego_id
    centre = frame.agent(ego_id).lidar_pose[:2, 3]
    others = [a for a in frame.agent_ids if a != ego_id]
    sender_id = min(others, key=lambda a: np.hypot(*(frame.agent(a).lidar_pose[:2, 3] - centre)))
    return Vehicle(ego_id, model, spec), Vehicle(sender_id, model, spec), sender_id


def test_fuse_and_detect_matches_detect_features(frames: list[Frame]) -> None:
    torch.manual_seed(0)  # a long comm range so both neighbours, one sparse, are fused
    model = CooperativeDetector(dataclasses.replace(tiny_config(), comm_range=200.0)).eval()
    frame = frames[0]
    feats = model.encode([frame.agent(a).points for a in frame.agent_ids])
    mask = np.zeros(model.grid.bev_shape, bool)
    mask[:, ::2] = True
    nbrs = [
        NeighbourFeature(feats[i], frame.transform(a, frame.ego_id), mask if i == 1 else None)
        for i, a in enumerate(frame.agent_ids)
        if i > 0
    ]
    result = fuse_and_detect(model, feats[0], nbrs)
    expect = detect_features(model, feats[0], [nbrs])[0]
    assert len(result.detections.scores) > 0
    np.testing.assert_array_equal(result.detections.boxes, expect.detections.boxes)
    np.testing.assert_array_equal(result.detections.scores, expect.detections.scores)
    assert set(result.timings) == {"refine", "fuse", "head"}
    assert len(result.chosen) == 2
    assert 1 <= result.coverage.max() <= 2


def test_stale_message_is_placed_with_its_send_time_pose(frames: list[Frame]) -> None:
    """A message from tick 0 fused at tick 1 uses the sender's pose at tick 0."""
    spec = VehicleSpec(codec=CodecConfig("float32"))
    ego, sender, sender_id = _pair(frames[0], spec)
    report, message = sender.sense(frames[0], 0)
    assert report.wire_bytes == len(message) > 0
    ego.sense(frames[1], 1)
    result = ego.fuse(frames[1], 1, [(Inbound(0, sender_id, 0.0), message)])
    (reception,) = result.receptions
    assert reception.status == "fused"
    assert reception.age_s == pytest.approx(0.1)
    decoded = decode_feature(message)
    old_pose = frames[0].agent(sender_id).lidar_pose
    np.testing.assert_array_equal(decoded.header.pose, old_pose)
    ego_pose = frames[1].agent(frames[1].ego_id).lidar_pose
    transform = neighbour_to_ego(old_pose, ego_pose)
    np.testing.assert_allclose(transform, np.linalg.inv(ego_pose) @ old_pose)
    assert not np.allclose(transform, frames[1].transform(sender_id, frames[1].ego_id), atol=1e-3)
    own = ego.model.encode([frames[1].agent(frames[1].ego_id).points])[0]
    received = NeighbourFeature(torch.from_numpy(decoded.feature), transform, age_s=0.1, stale=True)
    expect = detect_features(ego.model, own, [[received]])[0].detections
    np.testing.assert_array_equal(result.boxes, expect.boxes)


def test_reported_pose_carries_the_pose_error(frames: list[Frame]) -> None:
    error = PoseErrorConfig.level(0.6)
    spec = VehicleSpec(pose_error=error, seed=7)
    _, sender, sender_id = _pair(frames[0], spec)
    report, message = sender.sense(frames[0], 0)
    true_pose = frames[0].agent(sender_id).lidar_pose
    expect, noise = PoseErrorModel(error, 7).perturb(sender_id, true_pose)
    np.testing.assert_array_equal(peek_header(message).pose, expect)
    np.testing.assert_array_equal(report.reported_pose, expect)
    assert report.noise == noise
    assert np.hypot(noise.dx, noise.dy) > 0


def test_undecodable_and_missing_messages_are_skipped(frames: list[Frame]) -> None:
    spec = VehicleSpec(codec=CodecConfig("int8", {"topk": 0.3}))
    ego, sender, sender_id = _pair(frames[0], spec)
    _, message = sender.sense(frames[0], 0)
    ego.sense(frames[0], 0)
    alone = ego.fuse(frames[0], 0, [])
    bad = [
        (Inbound(0, sender_id, 0.0), message[: len(message) // 2]),
        (Inbound(1, 90, 0.0), b"\x00garbage"),
        (Inbound(2, 91, 0.0), None),
    ]
    result = ego.fuse(frames[0], 0, bad)
    assert [r.status for r in result.receptions] == ["codec_error"] * 3
    assert all(r.error for r in result.receptions)
    np.testing.assert_array_equal(result.boxes, alone.boxes)
    np.testing.assert_array_equal(result.scores, alone.scores)


def test_newest_message_per_sender_wins(frames: list[Frame]) -> None:
    spec = VehicleSpec()
    ego, sender, sender_id = _pair(frames[0], spec)
    _, old = sender.sense(frames[0], 0)
    _, new = sender.sense(frames[1], 1)
    ego.sense(frames[1], 1)
    result = ego.fuse(
        frames[1], 1, [(Inbound(5, sender_id, 0.1), new), (Inbound(2, sender_id, 0.0), old)]
    )
    assert [(r.seq, r.status) for r in result.receptions] == [(2, "superseded"), (5, "fused")]


def test_ego_senses_again_after_a_restart(frames: list[Frame]) -> None:
    """A fresh vehicle (as after an actor restart) can take the ego role without sense()."""
    spec = VehicleSpec()
    ego, _, _ = _pair(frames[0], spec)
    fresh = Vehicle(ego.agent_id, ego.model, spec)
    ego.sense(frames[2], 2)
    a, b = ego.fuse(frames[2], 2, []), fresh.fuse(frames[2], 2, [])
    np.testing.assert_array_equal(a.boxes, b.boxes)


def test_sensor_corruption_is_seeded(frames: list[Frame], tmp_path: Path) -> None:
    obs = frames[0].agent(frames[0].ego_id)
    spec = VehicleSpec(corruption="beam_missing", severity=3, seed=3)
    a, b = sense_points(obs, 0, spec), sense_points(obs, 0, spec)
    np.testing.assert_array_equal(a, b)
    assert 0 < len(a) < 0.5 * len(obs.points)
    other = sense_points(obs, 1, spec)
    assert not (len(other) == len(a) and np.array_equal(other, a))
    assert sense_points(obs, 0, VehicleSpec()) is obs.points


def test_an_empty_ego_cloud_still_detects_with_the_refiner(frames: list[Frame]) -> None:
    """No ego points (a dead LiDAR): the refiner and fusion run on an all-zero map."""
    with tempfile.TemporaryDirectory() as folder:
        model, _, _ = load_checkpoint(write_tiny_diffkd_checkpoint(Path(folder) / "m.pt"))
    empty = np.zeros((0, 4), np.float32)
    own = encode_points(model, empty)
    assert own.shape == model.message_shape and float(own.abs().sum()) == 0.0
    frame = frames[0]
    sender = frame.agent_ids[1]
    nbr = encode_points(model, frame.agent(sender).points)
    result = fuse_and_detect(
        model, own, [NeighbourFeature(nbr, frame.transform(sender, frame.ego_id))], 2
    )
    assert result.steps_run == 2 and 0.0 < result.gamma < 1.0
    assert np.isfinite(result.detections.scores).all()


def test_a_wider_message_window_is_sent_fused_and_checked(frames: list[Frame]) -> None:
    """With ``message_range`` the sender sends its whole window, the ego keeps the crop on its
    grid as its own map and fuses the neighbour's window; a map of the old window is refused
    as the wrong grid."""
    torch.manual_seed(0)
    config = dataclasses.replace(
        tiny_config(), fuse_at="encoder", comm_range=200.0, message_range=(-57.6, -41.6, 57.6, 41.6)
    )
    model = CooperativeDetector(config).eval()
    old = CooperativeDetector(dataclasses.replace(config, message_range=None)).eval()
    old.load_state_dict(model.state_dict())
    frame = frames[0]
    spec = VehicleSpec(codec=CodecConfig("float16", {"threshold": 0.0}))
    ego_id = frame.ego_id
    sender_id = next(a for a in frame.agent_ids if a != ego_id)
    ego, sender = Vehicle(ego_id, model, spec), Vehicle(sender_id, model, spec)
    ego.warm_up()
    _, message = sender.sense(frame, 0)
    assert peek_header(message).shape == model.message_shape == (8, 104, 144)
    _, old_message = Vehicle(sender_id, old, spec).sense(frame, 0)
    refused = Vehicle(ego_id, model, spec).fuse(
        frame, 0, [(Inbound(0, sender_id, 0.0), old_message)]
    )
    assert [r.status for r in refused.receptions] == ["wrong_grid"]
    result = ego.fuse(frame, 0, [(Inbound(0, sender_id, 0.0), message)])
    assert [r.status for r in result.receptions] == ["fused"]
    assert result.coverage.shape == model.map_grid.bev_shape == (40, 80)
    own = model.own_map(model.encode([frame.agent(ego_id).points]))[0]
    decoded = decode_feature(message)
    nbr = NeighbourFeature(
        torch.from_numpy(decoded.feature.copy()),
        neighbour_to_ego(decoded.header.pose, frame.agent(ego_id).lidar_pose),
        decoded.mask,
    )
    expect = detect_features(model, own, [[nbr]])[0].detections
    np.testing.assert_array_equal(result.boxes, expect.boxes)
