"""Link model: Gilbert-Elliott statistics, range, latency and queueing arithmetic, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from channel.links import LatencyConfig, LinkConfig, LinkModel, LossConfig, RangeConfig


def _send_many(model: LinkModel, n: int, sender: int = 1, receiver: int = 2) -> list:
    return [model.transmit(sender, receiver, 0.1 * i, 100) for i in range(n)]


def _run_lengths(flags: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in a boolean sequence."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[::2]


def test_gilbert_elliott_matches_theory_on_100k_messages() -> None:
    loss = LossConfig("gilbert_elliott", p_gb=0.05, p_bg=0.2, loss_good=0.02, loss_bad=0.7)
    theory = (0.05 * 0.7 + 0.2 * 0.02) / (0.05 + 0.2)
    assert loss.stationary_loss() == pytest.approx(theory) == pytest.approx(0.156)
    outcomes = _send_many(LinkModel(LinkConfig(loss=loss), seed=11), 100_000)
    lost = np.array([o.dropped == "lost" for o in outcomes])
    bad = np.array([o.ge_bad for o in outcomes])
    assert abs(lost.mean() - theory) < 0.012
    assert abs(bad.mean() - 0.05 / 0.25) < 0.015  # stationary P(bad) = p_gb / (p_gb + p_bg)
    assert abs(_run_lengths(bad).mean() - 1 / 0.2) < 0.3  # mean bad sojourn 1/p_bg = 5
    assert abs(_run_lengths(~bad).mean() - 1 / 0.05) < 1.2  # mean good sojourn 1/p_gb = 20
    # Per-state loss probabilities.
    assert abs(lost[bad].mean() - 0.7) < 0.02 and abs(lost[~bad].mean() - 0.02) < 0.005


def test_gilbert_elliott_loss_bursts_have_mean_length_one_over_p_bg() -> None:
    loss = LossConfig("gilbert_elliott", p_gb=0.02, p_bg=0.25, loss_good=0.0, loss_bad=1.0)
    outcomes = _send_many(LinkModel(LinkConfig(loss=loss), seed=5), 100_000)
    lost = np.array([o.dropped == "lost" for o in outcomes])
    assert abs(lost.mean() - 0.02 / 0.27) < 0.01
    assert abs(_run_lengths(lost).mean() - 4.0) < 0.25


def test_gilbert_elliott_state_is_per_link_and_persists() -> None:
    loss = LossConfig("gilbert_elliott", p_gb=1.0, p_bg=0.0 + 1e-12, loss_good=0.0, loss_bad=1.0)
    model = LinkModel(LinkConfig(loss=loss), seed=0)
    # First message on a link goes out in the good state, then the link turns bad and stays.
    assert [model.transmit(1, 2, t, 10).dropped for t in (0, 1, 2)] == [None, "lost", "lost"]
    assert model.transmit(1, 3, 3, 10).dropped is None  # a fresh link starts good
    assert model.transmit(1, 2, 4, 10).dropped == "lost"


def test_bernoulli_loss_rate() -> None:
    outcomes = _send_many(LinkModel(LinkConfig(loss=LossConfig("bernoulli", p=0.1)), 3), 20_000)
    assert abs(np.mean([o.dropped == "lost" for o in outcomes]) - 0.1) < 0.01


def test_serialization_and_per_link_queue_hand_computed() -> None:
    cfg = LinkConfig(latency=LatencyConfig(base_s=0.01), bandwidth_mbps=1.0)
    model = LinkModel(cfg, seed=0)
    # 12_500 bytes at 1 Mbps take 0.1 s on the air.
    a = model.transmit(1, 2, 0.0, 12_500)
    assert (a.tx_start, a.tx_end, a.arrival) == pytest.approx((0.0, 0.1, 0.11))
    b = model.transmit(1, 2, 0.05, 12_500)  # waits until the first one is out
    assert (b.tx_start, b.tx_end, b.arrival) == pytest.approx((0.1, 0.2, 0.21))
    c = model.transmit(1, 3, 0.05, 12_500)  # another link has its own queue
    assert (c.tx_start, c.arrival) == pytest.approx((0.05, 0.16))
    d = model.transmit(1, 2, 0.5, 1_250)  # the link was idle again
    assert (d.tx_start, d.tx_end, d.arrival) == pytest.approx((0.5, 0.51, 0.52))
    # Lost and out-of-range messages still occupy the transmitter.
    far = model.transmit(1, 2, 0.6, 12_500, (0, 0), (1e6, 0))
    assert far.dropped is None and far.arrival == pytest.approx(0.71)  # unlimited range here


def test_uncapped_link_has_no_serialization_delay() -> None:
    model = LinkModel(LinkConfig(latency=LatencyConfig(base_s=0.03)))
    first, second = (model.transmit(0, 1, 1.0, 10**7) for _ in range(2))
    assert first.arrival == second.arrival == pytest.approx(1.03)


def test_range_cut_off_and_reception_curve() -> None:
    model = LinkModel(LinkConfig(range=RangeConfig(max_m=100.0)))
    assert model.transmit(1, 2, 0.0, 10, (0, 0), (60, 80)).dropped is None  # exactly 100 m
    out = model.transmit(1, 2, 0.1, 10, (0, 0), (60, 80.01))
    assert out.dropped == "out_of_range" and out.arrival is None
    assert out.distance_m == pytest.approx(math.hypot(60, 80.01))
    soft = RangeConfig(max_m=200.0, d50_m=50.0, width_m=5.0)
    assert soft.reception_prob(50.0) == 0.5
    assert soft.reception_prob(65.0) == pytest.approx(1 / (1 + math.e**3))
    model = LinkModel(LinkConfig(range=soft), seed=2)
    for distance, expected in ((0.0, soft.reception_prob(0.0)), (50.0, 0.5), (60.0, 0.1192)):
        got = np.mean(
            [
                model.transmit(1, 2, i, 10, (0, 0), (distance, 0)).dropped is None
                for i in range(8000)
            ]
        )
        assert abs(got - expected) < 0.02, (distance, got)


@pytest.mark.parametrize(
    "kind,mean",
    [
        ("none", 0.0),
        ("uniform", 0.01),
        ("normal-truncated", 0.02 * math.sqrt(2 / math.pi)),
        ("exponential", 0.02),
        ("lognormal", 0.02 * math.exp(0.5**2 / 2)),
    ],
)
def test_jitter_distributions(kind: str, mean: float) -> None:
    lat = LatencyConfig(base_s=0.005, jitter=kind, jitter_s=0.02, sigma=0.5)
    model = LinkModel(LinkConfig(latency=lat), seed=9)
    delays = np.array([o.arrival - o.t_send for o in _send_many(model, 20_000)])
    assert delays.min() >= 0.005 - 1e-12  # t_send + delay - t_send loses a few ulps
    assert abs(delays.mean() - 0.005 - mean) < 0.03 * 0.02 + 1e-12
    if kind == "uniform":
        assert delays.max() <= 0.025 + 1e-12
    if kind == "lognormal":
        assert abs(np.median(delays - 0.005) - 0.02) < 0.001


def test_seeded_determinism_and_link_independence() -> None:
    cfg = LinkConfig(
        loss=LossConfig("gilbert_elliott", p_gb=0.1, p_bg=0.3, loss_bad=0.8),
        latency=LatencyConfig(jitter="exponential", jitter_s=0.01),
        bandwidth_mbps=6.0,
    )
    a = _send_many(LinkModel(cfg, seed=4), 500)
    assert a == _send_many(LinkModel(cfg, seed=4), 500)
    assert a != _send_many(LinkModel(cfg, seed=5), 500)
    # Interleaving traffic on another link does not change this link's events.
    mixed = LinkModel(cfg, seed=4)
    interleaved = []
    for i in range(500):
        mixed.transmit(7, 2, 0.1 * i, 100)
        interleaved.append(mixed.transmit(1, 2, 0.1 * i, 100))
    assert interleaved == a


def test_config_validation() -> None:
    with pytest.raises(ValueError, match=r"LossConfig\.p: must be >= 0\.0 and <= 1\.0, got 1\.5"):
        LossConfig("bernoulli", p=1.5)
    with pytest.raises(ValueError, match="LossConfig.model: must be 'none', 'bernoulli' or"):
        LossConfig("gilbert")
    with pytest.raises(ValueError, match="jitter"):
        LatencyConfig(jitter="gamma")
    with pytest.raises(ValueError, match="bandwidth"):
        LinkConfig(bandwidth_mbps=0.0)
    with pytest.raises(ValueError, match=r"link\.loss: unknown key\(s\) \['q'\]"):
        LinkConfig.from_dict({"loss": {"q": 0.1}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['speed'\]"):
        LinkConfig.from_dict({"speed": 1})
