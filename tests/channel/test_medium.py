"""The shared medium: air-time arithmetic, carrier sense, back-off freezing, hidden terminals,
the one-message transmit queue, and the busy ratio, all with hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from channel.broadcast import TX_SCHEMA, BroadcastChannel
from channel.links import LatencyConfig, LinkConfig, LinkModel, RangeConfig
from channel.medium import Medium, MediumConfig
from channel.presets import load_preset

# 802.11p-like numbers (dsrc preset) without back-off, so every start is hand-computable.
DSRC_LIKE = MediumConfig(
    carrier_sense_m=300.0,
    max_frame_bytes=1500,
    frame_header_bytes=36,
    phy_overhead_s=40e-6,
    sifs_s=32e-6,
    aifs_s=110e-6,
    slot_s=13e-6,
    cw=0,
)
US = 1e-6


def _channel(
    medium: MediumConfig = DSRC_LIKE,
    seed: int = 0,
    max_age_s: float | None = None,
    range_m: float | None = 300.0,
) -> BroadcastChannel:
    link = LinkConfig(
        range=RangeConfig(max_m=range_m), latency=LatencyConfig(base_s=0.02), bandwidth_mbps=6.0
    )
    return BroadcastChannel(LinkModel(link, seed), medium, max_age_s, seed)


def test_air_time_arithmetic() -> None:
    # 3,000 B = 2 frames: 2 x (40 us PHY + 36 B x 8 / 6 Mbps = 48 us) + 3,000 B x 8 / 6 Mbps
    # (4,000 us) + one SIFS (32 us) between the frames = 4,208 us.
    assert DSRC_LIKE.frames(3000) == 2 and DSRC_LIKE.frames(1500) == 1
    assert DSRC_LIKE.frames(1501) == 2 and DSRC_LIKE.frames(0) == 1
    assert DSRC_LIKE.air_time(3000, 6.0) == pytest.approx(4208 * US)
    assert DSRC_LIKE.air_time(1500, 6.0) == pytest.approx((40 + 48 + 2000) * US)
    assert DSRC_LIKE.air_time(3000, None) == 0.0
    assert MediumConfig().air_time(3000, 6.0) == pytest.approx(4000 * US)


def test_two_senders_in_carrier_sense_range_share_the_medium() -> None:
    ch = _channel()
    ch.update(0.0, {1: (0.0, 0.0), 2: (50.0, 0.0), 3: (25.0, 0.0)})
    first, _ = ch.broadcast(3000, 1, 0.0, [3])
    ch.update(0.001, {})
    second, _ = ch.broadcast(3000, 2, 0.001, [3])  # queued while the first is on the air
    got = {d.record.sender: d.record for d in ch.arrived(3, 0.1)}
    # first: AIFS, then 4,208 us on the air; arrives 20 ms later.
    assert (first.start, first.end) == pytest.approx((110 * US, 4318 * US))
    # second: waits for the first to end, then its own AIFS and air time.
    assert (second.start, second.end) == pytest.approx((4428 * US, 8636 * US))
    assert got[1].t_arrival == pytest.approx(0.020 + 4318 * US)
    assert got[2].t_arrival == pytest.approx(0.020 + 8636 * US)
    assert got[2].t_tx_start == pytest.approx(4428 * US) and got[2].dropped is None


def test_back_off_is_frozen_while_the_medium_is_busy() -> None:
    cfg = MediumConfig(aifs_s=110 * US, slot_s=13 * US, cw=15)
    seed = next(s for s in range(100) if _draws(cfg, s)[0] < _draws(cfg, s)[1])
    medium = Medium(cfg, 6.0, seed)
    medium.set_positions({1: (0.0, 0.0), 2: (10.0, 0.0)})
    a, _ = medium.submit(1, 0.0, 1500)
    b, _ = medium.submit(2, 0.0, 1500)
    medium.advance(1.0)
    air = 2000 * US
    assert a.start == pytest.approx(110 * US + a.backoff_slots * 13 * US)
    assert a.end == pytest.approx(a.start + air)
    # b counted a.backoff_slots slots before a took the medium, then finishes the rest.
    rest = b.backoff_slots - a.backoff_slots
    assert b.start == pytest.approx(a.end + 110 * US + rest * 13 * US)


def _draws(cfg: MediumConfig, seed: int) -> tuple[int, int]:
    medium = Medium(cfg, 6.0, seed)
    return medium.submit(1, 0.0, 10)[0].backoff_slots, medium.submit(2, 0.0, 10)[0].backoff_slots


def test_senders_out_of_carrier_sense_range_transmit_in_parallel() -> None:
    """Hidden terminals: 500 m apart (carrier sense 300 m) they both start after AIFS; a
    listener within range of both gets neither, one near a single sender gets its message."""
    ch = _channel()
    ch.update(0.0, {1: (0.0, 0.0), 2: (500.0, 0.0), 3: (250.0, 0.0), 4: (-50.0, 0.0)})
    a, _ = ch.broadcast(3000, 1, 0.0, [3, 4])
    b, _ = ch.broadcast(3000, 2, 0.0, [3, 4])
    ch.arrived(3, 0.1)
    assert (a.start, a.end) == pytest.approx((110 * US, 4318 * US))
    assert (b.start, b.end) == pytest.approx((110 * US, 4318 * US))
    outcome = {(r.sender, r.receiver): r.dropped for r in ch.records}
    assert outcome == {
        (1, 3): "collision",
        (1, 4): None,
        (2, 3): "collision",
        (2, 4): "out_of_range",
    }


def test_same_slot_starts_collide() -> None:
    """Two senders that hear each other and finish their back-off in the same slot."""
    ch = _channel()
    ch.update(0.0, {1: (0.0, 0.0), 2: (20.0, 0.0), 3: (10.0, 0.0)})
    ch.broadcast(1500, 1, 0.0, [2, 3])
    ch.broadcast(1500, 2, 0.0, [1, 3])
    ch.arrived(3, 0.1)
    assert sorted((r.sender, r.receiver, r.dropped) for r in ch.records) == [
        (1, 2, "collision"),
        (1, 3, "collision"),
        (2, 1, "collision"),
        (2, 3, "collision"),
    ]


def test_one_broadcast_is_one_transmission_and_three_receptions() -> None:
    ch = _channel()
    ch.update(0.0, {1: (0.0, 0.0), 2: (30.0, 0.0), 3: (0.0, 40.0), 4: (-50.0, 0.0)})
    ch.broadcast(3000, 1, 0.0, [1, 2, 3, 4])  # the sender does not hear itself
    for r in (2, 3, 4):
        (d,) = ch.arrived(r, 0.1)
        assert d.record.t_arrival == pytest.approx(0.020 + 4318 * US)
    txs = ch.transmission_table()
    assert txs.schema == TX_SCHEMA and txs.num_rows == 1
    assert txs.to_pylist()[0]["listeners"] == 3 and txs.to_pylist()[0]["frames"] == 2
    log = ch.log_table().to_pylist()
    assert [(r["tx"], r["receiver"], r["dropped"]) for r in log] == [
        (0, 2, None),
        (0, 3, None),
        (0, 4, None),
    ]
    assert ch.released() == [0]


def test_a_newer_message_replaces_the_unsent_one() -> None:
    ch = _channel()
    ch.update(0.0, {1: (0.0, 0.0), 2: (10.0, 0.0), 3: (20.0, 0.0)})
    big, _ = ch.broadcast(150_000, 1, 0.0, [3])  # 0.2 s on the air
    ch.update(0.001, {})
    older, replaced = ch.broadcast(3000, 2, 0.001, [3])
    assert replaced is None and older.status == "queued"
    ch.update(0.1, {})
    newer, replaced = ch.broadcast(3000, 2, 0.1, [3])
    assert replaced is older and older.status == "replaced" and older.start is None
    assert ch.released() == [older.seq]
    got = [(d.record.sender, d.record.t_send) for d in ch.arrived(3, 0.3)]
    assert got == [(1, 0.0), (2, 0.1)]
    assert newer.start == pytest.approx(big.end + 110 * US)
    status = ch.transmission_table().column("status").to_pylist()
    assert status == ["sent", "replaced", "sent"]


def test_a_message_queued_while_its_sender_transmits_waits() -> None:
    """The sender's previous message is on the air: the new one goes right after it, not
    replacing it (only unsent messages are replaced)."""
    ch = _channel()
    ch.update(0.0, {1: (0.0, 0.0), 3: (20.0, 0.0)})
    first, _ = ch.broadcast(150_000, 1, 0.0, [3])
    ch.update(0.1, {})
    second, replaced = ch.broadcast(3000, 1, 0.1, [3])
    assert replaced is None
    ch.arrived(3, 0.5)
    assert second.start == pytest.approx(first.end + 110 * US)


def test_busy_ratio_per_vehicle_and_tick() -> None:
    ch = _channel()
    ch.update(0.0, {1: (0.0, 0.0), 2: (100.0, 0.0), 3: (1000.0, 0.0)})
    ch.broadcast(3000, 1, 0.0, [2])
    ch.arrived(2, 0.1)
    rows = {r["vehicle"]: r for r in ch.busy_table(0.1).to_pylist()}
    assert rows[1]["busy_ratio"] == pytest.approx(4208 * US / 0.1) and rows[1]["heard"] == 1
    assert rows[2]["busy_ratio"] == pytest.approx(4208 * US / 0.1)
    assert rows[3]["busy_ratio"] == 0.0 and rows[3]["heard"] == 0


def test_busy_ratio_counts_overlaps_once_and_clips_to_the_tick() -> None:
    ch = _channel()
    ch.update(0.0, {1: (0.0, 0.0), 2: (400.0, 0.0), 3: (200.0, 0.0)})
    ch.broadcast(150_000, 1, 0.0, [3])  # 0.2 s: spans two ticks
    ch.broadcast(150_000, 2, 0.0, [3])  # hidden from 1, in parallel
    ch.update(0.1, {})
    ch.arrived(3, 0.2)
    rows = {(r["t"], r["vehicle"]): r["busy_ratio"] for r in ch.busy_table(0.1).to_pylist()}
    assert rows[(0.0, 3)] == pytest.approx((0.1 - 110 * US) / 0.1)  # both, counted once
    assert rows[(0.1, 3)] == pytest.approx(1.0)


def test_same_seed_same_events() -> None:
    cfg = MediumConfig(carrier_sense_m=300.0, aifs_s=110 * US, slot_s=13 * US, cw=15)

    def run(seed: int) -> list[dict]:
        ch = _channel(cfg, seed)
        for k in range(20):
            t = 0.1 * k
            ch.update(t, {1: (0.0, 0.0), 2: (30.0, 5.0), 3: (60.0, 0.0), 4: (90.0, -5.0)})
            for s in (1, 2, 3, 4):
                ch.broadcast(20_000 + 1000 * s, s, t, [1, 2, 3, 4])
            for r in (1, 2, 3, 4):
                ch.arrived(r, t + 0.1)
        return ch.log_table().to_pylist() + ch.transmission_table().to_pylist()

    assert run(3) == run(3)
    assert run(3) != run(4)


def _latencies(records: list, t_max: float | None = None) -> list[float]:
    return [
        r.t_arrival - r.t_send
        for r in records
        if r.t_arrival is not None and (t_max is None or r.t_send < t_max)
    ]


def test_latency_stays_bounded_when_messages_exceed_the_channel() -> None:
    """dsrc, 3 vehicles each sending 80 kB at 10 Hz: 3 x 110 ms of air time per 100 ms tick,
    more than the channel carries. With one-message queues the p99 latency stays below the
    maximum age and does not grow with the run; with the point-to-point per-link queues it
    grows with every tick (each link alone needs 107 ms per 100 ms tick)."""
    cfg = load_preset("dsrc")
    ch, old = cfg.make_channel(seed=0), cfg.make_queue(seed=0)
    where = {1: (0.0, 0.0), 2: (40.0, 0.0), 3: (0.0, 40.0)}
    for k in range(200):
        t = round(0.1 * k, 10)
        ch.update(t, where)
        for s in where:
            ch.broadcast(80_000, s, t, where)
            for r in where:
                if r != s:
                    old.send(80_000, s, r, t, where[s], where[r])
        for r in where:
            ch.arrived(r, t + 0.1)
            old.arrived(r, t + 0.1)
    p99 = float(np.percentile(_latencies(ch.records), 99))
    p99_early = float(np.percentile(_latencies(ch.records, 5.0), 99))
    assert p99 < cfg.max_age_s
    assert p99 == pytest.approx(p99_early, abs=0.05)  # 200 ticks no worse than the first 50
    txs = ch.transmission_table().to_pylist()
    assert sum(t["status"] == "replaced" for t in txs) > 200  # the queue drops stale maps
    busy = ch.busy_table(0.1).column("busy_ratio").to_pylist()
    assert np.mean(busy[3:]) > 0.95  # saturated
    old_p99 = float(np.percentile(_latencies(old.records), 99))
    assert old_p99 > 1.0 and old_p99 > 2 * float(np.percentile(_latencies(old.records, 5.0), 99))
