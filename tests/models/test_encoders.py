"""PointPillars, the sparse-voxel encoder, the BEV backbone and the feature-net presets."""

import numpy as np
import pytest
import torch

from models.backbone import BackboneConfig, BEVBackbone
from models.encoders.feature_net import (
    CPU_FEATURES,
    FEATURE_PRESETS,
    OPV2V_FEATURES,
    FeatureConfig,
    FeatureNet,
)
from models.encoders.pointpillars import PillarConfig, PointPillarsEncoder
from models.encoders.sparse_voxel import SparseVoxelConfig, SparseVoxelEncoder
from models.grid import CPU_GRID, GridSpec
from models.voxelize import voxelize_batch

# 16 x 16 pillars of 0.5 m over [-4, 4)^2, z in [-2, 2); feature map 8 x 8.
TINY = GridSpec((-4.0, -4.0, -2.0, 4.0, 4.0, 2.0), (0.5, 0.5, 4.0), feature_stride=2)
TINY_BACKBONE = BackboneConfig((1, 1), (2, 2), (8, 16), (1, 2), (8, 8))


def random_cloud(grid: GridSpec, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo, hi = np.array(grid.point_range[:3]), np.array(grid.point_range[3:])
    xyz = rng.uniform(lo, hi - 1e-3, (n, 3))
    return np.c_[xyz, rng.uniform(0, 1, n)].astype(np.float32)


def test_pillar_decorations_are_offsets_to_mean_and_centre() -> None:
    enc = PointPillarsEncoder(TINY, PillarConfig((8,)))
    pts = np.array([[0.1, 0.2, 0.0, 1.0], [0.4, 0.3, 1.0, 0.5]], np.float32)  # pillar x=8, y=8
    decorated, mask = enc.decorate(voxelize_batch([pts], TINY))
    assert mask.tolist()[0][:3] == [True, True, False]
    np.testing.assert_allclose(
        decorated[0, :2].numpy(),
        [
            [0.1, 0.2, 0.0, 1.0, -0.15, -0.05, -0.5, -0.15, -0.05],
            [0.4, 0.3, 1.0, 0.5, 0.15, 0.05, 0.5, 0.15, 0.05],
        ],
        atol=1e-6,
    )
    assert torch.count_nonzero(decorated[0, 2:]) == 0


def test_scatter_places_pillars_at_their_cells() -> None:
    enc = PointPillarsEncoder(TINY, PillarConfig((2,)))
    pts = [np.array([[-3.9, 3.9, 0, 1]], np.float32), np.array([[0.1, -0.1, 0, 1]], np.float32)]
    voxels = voxelize_batch(pts, TINY)
    canvas = enc.scatter(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), voxels)
    assert canvas.shape == (2, 2, 16, 16)
    assert canvas[0, :, 15, 0].tolist() == [1.0, 2.0] and canvas[1, :, 7, 8].tolist() == [3.0, 4.0]
    assert canvas.abs().sum() == 10.0


def test_pointpillars_two_layer_pfn_and_gradient() -> None:
    enc = PointPillarsEncoder(TINY, PillarConfig((16, 8)))
    out = enc(voxelize_batch([random_cloud(TINY, 300), random_cloud(TINY, 50, seed=1)], TINY))
    assert out.shape == (2, 8, 16, 16) and enc.out_channels == 8
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


def test_sparse_encoder_shapes_and_gradient_on_cpu() -> None:
    cfg = SparseVoxelConfig(z_voxel_size=0.5, channels=(4, 8, 8), blocks=1)
    enc = SparseVoxelEncoder(TINY, cfg)
    assert enc.voxel_grid.voxel_shape == (8, 16, 16)
    assert enc.out_depth == 2 and enc.out_channels == 16  # z 8 -> 4 -> 2 bins, 8 channels each
    voxels = voxelize_batch([random_cloud(TINY, 400), random_cloud(TINY, 100, 2)], enc.voxel_grid)
    out = enc(voxels)
    assert out.shape == (2, 16, 16, 16)
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


def test_backbone_propagates_channels_and_stride() -> None:
    net = BEVBackbone(5, TINY_BACKBONE)
    assert net.out_channels == 16 and net.output_stride == 2
    assert net(torch.randn(2, 5, 16, 16)).shape == (2, 16, 8, 8)
    down = BEVBackbone(3, BackboneConfig((0, 0), (1, 2), (4, 6), (0.5, 1), (2, 3)))
    assert down.out_channels == 5 and down(torch.randn(1, 3, 8, 12)).shape == (1, 5, 4, 6)
    with pytest.raises(ValueError, match="different strides"):
        BackboneConfig((1, 1), (2, 2), (8, 16), (1, 1), (8, 8))
    with pytest.raises(ValueError, match="divide by 4"):
        net(torch.randn(1, 5, 18, 16))


def test_feature_net_on_tiny_grid_both_encoders() -> None:
    base = FeatureConfig(
        pillar=PillarConfig((8,)),
        sparse_voxel=SparseVoxelConfig(1.0, (4, 4), 0),
        backbone=TINY_BACKBONE,
    )
    for name in ("pointpillars", "sparse_voxel"):
        net = FeatureNet(TINY, base.with_encoder(name))
        out = net([random_cloud(TINY, 200), random_cloud(TINY, 20, 5)])
        assert out.shape == (2, net.out_channels, *TINY.bev_shape) == (2, 16, 8, 8)
    with pytest.raises(ValueError, match="feature_stride"):
        FeatureNet(GridSpec(TINY.point_range, TINY.voxel_size, 4), base)


def test_cpu_preset_both_encoders() -> None:
    cloud = random_cloud(CPU_GRID, 3000)
    with torch.no_grad():
        for name in ("pointpillars", "sparse_voxel"):
            net = FeatureNet(CPU_GRID, CPU_FEATURES.with_encoder(name)).eval()
            assert net([cloud]).shape == (1, 96, 80, 120)


def test_opv2v_preset_pointpillars_shapes() -> None:
    grid, cfg = FEATURE_PRESETS["opv2v"]
    net = FeatureNet(grid, cfg).eval()
    assert net.encoder.out_channels == 64 and net.out_channels == 384
    with torch.no_grad():
        voxels = net.voxelize([random_cloud(grid, 2000)])
        pseudo = net.encoder(voxels)
        assert pseudo.shape == (1, 64, 200, 704)
        assert net.backbone(pseudo).shape == (1, 384, 100, 352)


def test_config_dicts_round_trip_and_reject_unknown_keys() -> None:
    assert FeatureConfig.from_dict(OPV2V_FEATURES.to_dict()) == OPV2V_FEATURES
    yaml_like = {"encoder": "sparse_voxel", "backbone": {"layer_nums": [1, 1, 1]}}
    assert FeatureConfig.from_dict(yaml_like).backbone.layer_nums == (1, 1, 1)
    with pytest.raises(ValueError, match=r"features\.backbone: unknown key\(s\) \['layers'\]"):
        FeatureConfig.from_dict({"backbone": {"layers": [1]}})
    with pytest.raises(ValueError, match="'head'"):
        FeatureConfig.from_dict({"head": {}})
    expected = r"features\.encoder: must be 'pointpillars' or 'sparse_voxel', got 'voxelnet'"
    with pytest.raises(ValueError, match=expected):
        FeatureConfig.from_dict({"encoder": "voxelnet"})
