"""Fusion strategies (none, max, attention, agf) and the early-fusion point merge."""

import math

import numpy as np
import pytest
import torch

from models.cues import CUE_NAMES, cue_vector
from models.early_fusion import merge_points_to_ego
from models.fusion import (
    FUSION_STRATEGIES,
    AdaptiveGatedFusion,
    AGFOptions,
    AttentionFusion,
    MaxFusion,
    build_fusion,
)
from scenarios.geometry import yaw_pose


def test_registry_and_errors() -> None:
    assert sorted(FUSION_STRATEGIES) == ["agf", "attention", "max", "none"]
    assert isinstance(build_fusion("max", 4), MaxFusion)
    with pytest.raises(ValueError, match="unknown strategy 'sum'"):
        build_fusion("sum", 4)
    with pytest.raises(ValueError, match="fusion 'max' takes no options"):
        build_fusion("max", 4, {"hidden": 3})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['width'\]"):
        build_fusion("agf", 4, {"width": 3})
    with pytest.raises(ValueError, match="kernel must be odd"):
        build_fusion("agf", 4, {"kernel": 2})
    agf = build_fusion("agf", 4, {"hidden": 5, "key_channels": 3})
    assert isinstance(agf, AdaptiveGatedFusion) and agf.options == AGFOptions(3, 5, 3)
    with pytest.raises(ValueError, match=r"cues must be \(1, 2, 3\)"):
        agf(
            torch.zeros(1, 4, 2, 2),
            torch.zeros(1, 2, 4, 2, 2),
            torch.ones(1, 2, 1, 2, 2),
            torch.zeros(1, 2, 2),
        )
    with pytest.raises(ValueError, match="masks must be"):
        build_fusion("max", 1)(
            torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 2, 2), torch.ones(1, 1)
        )


def test_none_returns_ego_batched() -> None:
    ego = torch.randn(3, 4, 5)
    out = build_fusion("none", 3)(ego, torch.randn(1, 2, 3, 4, 5), torch.ones(1, 2, 1, 4, 5))
    assert out.shape == (1, 3, 4, 5) and torch.equal(out[0], ego)


def test_max_respects_masks() -> None:
    ego = torch.tensor([[[[1.0, 5.0, -2.0, 0.0]]]])  # (B=1, C=1, H=1, W=4)
    nbrs = torch.tensor([[[[[3.0, 9.0, -1.0, 7.0]]], [[[2.0, 4.0, -3.0, 8.0]]]]])  # (1, 2, 1, 1, 4)
    masks = torch.tensor([[[[[1.0, 0.0, 1.0, 0.0]]], [[[1.0, 1.0, 0.0, 0.0]]]]])
    out = MaxFusion(1)(ego, nbrs, masks)
    assert out.tolist() == [[[[3.0, 5.0, -1.0, 0.0]]]]
    assert torch.equal(MaxFusion(1)(ego, nbrs[:, :0], masks[:, :0]), ego)


def test_attention_two_agents_by_hand() -> None:
    ego = torch.tensor([1.0]).reshape(1, 1, 1, 1)
    nbr = torch.tensor([3.0]).reshape(1, 1, 1, 1, 1)
    out = AttentionFusion(1)(ego, nbr, torch.ones(1, 1, 1, 1, 1))
    # Ego query: scores [1*1, 1*3] / sqrt(1); weights softmax -> [1, e^2] / (1 + e^2).
    expected = (1.0 + 3.0 * math.exp(2.0)) / (1.0 + math.exp(2.0))
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_attention_with_one_agent_returns_ego_exactly() -> None:
    torch.manual_seed(0)
    ego = torch.randn(2, 8, 5, 6)
    fuse = AttentionFusion(8)
    out = fuse(ego, torch.zeros(2, 0, 8, 5, 6), torch.zeros(2, 0, 1, 5, 6))
    assert out.shape == (2, 8, 5, 6) and torch.equal(out, ego)
    masked_out = fuse(ego, torch.randn(2, 3, 8, 5, 6) * 100, torch.zeros(2, 3, 1, 5, 6))
    assert torch.equal(masked_out, ego)


def test_gradients_flow_to_valid_agents_only() -> None:
    torch.manual_seed(1)
    ego = torch.randn(1, 4, 3, 3, requires_grad=True)
    nbrs = torch.randn(1, 2, 4, 3, 3, requires_grad=True)
    masks = torch.ones(1, 2, 1, 3, 3)
    masks[0, 1] = 0.0
    for name in ("attention", "max", "agf"):
        ego.grad = nbrs.grad = None
        build_fusion(name, 4)(ego, nbrs, masks).square().sum().backward()
        assert ego.grad.abs().sum() > 0 and nbrs.grad[0, 0].abs().sum() > 0
        assert torch.count_nonzero(nbrs.grad[0, 1]) == 0


def test_merge_points_to_ego() -> None:
    ego_pts = np.array([[1.0, 2.0, 0.0, 0.5]], np.float32)
    nbr_pts = np.array([[1.0, 0.0, -1.0, 0.25], [0.0, 2.0, 0.0, 0.75]], np.float32)
    ego_pose = yaw_pose(5.0, 0.0, 1.0, 0.0)
    nbr_pose = yaw_pose(10.0, 0.0, 2.0, math.pi / 2)  # facing +y in the world
    merged = merge_points_to_ego([ego_pts, nbr_pts], [ego_pose, nbr_pose], ego_pose)
    assert merged.dtype == np.float32 and merged.shape == (3, 4)
    np.testing.assert_allclose(
        merged,
        [[1.0, 2.0, 0.0, 0.5], [5.0, 1.0, 0.0, 0.25], [3.0, 0.0, 1.0, 0.75]],
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="2 clouds but 1 poses"):
        merge_points_to_ego([ego_pts, nbr_pts], [ego_pose], ego_pose)


def _agf_with_gate(channels: int, logit: float) -> AdaptiveGatedFusion:
    """An AGF whose gate is the constant sigmoid(logit) wherever a neighbour is valid."""
    agf = AdaptiveGatedFusion(channels)
    last = agf.gate[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(logit)
    return agf


def test_agf_zero_gate_returns_neighbours_one_gate_the_ego() -> None:
    torch.manual_seed(2)
    ego = torch.randn(1, 4, 3, 5)
    nbr = torch.randn(1, 1, 4, 3, 5)
    masks = torch.ones(1, 1, 1, 3, 5)
    # One valid neighbour: attention weight 1, so agg is that neighbour exactly.
    zero = _agf_with_gate(4, -100.0)(ego, nbr, masks)
    one = _agf_with_gate(4, 100.0)(ego, nbr, masks)
    torch.testing.assert_close(zero, nbr[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(one, ego, rtol=0, atol=1e-6)
    half = _agf_with_gate(4, 0.0)(ego, nbr, masks)
    torch.testing.assert_close(half, 0.5 * ego + 0.5 * nbr[:, 0], rtol=1e-6, atol=1e-6)


def test_agf_masked_neighbour_never_leaks() -> None:
    torch.manual_seed(3)
    ego = torch.randn(2, 4, 3, 3)
    good = torch.randn(2, 1, 4, 3, 3)
    garbage = torch.full((2, 1, 4, 3, 3), 1e6)
    masks = torch.cat([torch.ones(2, 1, 1, 3, 3), torch.zeros(2, 1, 1, 3, 3)], dim=1)
    masks[:, 0, :, 0, 0] = 0.0  # cell (0, 0): nobody valid -> the ego exactly
    fuse = _agf_with_gate(4, -100.0)
    out = fuse(ego, torch.cat([good, garbage], dim=1), masks)
    alone = fuse(ego, good, masks[:, :1])
    torch.testing.assert_close(out, alone, rtol=0, atol=0)
    assert torch.equal(out[:, :, 0, 0], ego[:, :, 0, 0])
    torch.testing.assert_close(out[:, :, 1:, 1:], good[:, 0, :, 1:, 1:], rtol=0, atol=1e-6)
    # No neighbour at all, or all masked: the ego bit for bit.
    assert torch.equal(fuse(ego, good[:, :0], masks[:, :0]), ego)
    assert torch.equal(fuse(ego, garbage, torch.zeros(2, 1, 1, 3, 3)), ego)


def test_agf_attention_weights_follow_cues() -> None:
    """Two valid neighbours, identical keys: the cue bias alone decides their weights."""
    agf = _agf_with_gate(1, -100.0)
    with torch.no_grad():
        agf.key.weight.zero_()
        agf.key.bias.zero_()
        agf.cue_bias.weight.copy_(torch.tensor([[-math.log(3.0) / 2.0, 0.0, 0.0]]))
        agf.cue_bias.bias.zero_()
    ego = torch.zeros(1, 1, 1, 1)
    nbrs = torch.tensor([2.0, 6.0]).reshape(1, 2, 1, 1, 1)
    cues = torch.tensor([[cue_vector(age_s=0.0), cue_vector(age_s=1.0)]])  # scaled ages 0, 2
    out = agf(ego, nbrs, torch.ones(1, 2, 1, 1, 1), cues)
    # logits 0 and -ln 3 -> weights 3/4, 1/4 -> 2 * 3/4 + 6 * 1/4 = 3.
    assert out.item() == pytest.approx(3.0, rel=1e-6)
    assert CUE_NAMES == ("age_s", "stale", "pose_sigma")


def _reliable_agf(channels: int, gate_logit: float) -> AdaptiveGatedFusion:
    """An AGF with a reliability score and a constant gate sigmoid(gate_logit)."""
    agf = AdaptiveGatedFusion(channels, AGFOptions(key_channels=2, hidden=4, reliability=2))
    with torch.no_grad():
        agf.gate[-1].weight.zero_()
        agf.gate[-1].bias.fill_(gate_logit)
    return agf


def test_agf_reliability_starts_as_the_plain_agf() -> None:
    """A fresh reliability score is 0 for every neighbour: the plain AGF's output exactly."""
    torch.manual_seed(4)
    plain = AdaptiveGatedFusion(3, AGFOptions(key_channels=2, hidden=4))
    scored = AdaptiveGatedFusion(3, AGFOptions(key_channels=2, hidden=4, reliability=2))
    missing = scored.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == sorted(
        [n for n, _ in scored.named_parameters() if n.startswith("reliability")]
    )
    ego, nbrs = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 3, 4, 5)
    masks = (torch.rand(2, 3, 1, 4, 5) > 0.4).float()
    cues = torch.rand(2, 3, 3)
    torch.testing.assert_close(scored(ego, nbrs, masks, cues), plain(ego, nbrs, masks, cues))


def test_agf_reliability_shuts_out_a_neighbour_by_its_cue() -> None:
    """A score of -100 * (scaled pose sigma): the neighbour reporting sigma 0.6 gets no weight."""
    agf = _reliable_agf(1, -100.0)
    mlp = agf.reliability.mlp  # input: 4 x 2 pooled descriptors, then the 3 cues
    with torch.no_grad():
        agf.key.weight.zero_()
        agf.key.bias.zero_()
        mlp[0].weight.zero_()
        mlp[0].bias.zero_()
        mlp[0].weight[0, 8 + CUE_NAMES.index("pose_sigma")] = 1.0
        mlp[2].weight.zero_()
        mlp[2].weight[0, 0] = -100.0
    ego = torch.zeros(1, 1, 2, 2)
    nbrs = torch.stack([torch.full((1, 2, 2), 2.0), torch.full((1, 2, 2), 6.0)]).unsqueeze(0)
    cues = torch.tensor([[cue_vector(pose_sigma=0.0), cue_vector(pose_sigma=0.6)]])
    out = agf(ego, nbrs, torch.ones(1, 2, 1, 2, 2), cues)
    torch.testing.assert_close(out, torch.full((1, 1, 2, 2), 2.0), rtol=0, atol=1e-6)
    # With the cue swapped the other neighbour is the one kept.
    out = agf(ego, nbrs, torch.ones(1, 2, 1, 2, 2), cues.flip(1))
    torch.testing.assert_close(out, torch.full((1, 1, 2, 2), 6.0), rtol=0, atol=1e-6)


def test_agf_reliability_reads_only_valid_cells() -> None:
    """Garbage where a neighbour is masked (or in a neighbour masked everywhere) changes
    neither its score nor the output, whatever the score's weights."""
    torch.manual_seed(5)
    agf = _reliable_agf(3, 0.0)
    with torch.no_grad():
        for p in agf.reliability.parameters():
            p.normal_()
        agf.reliability_gate.fill_(1.5)
    ego = torch.randn(1, 3, 4, 4)
    nbrs = torch.randn(1, 2, 3, 4, 4)
    masks = torch.zeros(1, 2, 1, 4, 4)
    masks[0, 0, :, :2] = 1.0  # neighbour 0 valid in the top half; neighbour 1 nowhere
    cues = torch.rand(1, 2, 3)
    out = agf(ego, nbrs, masks, cues)
    dirty = nbrs.clone()
    dirty[0, 0, :, 2:] = 1e6
    dirty[0, 1] = -1e6
    torch.testing.assert_close(agf(ego, dirty, masks, cues), out, rtol=0, atol=0)
    # And the score does move the output where the neighbour is valid.
    with torch.no_grad():
        agf.reliability_gate.fill_(-1.5)
    assert not torch.allclose(agf(ego, nbrs, masks, cues)[..., :2, :], out[..., :2, :])
