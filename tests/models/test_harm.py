"""The trust's harm target (models.harm): leave-one-out detection losses with the trust
neutral, and the BCE that distill_loss builds from them."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.batch import CooperativeSample
from models.cues import PROFILE_SIZE
from models.detector import CooperativeDetector, build_detector
from models.distill import (
    DistillWeights,
    TrustTarget,
    cleanliness_targets,
    distill_loss,
    reliability_loss,
)
from models.fusion import AdaptiveGatedFusion, AGFOptions
from models.harm import harm_targets, neighbour_gains, neutral_trust
from models.head import Detections
from models.inference import inference_mode
from models.metrics import evaluate_detections
from models.pairs import cleanliness
from scenarios.geometry import yaw_pose


def _cloud(rng: np.random.Generator, n: int = 3000) -> np.ndarray:
    points = rng.uniform(-30, 30, (n, 4)).astype(np.float32)
    points[:, 2] = rng.uniform(-1.5, 0.5, n)
    points[:, 3] = rng.uniform(0, 1, n)
    return points


def _sample(neighbours: int, seed: int = 0) -> CooperativeSample:
    rng = np.random.default_rng(seed)
    return CooperativeSample(
        _cloud(rng),
        tuple(_cloud(rng) for _ in range(neighbours)),
        np.array(
            [yaw_pose(8.0 * (k + 1), 3.0 * k, 0.0, 0.1 * k) for k in range(neighbours)]
        ).reshape(neighbours, 4, 4),
        np.array([[12.0, 4.0, -0.8, 4.5, 1.9, 1.6, 0.3], [-9.0, -6.0, -0.8, 4.2, 1.8, 1.5, 1.2]]),
        neighbour_ids=tuple(range(1, neighbours + 1)),
    )


@pytest.fixture(scope="module")
def model() -> CooperativeDetector:
    torch.manual_seed(0)
    detector = build_detector("cpu_agf_trust_wide")
    with torch.no_grad():  # a trust that differs by neighbour and drops some
        for p in detector.fusion.reliability.parameters():
            p.normal_(0.0, 0.5)
    return detector.eval()


def _with(
    model: CooperativeDetector, ego: torch.Tensor, nbrs: list, sample: CooperativeSample
) -> tuple[float, float]:
    """Detection loss and frame AP@0.5 of the ego map fused with ``nbrs`` alone, trust
    neutral."""
    with torch.no_grad(), neutral_trust(model.fusion):
        output = model.head(model.bev(model.fuse_neighbours(ego.unsqueeze(0), [nbrs]).features))
        det = model.detect(output)[0]
        ap = evaluate_detections([(det.boxes, det.scores, sample.gt_boxes)], (0.5,))[0.5]
        return float(model.loss([sample], output).total), ap


def test_leaving_a_slot_out_is_fusing_without_that_neighbour(model: CooperativeDetector) -> None:
    sample = _sample(3)
    with torch.no_grad():
        passed = model.forward_pass([sample])
    offered = model.encode_samples([sample])[1][0]
    assert len(passed.fused.chosen[0]) == 3
    row = tuple(x[0] for x in passed.fused.inputs)
    gains = neighbour_gains(model, passed.ego_maps[0], row, 3, sample, with_loss=True)
    assert gains.loss is not None
    assert gains.loss.shape == gains.ap.shape == (3,)
    ego = passed.ego_maps[0]
    all_loss, all_ap = _with(model, ego, offered, sample)
    without = [_with(model, ego, offered[:i] + offered[i + 1 :], sample) for i in range(3)]
    np.testing.assert_allclose(
        gains.loss.numpy(), [w[0] - all_loss for w in without], rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(gains.ap.numpy(), [all_ap - w[1] for w in without], atol=1e-6)
    assert len(set(np.round(gains.loss.numpy(), 6))) == 3  # every neighbour changes the loss


def test_harm_targets_are_the_sigmoid_of_the_ap_gain(model: CooperativeDetector) -> None:
    batch = [_sample(2, seed=1), _sample(0, seed=2), _sample(3, seed=3)]
    with torch.no_grad():
        passed = model.forward_pass(batch)
    target, weight = harm_targets(model, passed, batch, temperature=0.05)
    assert target.shape == weight.shape == (3, 3)
    assert weight.tolist() == [[1, 1, 0], [0, 0, 0], [1, 1, 1]]
    for j in (0, 2):
        n = len(batch[j].neighbour_points)
        row = tuple(x[j] for x in passed.fused.inputs)
        gains = neighbour_gains(model, passed.ego_maps[j], row, n, batch[j])
        torch.testing.assert_close(target[j, :n], torch.sigmoid(gains.ap / 0.05))
    assert float(target[1].abs().sum()) == 0.0
    no_truth = dataclasses.replace(batch[0], gt_boxes=np.zeros((0, 7), np.float32))
    _, none = harm_targets(model, passed, [no_truth, *batch[1:]], temperature=0.05)
    assert none[0].tolist() == [0, 0, 0]  # a frame without ground truth has no AP to read
    with pytest.raises(ValueError, match="temperature must be > 0"):
        harm_targets(model, passed, batch, temperature=0.0)


def test_distill_loss_trains_the_trust_toward_the_harm(model: CooperativeDetector) -> None:
    batch = [_sample(2, seed=4), _sample(3, seed=5)]
    weights = DistillWeights(reliability=1.0)
    torch.manual_seed(0)
    loss = distill_loss(model, batch, None, weights, trust=TrustTarget("harm", 0.1))
    with torch.no_grad():
        passed = model.forward_pass(batch)
    target, weight = harm_targets(model, passed, batch, temperature=0.1)
    scores = passed.fused.reliability
    want = F.binary_cross_entropy_with_logits(scores, target, weight=weight, reduction="sum")
    assert float(loss.reliability.detach()) == pytest.approx(float(want / weight.sum()), rel=1e-5)
    assert loss.reliability.requires_grad  # through the trust's scores only


def test_neutral_trust_is_the_fusion_with_every_score_equal() -> None:
    """Inside neutral_trust the trust neither biases the attention nor drops anyone: the same
    as a trust that scores every neighbour alike, high enough to keep them all."""
    torch.manual_seed(2)
    opts = AGFOptions(key_channels=2, hidden=4, reliability=2, profile=True, drop_below=0.5)
    agf = AdaptiveGatedFusion(2, opts)
    ego, nbrs = torch.randn(1, 2, 3, 3), torch.randn(1, 2, 2, 3, 3)
    masks, cues, profiles = (
        torch.ones(1, 2, 1, 3, 3),
        torch.rand(1, 2, 3),
        torch.rand(1, 2, PROFILE_SIZE),
    )
    with torch.no_grad():
        for p in agf.reliability.parameters():
            p.normal_()
        scored = agf(ego, nbrs, masks, cues, profiles)
        with neutral_trust(agf):
            neutral, none = agf.scored(ego, nbrs, masks, cues, profiles)
        agf.reliability.mlp[2].weight.zero_()
        agf.reliability.mlp[2].bias.fill_(4.0)
        constant = agf(ego, nbrs, masks, cues, profiles)
    assert none is None
    torch.testing.assert_close(neutral, constant)
    assert not torch.allclose(neutral, scored)
    assert agf.neutral_trust is False


def test_inference_mode_restores_each_modules_own_mode(model: CooperativeDetector) -> None:
    model.train()
    frozen = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    frozen.eval()  # as train_only keeps a frozen part's statistics
    with inference_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and not frozen.training
    model.eval()


def test_cleanliness_targets_follow_the_range_choice() -> None:
    """Slot i is the i-th neighbour the encoder was offered: with neighbour 1 out of range the
    second slot holds neighbour 2's severity, not neighbour 1's."""
    far = CooperativeSample(
        np.zeros((1, 4), np.float32),
        (np.zeros((1, 4), np.float32),) * 3,
        np.stack([yaw_pose(5.0, 0, 0, 0), yaw_pose(500.0, 0, 0, 0), yaw_pose(9.0, 0, 0, 0)]),
        np.zeros((0, 7)),
        neighbour_severity=[1, 0, 3],
    )
    scores = torch.tensor([[0.5, -1.0]])

    def select(t: np.ndarray) -> np.ndarray:
        return np.nonzero(np.hypot(t[:, 0, 3], t[:, 1, 3]) < 100)[0]

    target, weight = cleanliness_targets(scores, [np.array([0, 1])], [far], select)
    assert target.tolist() == [[cleanliness(1), cleanliness(3)]]

    def bce(logit: float, y: float) -> float:
        p = 1.0 / (1.0 + math.exp(-logit))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    want = (bce(0.5, cleanliness(1)) + bce(-1.0, cleanliness(3))) / 2
    assert float(reliability_loss(scores, target, weight)) == pytest.approx(want, rel=1e-6)


def test_trust_target_config() -> None:
    from configkit import validate
    from cosim.training.train_config import DistillConfig

    config = validate(DistillConfig, {"reliability_target": "harm", "harm_temperature": 0.02}, "d")
    assert (config.reliability_target, config.harm_temperature) == ("harm", 0.02)
    with pytest.raises(ValueError, match="reliability_target"):
        validate(DistillConfig, {"reliability_target": "severity"}, "distill")
    with pytest.raises(ValueError, match="harm_temperature"):
        validate(DistillConfig, {"harm_temperature": 0.0}, "distill")
    assert dataclasses.asdict(TrustTarget()) == {"kind": "cleanliness", "temperature": 0.01}


def test_ap_gain_is_read_row_by_row(
    model: CooperativeDetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row 0 (every neighbour) finds both cars; leaving out neighbour 0 finds none, neighbour 1
    one of two, neighbour 2 both: the gains are AP 1 minus 0, 0.5 and 1."""
    sample = _sample(3)
    with torch.no_grad():
        passed = model.forward_pass([sample])
    gt = sample.gt_boxes
    found = [gt, gt[:0], gt[:1], gt]

    def detect(output: object) -> list[Detections]:
        return [Detections(torch.as_tensor(b), torch.full((len(b),), 0.9)) for b in found]

    monkeypatch.setattr(model, "detect", detect)
    row = tuple(x[0] for x in passed.fused.inputs)
    gains = neighbour_gains(model, passed.ego_maps[0], row, 3, sample)
    np.testing.assert_allclose(gains.ap.numpy(), [1.0, 0.5, 0.0], atol=1e-6)
