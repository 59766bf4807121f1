"""The AGF reliability score's supervised target: each neighbour's corruption severity, recorded
by the training pairs, and the BCE that teaches the score to read it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.batch import CooperativeSample
from models.distill import cleanliness_targets, reliability_loss
from models.fusion import AdaptiveGatedFusion, AGFOptions, AttentionFusion
from models.pairs import PairConfig, cleanliness, make_pair
from scenarios.corruptions import CorruptionContext
from scenarios.geometry import yaw_pose
from scenarios.lidar_config import LidarConfig


def _sample(neighbours: int = 2) -> CooperativeSample:
    rng = np.random.default_rng(0)

    def cloud() -> np.ndarray:
        points = rng.uniform(-20, 20, (400, 4)).astype(np.float32)
        points[:, 2] = rng.uniform(-1.5, 0.5, 400)
        points[:, 3] = rng.uniform(0, 1, 400)
        return points

    return CooperativeSample(
        cloud(),
        tuple(cloud() for _ in range(neighbours)),
        np.stack([yaw_pose(10.0 * (k + 1), 0.0, 0.0, 0.0) for k in range(neighbours)]),
        np.zeros((0, 7), np.float32),
        neighbour_ids=tuple(range(1, neighbours + 1)),
    )


def _context(agent_id: int) -> CorruptionContext:
    return CorruptionContext(lidar=LidarConfig(), speed_mps=5.0)


@pytest.mark.parametrize(
    ("target", "ego", "neighbours"), [("all", 2, 2), ("ego", 2, 0), ("neighbours", 0, 2)]
)
def test_pairs_record_each_neighbours_severity(target: str, ego: int, neighbours: int) -> None:
    config = PairConfig(corruptions=("fog",), severities=(2,), clean_fraction=0.0, target=target)  # type: ignore[arg-type]
    pair = make_pair(_sample(), config, 3, np.random.default_rng(1), _context)
    assert pair.severity == ego
    np.testing.assert_array_equal(pair.neighbour_severity, [neighbours, neighbours])
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(pair.neighbour_points, _sample().neighbour_points, strict=True)
    ]
    assert changed == [neighbours > 0] * 2


def test_clean_pairs_and_plain_samples_have_zero_severity() -> None:
    config = PairConfig(corruptions=("fog",), severities=(2,), clean_fraction=1.0)
    pair = make_pair(_sample(3), config, 3, np.random.default_rng(1), _context)
    np.testing.assert_array_equal(pair.neighbour_severity, [0, 0, 0])
    np.testing.assert_array_equal(_sample(3).neighbour_severity, [0, 0, 0])
    with pytest.raises(ValueError, match="neighbour_severity"):
        CooperativeSample(
            _sample().ego_points, (), np.zeros((0, 4, 4)), np.zeros((0, 7)), neighbour_severity=[1]
        )


def test_reliability_loss_by_hand_skips_padding_slots() -> None:
    one = CooperativeSample(
        np.zeros((1, 4), np.float32),
        (np.zeros((1, 4), np.float32),) * 2,
        np.stack([np.eye(4)] * 2),
        np.zeros((0, 7)),
        neighbour_severity=[3, 0],
    )
    alone = CooperativeSample(
        np.zeros((1, 4), np.float32), (), np.zeros((0, 4, 4)), np.zeros((0, 7))
    )
    scores = torch.tensor([[0.5, -1.0, 7.0], [9.0, 9.0, 9.0]])

    def every(t: np.ndarray) -> np.ndarray:
        return np.arange(len(t))

    # ego 0 chose neighbour 1 (clean) then 0 (severity 3); ego 1 chose none: 2 slots count
    chosen = [np.array([1, 0]), np.array([], np.int64)]
    target, weight = cleanliness_targets(scores, chosen, [one, alone], every)
    assert weight.tolist() == [[1, 1, 0], [0, 0, 0]]
    loss = reliability_loss(scores, target, weight)

    def bce(logit: float, target: float) -> float:
        p = 1.0 / (1.0 + math.exp(-logit))
        return -(target * math.log(p) + (1 - target) * math.log(1 - p))

    want = (bce(0.5, cleanliness(0)) + bce(-1.0, cleanliness(3))) / 2
    assert float(loss) == pytest.approx(want, rel=1e-6)
    none = reliability_loss(
        scores[1:], *cleanliness_targets(scores[1:], chosen[1:], [alone], every)
    )
    assert float(none) == 0.0


def test_scored_fusion_returns_the_scores_it_adds() -> None:
    torch.manual_seed(0)
    agf = AdaptiveGatedFusion(3, AGFOptions(key_channels=2, hidden=4, reliability=2))
    with torch.no_grad():
        for p in agf.reliability.parameters():
            p.normal_()
    ego, nbrs = torch.randn(2, 3, 4, 4), torch.randn(2, 2, 3, 4, 4)
    masks, cues = torch.ones(2, 2, 1, 4, 4), torch.rand(2, 2, 3)
    fused, scores = agf.scored(ego, nbrs, masks, cues)
    torch.testing.assert_close(fused, agf(ego, nbrs, masks, cues))
    assert scores is not None and scores.shape == (2, 2)
    want = agf.reliability(ego, nbrs, masks > 0.5, cues)
    torch.testing.assert_close(scores, want)
    assert AttentionFusion(3).scored(ego, nbrs, masks, cues)[1] is None
    assert AdaptiveGatedFusion(3).scored(ego, nbrs, masks, cues)[1] is None


def test_the_target_teaches_the_score_to_tell_clutter_from_clean() -> None:
    """Neighbour maps with a few strong cells (clean) or dense weak clutter (fog-like): trained
    on the BCE alone, the score ranks every held-out clean map above every cluttered one."""
    gen = torch.Generator().manual_seed(0)

    def maps(n: int, cluttered: bool) -> torch.Tensor:
        out = torch.zeros(n, 4, 12, 12)
        cells = torch.rand(n, 1, 12, 12, generator=gen) < 0.05
        out += cells * torch.rand(n, 4, 12, 12, generator=gen) * 3.0
        if cluttered:
            out += (torch.rand(n, 1, 12, 12, generator=gen) < 0.6) * 0.3
        return out

    agf = AdaptiveGatedFusion(4, AGFOptions(key_channels=2, hidden=8, reliability=4))
    optimizer = torch.optim.Adam(agf.reliability.parameters(), lr=0.02)
    ego = torch.zeros(8, 4, 12, 12)
    masks, cues = torch.ones(8, 2, 1, 12, 12), torch.zeros(8, 2, 3)
    target = torch.tensor([[1.0, cleanliness(2)]]).expand(8, 2)
    for _ in range(150):
        nbrs = torch.stack([maps(8, False), maps(8, True)], dim=1)
        _, scores = agf.scored(ego, nbrs, masks, cues)
        loss = F.binary_cross_entropy_with_logits(scores, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        nbrs = torch.stack([maps(8, False), maps(8, True)], dim=1)
        _, scores = agf.scored(ego, nbrs, masks, cues)
    assert float(scores[:, 0].min()) > float(scores[:, 1].max()), scores
