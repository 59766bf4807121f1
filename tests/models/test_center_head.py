"""Centre-based (CenterPoint) head: Gaussian targets on hand-built boxes of each size class,
box-code round trips, decoding perfect targets, the config that selects it and a short
training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.box_ops import rotated_iou_bev
from models.center_head import CenterHead, heatmap_focal_loss
from models.center_targets import (
    CenterConfig,
    center_targets,
    decode_center,
    encode_center,
    gaussian_radius,
)
from models.detector import build_detector
from models.detector_config import load_detector_config
from models.grid import GridSpec
from models.head import AnchorHead, HeadConfig, HeadOutput
from models.inference import predict
from tests.models.test_detector import make_sample

# 40 x 40 cells of 0.8 m; cell (i, j) covers x in [-16 + 0.8 j, -16 + 0.8 (j + 1)).
GRID = GridSpec((-16.0, -16.0, -3.0, 16.0, 16.0, 1.0), (0.4, 0.4, 4.0), feature_stride=2)
H = W = 40
CENTER = HeadConfig(type="center")
# Hand-built boxes of each size class (middles of scenarios/traffic.py's ranges), centred off
# the cell centres: (row, col, size, z).
SIZES = {
    "car": ((20, 22), (4.5, 1.83, 1.5), -1.15),
    "van": ((10, 8), (5.2, 2.03, 2.1), -0.85),
    "truck": ((30, 18), (11.75, 2.5, 3.5), -0.15),
}


def box_at(row: int, col: int, size: tuple[float, ...], z: float, yaw: float) -> list[float]:
    """A box whose centre lies 0.3 / 0.6 of the way into cell ``(row, col)`` along x / y."""
    return [-16.0 + 0.8 * (col + 0.3), -16.0 + 0.8 * (row + 0.6), z, *size, yaw]


def yaw_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(np.remainder(a - b + math.pi, 2 * math.pi) - math.pi)


def test_gaussian_radius_is_centernets() -> None:
    # 10 x 10 cells at IoU 0.5: the third case binds, r = (-20 + sqrt(20^2 + 4 * 2 * 50)) / 2
    # (the other two: 18.2 and 34.1 cells).
    assert gaussian_radius(10.0, 10.0, 0.5) == pytest.approx((math.sqrt(800.0) - 20.0) / 2)
    car = gaussian_radius(4.5 / 0.8, 1.83 / 0.8, 0.1)
    truck = gaussian_radius(11.75 / 0.8, 2.5 / 0.8, 0.1)
    assert 1.0 < car < truck  # bigger boxes tolerate a bigger centre error


@pytest.mark.parametrize("name", list(SIZES))
def test_targets_of_each_size_peak_at_the_centre_cell(name: str) -> None:
    (row, col), size, z = SIZES[name]
    gt = torch.tensor([box_at(row, col, size, z, 0.4)])
    t = center_targets(GRID, [gt], CENTER.center)
    heat = t.heatmap[0]
    assert heat.shape == (H, W) and float(heat[row, col]) == 1.0
    assert t.num_positive == 1 and bool(t.positive[0, row, col])
    assert float(heat.max()) == 1.0 and int((heat == 1.0).sum()) == 1
    radius = max(2, int(gaussian_radius(size[0] / 0.8, size[1] / 0.8, 0.1)))
    sigma = (2 * radius + 1) / 6
    for d in range(1, radius + 1):  # falls off as the Gaussian, in every direction
        expected = math.exp(-(d * d) / (2 * sigma * sigma))
        for r, c in ((row + d, col), (row - d, col), (row, col + d), (row, col - d)):
            assert float(heat[r, c]) == pytest.approx(expected, rel=1e-5)
    assert float(heat[row, col + radius + 1]) == 0.0 and float(heat[row + radius, col + 1]) < 1
    # The code at the centre cell decodes back to the box.
    cells = torch.tensor([[row, col]])
    back = decode_center(GRID, cells, t.codes[0, row, col][None])
    torch.testing.assert_close(back, gt, atol=1e-5, rtol=1e-5)
    assert float(t.codes[0, row, col, 0]) == pytest.approx(0.3, abs=1e-5)
    assert float(t.codes[0, row, col, 1]) == pytest.approx(0.6, abs=1e-5)


def test_truck_radius_is_wider_and_off_map_centres_draw_nothing() -> None:
    (row, col), _, _ = SIZES["car"]
    car = box_at(row, col, SIZES["car"][1], -1.15, 0.0)
    truck = box_at(row, col, SIZES["truck"][1], -0.15, 0.0)
    # Radii 1.50 / 2.66 cells -> 1 / 2; the default min_radius (2) would give both 2.
    exact = CenterConfig(min_radius=0)
    car_heat = center_targets(GRID, [torch.tensor([car])], exact).heatmap[0]
    truck_heat = center_targets(GRID, [torch.tensor([truck])], exact).heatmap[0]
    assert int((car_heat > 0).sum()) == 9 and int((truck_heat > 0).sum()) == 25
    outside = torch.tensor([[20.0, 0.0, -1.0, 4.5, 1.8, 1.5, 0.0]])
    t = center_targets(GRID, [outside, torch.zeros(0, 7)], CENTER.center)
    assert t.num_positive == 0 and float(t.heatmap.sum()) == 0.0


def test_decode_of_encode_is_identity_incl_yaw_near_pi() -> None:
    yaws = [math.pi - 1e-4, -math.pi + 1e-4, 0.0, 1.3, -2.9, math.pi / 2]
    boxes = torch.tensor(
        [
            box_at(5 + 4 * k, 7 + 3 * k, (4.5 + k, 1.8, 1.5), -1.0 + 0.1 * k, y)
            for k, y in enumerate(yaws)
        ]
    )
    cells, codes = encode_center(GRID, boxes)
    back = decode_center(GRID, cells, codes)
    torch.testing.assert_close(back[:, :6], boxes[:, :6], atol=1e-5, rtol=1e-5)
    assert yaw_error(back[:, 6].numpy(), boxes[:, 6].numpy()).max() < 1e-5
    assert np.all(np.abs(codes[:, 6:].norm(dim=-1).numpy() - 1.0) < 1e-6)


def test_axis_yaw_codes_the_heading_modulo_pi() -> None:
    yaws = torch.tensor([math.pi - 1e-4, -math.pi + 1e-4, 0.0, 1.3, -2.9, math.pi / 2])
    boxes = torch.tensor([box_at(5 + 4 * k, 9, (4.5, 1.8, 1.5), -1.0, 0.0) for k in range(6)])
    boxes[:, 6] = yaws
    cells, codes = encode_center(GRID, boxes, axis_yaw=True)
    # A heading and its reverse get one code: (sin 2yaw, cos 2yaw) of pi/2 and -pi/2 is (0, -1).
    torch.testing.assert_close(codes[5, 6:], torch.tensor([0.0, -1.0]), atol=1e-6, rtol=0)
    back = decode_center(GRID, cells, codes, axis_yaw=True)
    assert float(back[:, 6].abs().max()) <= math.pi / 2 + 1e-6
    flip = np.remainder(back[:, 6].numpy() - yaws.numpy() + math.pi / 2, math.pi) - math.pi / 2
    assert np.abs(flip).max() < 1e-5  # the same axis
    assert np.all(np.diag(rotated_iou_bev(back.numpy(), boxes.numpy())) > 0.999)


def perfect_output(targets_heat: torch.Tensor, codes: torch.Tensor) -> HeadOutput:
    """What a perfect head would output: the targets' logits and codes."""
    logits = torch.logit(targets_heat.clamp(1e-6, 1 - 1e-6))[:, None]
    return HeadOutput(logits, codes.permute(0, 3, 1, 2).contiguous())


def test_perfect_targets_decode_to_every_box_and_the_truck_tightly() -> None:
    head = CenterHead(8, GRID, HeadConfig(type="center", vote_iou=0.3))
    gt = torch.tensor(
        [
            box_at(r, c, s, z, y)
            for ((r, c), s, z), y in zip(SIZES.values(), (0.2, -3.1, 3.1), strict=True)
        ]
    )
    t = head.assign([gt])
    dets = head.decode(perfect_output(t.heatmap, t.codes))[0]
    assert len(dets) == 3 and np.all(dets.scores > 0.99)
    iou = rotated_iou_bev(dets.boxes, gt.numpy())
    assert np.all(iou.max(axis=0) >= 0.999)  # every box, truck included, found exactly
    truck = gt[2].numpy()
    found = dets.boxes[iou[:, 2].argmax()]
    assert iou[:, 2].max() >= 0.7 and np.allclose(found[:6], truck[:6], atol=1e-4)
    assert yaw_error(found[6:], truck[6:]).max() < 1e-4
    # The Gaussian shoulders are not peaks: a lower threshold adds nothing.
    assert len(head.decode(perfect_output(t.heatmap, t.codes), score_threshold=0.01)[0]) == 3


def test_focal_loss_rewards_the_right_heatmap() -> None:
    t = center_targets(
        GRID, [torch.tensor([box_at(20, 22, (4.5, 1.8, 1.5), -1.0, 0.0)])], CENTER.center
    )
    good = torch.logit(t.heatmap.clamp(1e-4, 1 - 1e-4))
    flat = torch.full_like(good, -2.19)
    assert float(heatmap_focal_loss(good, t.heatmap, 2.0, 4.0)) < 0.1
    # By hand, p = 0.5 at a centre (y = 1) and a shoulder (y = 0.5):
    # 0.5^2 ln 2 + 0.5^4 0.5^2 ln 2 = 0.184122.
    two = heatmap_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.5]), 2.0, 4.0)
    assert float(two) == pytest.approx(0.25 * math.log(2) * (1 + 0.0625), rel=1e-5)
    assert float(heatmap_focal_loss(flat, t.heatmap, 2.0, 4.0)) > 10 * float(
        heatmap_focal_loss(good, t.heatmap, 2.0, 4.0)
    )


def test_config_round_trip_and_bad_values_name_the_key() -> None:
    config = HeadConfig.from_dict({"type": "center", "center": {"min_radius": 1}, "vote_iou": 0.3})
    assert config.type == "center" and config.center.min_radius == 1
    stored = config.to_dict()
    assert "anchors" not in stored and "assign" not in stored and stored["type"] == "center"
    assert HeadConfig.from_dict(stored) == config
    preset = load_detector_config("cpu_none_center").head
    assert preset.type == "center" and preset.vote_iou == 0.3 and preset.center == CenterConfig()
    # An anchor head stores what it stored before the centre head existed.
    assert "type" not in HeadConfig().to_dict() and "center" not in HeadConfig().to_dict()
    with pytest.raises(ValueError, match=r"head\.type.*'anchor'.*'center'"):
        HeadConfig.from_dict({"type": "centre"})
    with pytest.raises(ValueError, match=r"head\.center\.min_overlap"):
        HeadConfig.from_dict({"type": "center", "center": {"min_overlap": 1.5}})
    with pytest.raises(ValueError, match=r"head\.center.*'radius'"):
        HeadConfig.from_dict({"type": "center", "center": {"radius": 2}})
    with pytest.raises(ValueError, match="set type: center or remove it"):
        HeadConfig.from_dict({"center": {"min_radius": 1}})  # would be ignored by an anchor head
    with pytest.raises(ValueError, match=r"no anchors; remove \['anchors'\]"):
        HeadConfig.from_dict({"type": "center", "anchors": [{"name": "car"}]})


def test_detector_builds_the_head_the_config_names() -> None:
    center = build_detector("cpu_none_center")
    assert isinstance(center.anchor_head, CenterHead)
    assert isinstance(build_detector("cpu_none_sizes").anchor_head, AnchorHead)
    # init_skip: [anchor_head.] still names every head parameter.
    names = [n for n, _ in center.named_parameters() if n.startswith("anchor_head.")]
    assert {
        "anchor_head.heatmap.weight",
        "anchor_head.reg.bias",
        "anchor_head.shared.0.weight",
    } <= set(names)


def test_a_short_training_run_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = build_detector("cpu_none_center")
    samples = [make_sample(0), make_sample(0, seed=1)]
    out = model(samples)
    h, w = model.grid.bev_shape
    assert out.cls_logits.shape == (2, 1, h, w) and out.box_preds.shape == (2, 8, h, w)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, positives = [], []
    for _ in range(15):
        opt.zero_grad()
        loss = model.loss(samples, model(samples))
        loss.total.backward()
        opt.step()
        losses.append(float(loss.total.detach()))
        positives.append(loss.num_positive)
    assert positives[0] > 0 and len(set(positives)) == 1
    assert losses[-1] < losses[0] / 3, losses
    dets = predict(model, samples[:1], score_threshold=0.05)[0]
    assert dets.boxes.shape[1:] == (7,) and np.all(np.diff(dets.scores) <= 0)
