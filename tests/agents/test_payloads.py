"""Early and late fusion over the channel at the ego: hand-built points and boxes moved by a
known reported pose, a held (stale) message placed with its send-time pose, and tampered,
truncated, NaN or oversized messages rejected with a reason while the ego detects alone."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zstandard

import agents.payloads
import models.inference
from agents.payloads import (
    Neighbour,
    make_payload,
    neighbour_to_ego,
    payload_kind,
    receive,
)
from agents.steps import Inbound, Vehicle, VehicleSpec
from channel import CodecConfig, PoseErrorConfig, PoseErrorModel, encode_feature
from channel.payload_codec import decode_boxes, decode_cloud, encode_boxes, encode_cloud
from channel.wire import _digest
from models.head import Detections
from scenarios.frame import Frame
from scenarios.geometry import boxes_to_frame
from scenarios.source import open_source
from tests.agents.helpers import tiny_model, write_small_scenario

# The sender reported itself at (10, -3, 0), turned 90 degrees left; the ego is at (4, 1, 0).
SENDER_POSE = np.array(
    [[0.0, -1.0, 0.0, 10.0], [1.0, 0.0, 0.0, -3.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
EGO_POSE = np.eye(4)
EGO_POSE[:3, 3] = (4.0, 1.0, 0.0)


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list[Frame]:
    path = write_small_scenario(tmp_path_factory.mktemp("payloads") / "small.yaml")
    source = open_source(path, num_frames=2)
    return [source.frame(i) for i in range(2)]


def _nearest(frame: Frame) -> int:
    """The neighbour nearest the ego (within the tiny model's 70 m comm range)."""
    centre = frame.agent(frame.ego_id).lidar_pose[:2, 3]
    others = [a for a in frame.agent_ids if a != frame.ego_id]
    return min(others, key=lambda a: np.hypot(*(frame.agent(a).lidar_pose[:2, 3] - centre)))


def test_payload_kind_by_fusion() -> None:
    assert [payload_kind(f) for f in ("early", "late", "max", "attention", "agf", "none")] == [
        "points",
        "boxes",
        "map",
        "map",
        "map",
        "map",
    ]


def test_points_are_moved_into_the_ego_frame_with_the_reported_pose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payload = make_payload(tiny_model("early"), CodecConfig(), PoseErrorConfig())
    cloud = np.array([[1.0, 0.0, 0.0, 0.5], [0.0, 2.0, -1.0, 1.0]], np.float32)
    got = receive(payload, encode_cloud(cloud, SENDER_POSE, 0.1, 3), 3, 0.1, EGO_POSE)
    assert got.status == "ok"
    np.testing.assert_array_equal(got.sender_pose, SENDER_POSE)
    seen: list[np.ndarray] = []
    encode = models.inference.encode_points
    monkeypatch.setattr(
        models.inference, "encode_points", lambda model, pts: seen.append(pts) or encode(model, pts)
    )
    own = np.array([[-5.0, 0.0, 0.0, 0.25]], np.float32)
    result = payload.detect(own, [Neighbour(got.item, neighbour_to_ego(got.sender_pose, EGO_POSE))])
    (merged,) = seen
    # world = R (x, y, z) + (10, -3, 0); ego = world - (4, 1, 0); the ego's own points first.
    np.testing.assert_allclose(
        merged, [[-5, 0, 0, 0.25], [6, -3, 0, 128 / 255], [4, -4, -1, 1.0]], atol=1e-6
    )
    assert result.chosen.tolist() == [0]


def test_boxes_are_moved_into_the_ego_frame_and_merged() -> None:
    payload = make_payload(tiny_model("late"), CodecConfig(), PoseErrorConfig())
    theirs = np.array([[1.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.1]], np.float32)
    message = encode_boxes(theirs, [0.8], SENDER_POSE, 0.1, 3)
    assert len(message) < 300
    got = receive(payload, message, 3, 0.1, EGO_POSE)
    assert got.status == "ok"
    own = Detections(
        np.array([[-10.0, 5.0, -1.0, 4.0, 2.0, 1.5, 0.0]], np.float32), np.array([0.9], np.float32)
    )
    result = payload.detect(own, [Neighbour(got.item, neighbour_to_ego(SENDER_POSE, EGO_POSE))])
    np.testing.assert_allclose(
        result.detections.boxes,
        [[-10, 5, -1, 4, 2, 1.5, 0], [6, -3, -1, 4, 2, 1.5, 0.1 + np.pi / 2]],
        atol=1e-5,
    )
    np.testing.assert_allclose(result.detections.scores, [0.9, 0.8])
    assert result.chosen.tolist() == [0]


def test_a_held_boxes_message_is_placed_with_its_send_time_pose(frames: list[Frame]) -> None:
    """Sent at tick 0, fused again at tick 1 from the ego's buffer: moved with the sender's
    reported pose of tick 0 and the ego's pose of tick 1 (not extrapolated)."""
    ego_id = frames[0].ego_id
    sender_id = _nearest(frames[0])
    ego = Vehicle(ego_id, tiny_model("late"), VehicleSpec(max_age_s=0.5))
    sender_pose = frames[0].agent(sender_id).lidar_pose
    transform = neighbour_to_ego(sender_pose, frames[1].agent(ego_id).lidar_pose)
    want = np.array([[8.0, 3.0, -1.0, 4.0, 2.0, 1.5, 0.3]], np.float32)
    sent = boxes_to_frame(want, np.linalg.inv(transform))
    message = encode_boxes(sent, [1.0], sender_pose, 0.0, sender_id)
    first = ego.fuse(frames[0], 0, [(Inbound(0, sender_id, 0.0), message)])
    assert [r.status for r in first.receptions] == ["fused"]
    second = ego.fuse(frames[1], 1, [])
    (held,) = second.receptions
    assert (held.status, held.held, held.age_s) == ("fused", True, pytest.approx(0.1))
    top = int(np.argmax(second.scores))
    assert second.scores[top] == 1.0
    np.testing.assert_allclose(second.boxes[top], want[0], atol=1e-4)


def _resign(message: bytes, **changes: object) -> bytes:
    """The message with header fields changed and a valid checksum (a forger's)."""
    magic, version, header, payload, _ = msgpack.unpackb(message)
    h = {**msgpack.unpackb(header), **changes}
    header = msgpack.packb(h)
    return msgpack.packb([magic, version, header, payload, _digest(header, payload)])


def _far_pose() -> bytes:
    pose = np.eye(4)
    pose[0, 3] = 5.0e4
    return pose.astype("<f8").tobytes()


BOX = np.array([[5.0, 1.0, -1.0, 4.0, 2.0, 1.5, 0.2]], np.float32)


def _nan_boxes(sender: int, t: float) -> bytes:
    """A checksum-valid boxes message whose yaw is NaN (the encoder itself refuses NaN)."""
    message = encode_boxes(BOX, [0.5], np.eye(4), t, sender)
    magic, version, header, _, _ = msgpack.unpackb(message)
    bad = BOX.copy()
    bad[0, 6] = np.nan
    payload = zstandard.ZstdCompressor().compress(
        bad.astype("<f4").tobytes() + np.float32(0.5).tobytes()
    )
    return msgpack.packb([magic, version, header, payload, _digest(header, payload)])


ATTACKS = {
    "points_truncated": (
        "early",
        lambda s, t: encode_cloud(np.ones((50, 4), np.float32), np.eye(4), t, s)[:-9],
        "codec_error",
        "truncated",
    ),
    "points_wrong_sender": (
        "early",
        lambda s, t: encode_cloud(np.ones((5, 4), np.float32), np.eye(4), t, s + 1),
        "rejected",
        "header says sender",
    ),
    "points_far_pose": (
        "early",
        lambda s, t: _resign(
            encode_cloud(np.ones((5, 4), np.float32), np.eye(4), t, s), pose=_far_pose()
        ),
        "rejected",
        "beyond the 1000 m",
    ),
    "points_nan_pose": (
        "early",
        lambda s, t: _resign(
            encode_cloud(np.ones((5, 4), np.float32), np.eye(4), t, s),
            pose=np.full((4, 4), np.nan).astype("<f8").tobytes(),
        ),
        "codec_error",
        "NaN",
    ),
    "boxes_nan": ("late", _nan_boxes, "codec_error", "NaN/inf"),
    "boxes_huge": (
        "late",
        lambda s, t: encode_boxes(BOX * [1, 1, 1, 40, 1, 1, 1], [0.5], np.eye(4), t, s),
        "rejected",
        "size",
    ),
    "boxes_score_3": (
        "late",
        lambda s, t: encode_boxes(BOX, [3.0], np.eye(4), t, s),
        "rejected",
        "score 3 outside [0, 1]",
    ),
    "boxes_too_many": (
        "late",
        lambda s, t: encode_boxes(np.repeat(BOX, 21, 0), np.full(21, 0.5), np.eye(4), t, s),
        "codec_error",
        "oversized: 21 boxes, above the cap of 20",
    ),
    "boxes_old_send_time": (
        "late",
        lambda s, t: encode_boxes(BOX, [0.5], np.eye(4), t - 0.1, s),
        "rejected",
        "header says sent at",
    ),
    "map_to_a_late_ego": (
        "late",
        lambda s, t: encode_feature(
            np.zeros((24, 20, 40), np.float32),
            np.eye(4),
            t,
            s,
            agents.payloads.grid_header(tiny_model("late").message_grid),
        ),
        "codec_error",
        "not a v2x boxes message",
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_bad_points_and_boxes_messages_cost_only_that_message(
    frames: list[Frame], attack: str
) -> None:
    fusion, make, status, reason = ATTACKS[attack]
    frame = frames[0]
    sender = _nearest(frame)
    ego = Vehicle(frame.ego_id, tiny_model(fusion), VehicleSpec())
    alone = ego.fuse(frame, 0, [])
    result = ego.fuse(
        frame,
        0,
        [(Inbound(0, sender, float(frame.timestamp)), make(sender, float(frame.timestamp)))],
    )
    (reception,) = result.receptions
    assert (reception.status, reception.sender) == (status, sender)
    assert reason in reception.error
    np.testing.assert_array_equal(result.boxes, alone.boxes)
    np.testing.assert_array_equal(result.scores, alone.scores)


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_points_and_boxes_carry_the_reported_pose_with_its_error(
    frames: list[Frame], fusion: str
) -> None:
    error = PoseErrorConfig.level(0.6)
    frame = frames[0]
    sender = Vehicle(_nearest(frame), tiny_model(fusion), VehicleSpec(pose_error=error, seed=7))
    report, message = sender.sense(frame, 0)
    expect, _ = PoseErrorModel(error, 7).perturb(
        sender.agent_id, frame.agent(sender.agent_id).lidar_pose
    )
    decode = decode_cloud if fusion == "early" else decode_boxes
    decoded = decode(message)
    np.testing.assert_array_equal(decoded.header.pose, expect)
    np.testing.assert_array_equal(report.reported_pose, expect)
    assert report.wire_bytes == len(message) and report.raw_bytes == decoded.raw_nbytes
