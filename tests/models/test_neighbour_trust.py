"""The occupancy profile of a received map and AGF's shut-out of a distrusted neighbour."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from models.cues import PROFILE_RINGS, PROFILE_SIZE, occupancy_profile
from models.detector import build_detector
from models.fusion import AdaptiveGatedFusion, AGFOptions, build_fusion


def test_profile_of_a_hand_built_map() -> None:
    """An 8 x 8 window (bands a quarter of the half-width wide): one of the 4 centre cells
    (band 0) holds 1 in both channels, one corner cell (the outer band) 6 in one channel."""
    feature = torch.zeros(2, 8, 8)
    feature[:, 3, 3] = 1.0  # radius 0.18 of the half-width -> band 0
    feature[0, 0, 0] = 6.0  # corner: radius 1.24 -> the last band
    profile = occupancy_profile(feature)
    bands = torch.zeros(PROFILE_RINGS)
    ys = ((torch.arange(8) + 0.5) / 8 - 0.5) * 2
    radius = torch.sqrt(ys[:, None] ** 2 + ys[None, :] ** 2)
    band = (radius * PROFILE_RINGS).long().clamp(max=PROFILE_RINGS - 1)
    for b in range(PROFILE_RINGS):
        bands[b] = ((band == b) & (feature.sum(0) != 0)).sum() / (band == b).sum()
    expected = torch.log(bands.clamp_min(1e-4)) / math.log(1e4)
    assert profile.shape == (PROFILE_SIZE,)
    torch.testing.assert_close(profile[:PROFILE_RINGS], expected)
    assert profile[0].item() == pytest.approx(math.log(0.25) / math.log(1e4))  # 1 of 4 cells
    # Mean over channels and occupied cells: (1 + 1 + 6 + 0) / (2 * 2) = 2.
    assert profile[-1].item() == pytest.approx(math.asinh(2.0))


def test_profile_counts_only_sent_cells() -> None:
    feature = torch.zeros(1, 8, 8)
    feature[0, 3:5, 3:5] = 1.0  # the 4 centre cells, all in band 0
    sent = torch.zeros(8, 8, dtype=torch.bool)
    sent[3, 3] = sent[3, 4] = True  # only two of them sent, nothing else
    profile = occupancy_profile(feature, sent)
    assert profile[0].item() == pytest.approx(0.0)  # all sent cells of band 0 occupied
    assert torch.equal(profile[1:PROFILE_RINGS], torch.full((PROFILE_RINGS - 1,), -1.0))
    with pytest.raises(ValueError, match=r"must be \(C, H, W\)"):
        occupancy_profile(torch.zeros(1, 1, 8, 8))


def _shut_out_agf(channels: int) -> AdaptiveGatedFusion:
    """A shut-out AGF with a gate of 0 whose score is 25 - 50 * relu(-outer band entry): +25
    for a neighbour with returns everywhere (entry 0), -25 for one with none past the inner
    bands (entry -1, as fog leaves them)."""
    opts = AGFOptions(key_channels=2, hidden=4, reliability=2, profile=True, shut_out=True)
    agf = AdaptiveGatedFusion(channels, opts)
    mlp = agf.reliability.mlp  # input: 4 x 2 pooled descriptors, 3 cues, then the profile
    with torch.no_grad():
        agf.key.weight.zero_()
        agf.key.bias.zero_()
        agf.gate[-1].weight.zero_()
        agf.gate[-1].bias.fill_(-30.0)  # g = 0: the plain AGF would return the neighbours
        mlp[0].weight.zero_()
        mlp[0].bias.zero_()
        mlp[0].weight[0, 8 + 3 + PROFILE_RINGS - 1] = -1.0
        mlp[2].weight.zero_()
        mlp[2].weight[0, 0] = -50.0
        mlp[2].bias.fill_(25.0)
    return agf


def _profile(outer: float) -> torch.Tensor:
    profile = torch.zeros(PROFILE_SIZE)
    profile[PROFILE_RINGS - 1] = outer
    return profile


def test_shut_out_keeps_the_ego_when_the_neighbour_is_distrusted() -> None:
    """Score -25 (trust 1e-11): the output is the ego, though the gate alone would take the
    neighbour; score +25: the neighbour's map."""
    agf = _shut_out_agf(1)
    ego = torch.full((1, 1, 2, 2), 3.0)
    nbrs = torch.full((1, 1, 1, 2, 2), 7.0)
    masks = torch.ones(1, 1, 1, 2, 2)
    cues = torch.zeros(1, 1, 3)
    out, score = agf.scored(ego, nbrs, masks, cues, _profile(-1.0).reshape(1, 1, -1))
    assert score.item() == pytest.approx(-25.0)
    torch.testing.assert_close(out, ego, rtol=0, atol=1e-6)
    out, score = agf.scored(ego, nbrs, masks, cues, _profile(0.0).reshape(1, 1, -1))
    assert score.item() == pytest.approx(25.0)
    torch.testing.assert_close(out, nbrs[:, 0], rtol=0, atol=1e-5)


def test_shut_out_is_per_neighbour() -> None:
    """Two neighbours, one distrusted: its share goes, the trusted one's stays."""
    agf = _shut_out_agf(1)
    ego = torch.zeros(1, 1, 1, 1)
    nbrs = torch.tensor([4.0, 8.0]).reshape(1, 2, 1, 1, 1)
    profiles = torch.stack([_profile(0.0), _profile(-1.0)]).unsqueeze(0)
    out = agf(ego, nbrs, torch.ones(1, 2, 1, 1, 1), torch.zeros(1, 2, 3), profiles)
    # Attention logits +25 / -25: weights 1 / e^-50; trust 1 / e^-25 -> 4.
    assert out.item() == pytest.approx(4.0, abs=1e-5)


def test_option_checks_and_profile_shape() -> None:
    with pytest.raises(ValueError, match="need a reliability score"):
        build_fusion("agf", 4, {"shut_out": True})
    with pytest.raises(ValueError, match="need a reliability score"):
        build_fusion("agf", 4, {"profile": True})
    agf = build_fusion("agf", 4, {"reliability": 2, "profile": True})
    assert agf.reads_profiles and not build_fusion("agf", 4).reads_profiles
    with pytest.raises(ValueError, match=r"profiles must be \(1, 2, 5\)"):
        agf(
            torch.zeros(1, 4, 2, 2),
            torch.zeros(1, 2, 4, 2, 2),
            torch.ones(1, 2, 1, 2, 2),
            None,
            torch.zeros(1, 2, 3),
        )


def test_reduced_gate_is_the_two_convolutions() -> None:
    """gate_reduce: a 1 x 1 projection (run as a GEMM) then the k x k convolution."""
    torch.manual_seed(2)
    agf = AdaptiveGatedFusion(3, AGFOptions(key_channels=2, hidden=4, gate_reduce=5))
    assert [type(m).__name__ for m in agf.gate] == ["Conv2d", "Conv2d", "ReLU", "Conv2d"]
    ego, agg = torch.randn(2, 3, 6, 7), torch.randn(2, 3, 6, 7)
    cue_map, count = torch.rand(2, 3, 6, 7), torch.ones(2, 1, 6, 7)
    x = torch.cat([ego, agg, cue_map, count], dim=1)
    expected = torch.sigmoid(agf.gate(x))
    torch.testing.assert_close(agf.gate_map(ego, agg, cue_map, count), expected)


def test_detector_passes_each_received_maps_profile() -> None:
    """fuse_neighbours hands the fusion the profile of each map as received (its sent mask
    applied), in its ego's slot; a fusion that reads none gets zeros."""
    model = build_detector("cpu_diffkd")
    opts = {**model.config.fusion_options, "profile": True, "shut_out": True}
    model.fusion = build_fusion("agf", model.message_channels, opts)
    seen: list[torch.Tensor] = []
    scored = model.fusion.scored

    def spy(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        seen.append(args[4])
        return scored(*args)

    model.fusion.scored = spy  # type: ignore[method-assign]
    c, h, w = model.message_shape
    rng = np.random.default_rng(0)
    feature = torch.from_numpy(rng.random((c, h, w)).astype(np.float32))
    feature[:, : h // 2] = 0.0
    sent = torch.zeros(h, w, dtype=torch.bool)
    sent[h // 4 :] = True
    pose = np.eye(4)
    ego = torch.zeros(2, *model.map_shape)
    with torch.no_grad():
        model.fuse_neighbours(ego, [[(feature, pose, sent)], [(feature, pose), (feature, pose)]])
    profiles = seen[0]
    assert profiles.shape == (2, 2, PROFILE_SIZE)
    torch.testing.assert_close(profiles[0, 0], occupancy_profile(feature, sent))
    torch.testing.assert_close(profiles[1, 1], occupancy_profile(feature))
    assert torch.equal(profiles[0, 1], torch.zeros(PROFILE_SIZE))  # the padding slot
    assert not torch.equal(profiles[0, 0], profiles[1, 0])  # the sent mask counts


def test_drop_below_treats_a_distrusted_neighbour_as_lost() -> None:
    """drop_below 0.5: the neighbour scored -1 (trust 0.27) is dropped, exactly as if its mask
    were zero, so the one scored +1 keeps the whole attention weight; both dropped: the ego."""
    torch.manual_seed(3)
    agf = _shut_out_agf(2)
    with torch.no_grad():
        agf.gate[-1].bias.fill_(0.0)  # g = 1/2
        agf.reliability.mlp[2].weight[0, 0] = -2.0
        agf.reliability.mlp[2].bias.fill_(1.0)  # scores +1 (profile 0) and -1 (profile -1)
    dropping = AdaptiveGatedFusion(2, dataclasses.replace(agf.options, drop_below=0.5))
    dropping.load_state_dict(agf.state_dict())
    ego, nbrs = torch.randn(1, 2, 3, 3), torch.randn(1, 2, 2, 3, 3)
    masks, cues = torch.ones(1, 2, 1, 3, 3), torch.rand(1, 2, 3)
    profiles = torch.stack([_profile(0.0), _profile(-1.0)]).unsqueeze(0)
    lost = masks.clone()
    lost[0, 1] = 0.0
    expected = agf(ego, nbrs, lost, cues, profiles)
    torch.testing.assert_close(dropping(ego, nbrs, masks, cues, profiles), expected)
    assert not torch.allclose(agf(ego, nbrs, masks, cues, profiles), expected)
    both = torch.stack([_profile(-1.0), _profile(-1.0)]).unsqueeze(0)
    assert torch.equal(dropping(ego, nbrs, masks, cues, both), ego)
    with pytest.raises(ValueError, match="drop_below needs a reliability score"):
        build_fusion("agf", 4, {"drop_below": 0.5})


def test_drop_below_without_shut_out_only_removes_the_distrusted_neighbour() -> None:
    """Without shut_out the trust only filters: with both neighbours trusted (scores +/-0.5
    shifted to +1, sigmoid 0.73) the output equals the same weights with no drop_below; with
    one scored -1 (0.27) it equals that neighbour's mask zeroed, and the gate is not the ego's."""
    torch.manual_seed(5)
    opts = AGFOptions(key_channels=2, hidden=4, reliability=2, profile=True)
    plain = AdaptiveGatedFusion(2, opts)
    filtering = AdaptiveGatedFusion(2, dataclasses.replace(opts, drop_below=0.5))
    with torch.no_grad():
        mlp = plain.reliability.mlp
        mlp[0].weight.zero_()
        mlp[0].bias.zero_()
        mlp[0].weight[0, 8 + 3 + PROFILE_RINGS - 1] = -1.0  # relu(-outer band entry)
        mlp[2].weight.zero_()
        mlp[2].weight[0, 0] = -2.0
        mlp[2].bias.fill_(1.0)  # +1 for returns everywhere, -1 for none past the inner bands
        plain.reliability_gate.fill_(0.3)
    filtering.load_state_dict(plain.state_dict())
    ego, nbrs = torch.randn(1, 2, 3, 3), torch.randn(1, 2, 2, 3, 3)
    masks, cues = torch.ones(1, 2, 1, 3, 3), torch.rand(1, 2, 3)
    trusted = torch.stack([_profile(0.0), _profile(0.0)]).unsqueeze(0)
    torch.testing.assert_close(
        filtering(ego, nbrs, masks, cues, trusted), plain(ego, nbrs, masks, cues, trusted)
    )
    one_fogged = torch.stack([_profile(0.0), _profile(-1.0)]).unsqueeze(0)
    lost = masks.clone()
    lost[0, 1] = 0.0
    torch.testing.assert_close(
        filtering(ego, nbrs, masks, cues, one_fogged), plain(ego, nbrs, lost, cues, one_fogged)
    )
    assert not torch.allclose(filtering(ego, nbrs, masks, cues, one_fogged), ego)
