"""The ego's age of information and header checks: a neighbour's newest map is fused again in
later ticks, placed with its send-time pose, until it is older than the maximum age; a header
that names another sender or send time than the channel's is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import agents.payloads
from agents.payloads import neighbour_to_ego
from agents.steps import Inbound, Vehicle, VehicleSpec
from channel import CodecConfig, PoseErrorConfig, decode_feature
from models.inference import detect_features
from models.received import NeighbourFeature
from scenarios.frame import Frame
from scenarios.source import open_source
from tests.agents.helpers import tiny_model, write_small_scenario


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list[Frame]:
    path = write_small_scenario(tmp_path_factory.mktemp("inbox") / "small.yaml")
    source = open_source(path, num_frames=4)
    return [source.frame(i) for i in range(4)]


def _pair(frame: Frame, spec: VehicleSpec) -> tuple[Vehicle, Vehicle, int]:
    model = tiny_model()
    centre = frame.agent(frame.ego_id).lidar_pose[:2, 3]
    others = [a for a in frame.agent_ids if a != frame.ego_id]
    sender_id = min(others, key=lambda a: np.hypot(*(frame.agent(a).lidar_pose[:2, 3] - centre)))
    return Vehicle(frame.ego_id, model, spec), Vehicle(sender_id, model, spec), sender_id


def test_a_held_message_is_fused_again_until_too_old(frames: list[Frame]) -> None:
    spec = VehicleSpec(codec=CodecConfig("float32"), max_age_s=0.25)
    ego, sender, sender_id = _pair(frames[0], spec)
    _, message = sender.sense(frames[0], 0)
    ego.fuse(frames[0], 0, [(Inbound(0, sender_id, 0.0), message)])
    # Tick 2: nothing arrived, the tick-0 map is 0.2 s old: fused from the buffer, placed with
    # the sender's pose at tick 0 and the ego's pose now.
    result = ego.fuse(frames[2], 2, [])
    (reception,) = result.receptions
    assert (reception.seq, reception.status, reception.held) == (0, "fused", True)
    assert reception.age_s == pytest.approx(0.2)
    decoded = decode_feature(message)
    own = ego.model.encode([frames[2].agent(frames[2].ego_id).points])[0]
    transform = neighbour_to_ego(
        frames[0].agent(sender_id).lidar_pose, frames[2].agent(frames[2].ego_id).lidar_pose
    )
    held = NeighbourFeature(torch.from_numpy(decoded.feature), transform, age_s=0.2, stale=True)
    expect = detect_features(ego.model, own, [[held]])[0].detections
    np.testing.assert_array_equal(result.boxes, expect.boxes)
    # Tick 3: 0.3 s old, past the maximum age: forgotten.
    assert ego.fuse(frames[3], 3, []).receptions == ()


def test_a_late_older_message_does_not_replace_a_newer_held_one(frames: list[Frame]) -> None:
    spec = VehicleSpec(max_age_s=0.5)
    ego, sender, sender_id = _pair(frames[0], spec)
    _, old = sender.sense(frames[0], 0)
    _, new = sender.sense(frames[1], 1)
    ego.fuse(frames[1], 1, [(Inbound(7, sender_id, 0.1), new)])
    result = ego.fuse(frames[2], 2, [(Inbound(3, sender_id, 0.0), old)])
    assert [(r.seq, r.status, r.held) for r in result.receptions] == [
        (3, "superseded", False),
        (7, "fused", True),
    ]


def test_a_header_that_is_not_the_channels_is_refused(frames: list[Frame]) -> None:
    spec = VehicleSpec()
    ego, sender, sender_id = _pair(frames[0], spec)
    _, message = sender.sense(frames[0], 0)
    result = ego.fuse(
        frames[0],
        0,
        [(Inbound(0, sender_id + 100, 0.0), message), (Inbound(1, sender_id, 0.3), message)],
    )
    assert [r.status for r in result.receptions] == ["rejected"] * 2
    assert all(r.error for r in result.receptions)


def test_the_egos_own_pose_is_exact_and_only_neighbours_report_errors(
    frames: list[Frame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cosim run`` and ``cosim robustness`` agree: pose error is on what the neighbours
    report; the ego places them in its own true frame."""
    spec = VehicleSpec(pose_error=PoseErrorConfig.level(0.6), seed=3)
    ego, sender, sender_id = _pair(frames[0], spec)
    report, message = sender.sense(frames[0], 0)
    ego_report, _ = ego.sense(frames[0], 0)
    true_pose = frames[0].agent(ego.agent_id).lidar_pose
    assert not np.allclose(ego_report.reported_pose, true_pose)
    seen: list[np.ndarray] = []
    fuse = agents.payloads.fuse_and_detect

    def spy(model: object, own: object, neighbours: list, *refine: object) -> object:
        seen.extend(n.neighbour_to_ego for n in neighbours)
        return fuse(model, own, neighbours, *refine)

    monkeypatch.setattr(agents.payloads, "fuse_and_detect", spy)
    ego.fuse(frames[0], 0, [(Inbound(0, sender_id, 0.0), message)])
    (transform,) = seen
    np.testing.assert_allclose(transform, np.linalg.inv(true_pose) @ report.reported_pose)
