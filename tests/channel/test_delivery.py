"""Delivery queue: arrival order, maximum age, the log table and end-to-end determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from channel.codec import CodecConfig, GridHeader, decode_feature, encode_feature
from channel.delivery import LOG_SCHEMA, DeliveryQueue
from channel.links import LatencyConfig, LinkConfig, LinkModel, RangeConfig
from channel.pose_error import PoseErrorConfig, PoseNoise
from channel.presets import load_preset

GRID = GridHeader(0.0, 0.0, 8.0, 4.0, 0.5)  # 8 x 16 cells


def _queue(max_age_s: float | None = None, **link: object) -> DeliveryQueue:
    return DeliveryQueue(LinkModel(LinkConfig(**link), seed=0), max_age_s)


def test_equal_arrivals_tie_break_by_send_time_sender_and_seq() -> None:
    q = _queue(bandwidth_mbps=1.0)
    q.send(12_500, 5, 0, 0.0)  # on the air 0.0 -> 0.1
    q.send(0, 2, 0, 0.1)  # arrives at 0.1 too, sent later
    q.send(0, 3, 0, 0.1)
    q.send(0, 1, 0, 0.1)
    q.send(0, 1, 0, 0.1)
    got = [(d.record.sender, d.record.seq) for d in q.arrived(0, 0.1)]
    assert got == [(5, 0), (1, 3), (1, 4), (2, 1), (3, 2)]


def test_arrived_hands_over_each_message_once_in_time() -> None:
    q = _queue(latency=LatencyConfig(base_s=0.05))
    q.send(100, 1, 9, 0.0)
    q.send(100, 1, 8, 0.0)
    assert q.arrived(9, 0.04) == [] and q.in_flight() == 2
    (d,) = q.arrived(9, 0.05)
    assert d.message is None and d.record.t_arrival == 0.05 and d.record.t_delivered == 0.05
    assert q.arrived(9, 1.0) == [] and q.in_flight(9) == 0 and q.in_flight(8) == 1


def test_receiver_drops_messages_older_than_max_age() -> None:
    q = _queue(max_age_s=0.2, latency=LatencyConfig(base_s=0.05))
    q.send(100, 1, 0, 0.0)
    q.send(100, 2, 0, 0.1)
    # At t=0.3 the first is 0.3 s old (too old), the second exactly 0.2 s (kept).
    (d,) = q.arrived(0, 0.1 + 0.2)
    assert d.record.sender == 2 and d.record.dropped is None
    first = q.records[0]
    assert first.dropped == "too_old" and first.t_delivered == pytest.approx(0.3)


def test_log_table_schema_rows_and_parquet(tmp_path: Path) -> None:
    q = _queue(
        max_age_s=0.15,
        range=RangeConfig(max_m=100.0),
        latency=LatencyConfig(base_s=0.01),
        bandwidth_mbps=10.0,
    )
    f = np.maximum(np.random.default_rng(0).normal(size=(4, 8, 16)), 0).astype(np.float32)
    msg = encode_feature(f, np.eye(4), 0.0, 1, GRID, CodecConfig("int8"))
    noise = PoseNoise(dx=0.2, dy=-0.1, dyaw=0.01)
    q.send(msg, 1, 2, 0.0, (0, 0), (30, 40), pose_noise=noise)
    q.send(msg, 1, 3, 0.0, (0, 0), (300, 0))
    q.send(5000, 1, 2, 0.1, raw_bytes=2048)
    (d,) = q.arrived(2, 0.1)
    assert d.message == msg and decode_feature(d.message).header.sender_id == 1
    assert q.arrived(2, 0.3) == []  # the 5000-byte one is 0.2 s old by now
    table = q.log_table()
    assert table.schema == LOG_SCHEMA and table.num_rows == 3
    rows = table.to_pylist()
    tx = 8 * len(msg) / 10e6
    assert rows[0] == {
        "seq": 0,
        "sender": 1,
        "receiver": 2,
        "t_send": 0.0,
        "t_arrival": pytest.approx(tx + 0.01),
        "t_delivered": 0.1,
        "raw_bytes": 4 * 8 * 16 * 4,
        "wire_bytes": len(msg),
        "distance_m": 50.0,
        "pose_dx": 0.2,
        "pose_dy": -0.1,
        "pose_dyaw": 0.01,
        "dropped": None,
        "tx": 0,
        "t_tx_start": 0.0,
        "t_tx_end": pytest.approx(tx),
    }
    assert (rows[1]["dropped"], rows[1]["t_arrival"], rows[1]["t_delivered"]) == (
        "out_of_range",
        None,
        None,
    )
    assert (rows[2]["dropped"], rows[2]["raw_bytes"], rows[2]["wire_bytes"]) == (
        "too_old",
        2048,
        5000,
    )
    assert rows[2]["t_arrival"] == pytest.approx(0.1 + 5000 * 8 / 10e6 + 0.01)
    path = q.write_log(tmp_path / "log.parquet")
    assert pq.read_table(path).equals(table)


def _simulate(seed: int) -> tuple[list, list[bytes]]:
    """A small multi-agent run on the bursty preset: 4 agents, 30 ticks, all egos."""
    cfg = load_preset("bursty").with_pose_error(PoseErrorConfig.level(0.4))
    queue, poses = cfg.make_queue(seed), cfg.make_pose_model(seed)
    rng = np.random.default_rng(seed)
    codec = CodecConfig("float16", {"topk": 0.3})
    received: list[bytes] = []
    for tick in range(30):
        t = tick * 0.1
        for s in range(4):
            feature = np.maximum(rng.normal(size=(2, 8, 16)), 0).astype(np.float32)
            reported, noise = poses.perturb(s, np.eye(4))
            msg = encode_feature(feature, reported, t, s, GRID, codec)
            for r in range(4):
                if r != s:
                    queue.send(msg, s, r, t, (110.0 * s, 0.0), (110.0 * r, 0.0), pose_noise=noise)
        for r in range(4):
            received += [d.message for d in queue.arrived(r, t)]
    return queue.log_table().to_pylist(), received


def test_same_seed_same_events_and_bytes() -> None:
    log_a, bytes_a = _simulate(3)
    log_b, bytes_b = _simulate(3)
    assert log_a == log_b and bytes_a == bytes_b
    assert len(log_a) == 30 * 4 * 3 and len(bytes_a) > 100
    assert len({row["pose_dx"] for row in log_a}) > 100  # pose noise drawn per sender per tick
    reasons = {row["dropped"] for row in log_a}
    assert {"out_of_range", "lost", None} <= reasons  # 0 and 3 are 330 m apart
    log_c, _ = _simulate(4)
    assert log_c != log_a
