"""Anchors per vehicle size (car, van, truck/bus): layout, target assignment on hand-built
boxes of each size, per-class thresholds, box coding and the config that selects them."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.anchors import (
    AnchorConfig,
    anchor_thresholds,
    assign_targets,
    generate_anchors,
    grid_candidates,
)
from models.box_ops import decode_boxes, encode_boxes, rotated_iou_bev
from models.detector_config import load_detector_config
from models.grid import GridSpec
from models.head import AnchorHead, HeadConfig, HeadOutput

# 40 x 40 cells of 0.8 m; cell (i, j) is centred at (-16 + 0.8 (j + .5), -16 + 0.8 (i + .5)).
GRID = GridSpec((-16.0, -16.0, -3.0, 16.0, 16.0, 1.0), (0.4, 0.4, 4.0), feature_stride=2)
H = W = 40
SIZES = load_detector_config("cpu_none_sizes").head  # the shipped multi-size preset
CAR, VAN, TRUCK = SIZES.anchor_set  # each with yaws (0, pi/2): anchors 0-1, 2-3, 4-5


def centre(i: int, j: int) -> tuple[float, float]:
    """``(x, y)`` of cell ``(i, j)``."""
    return -16.0 + 0.8 * (j + 0.5), -16.0 + 0.8 * (i + 0.5)


def box(i: int, j: int, anchor: AnchorConfig, yaw: float = 0.0) -> list[float]:
    """A GT box of ``anchor``'s size and height centred on cell ``(i, j)``."""
    return [*centre(i, j), anchor.z_center, *anchor.size, yaw]


def targets(gt: list[list[float]], head: HeadConfig = SIZES) -> tuple[torch.Tensor, ...]:
    """Labels and matched GT index as ``(A, H, W)`` grids, through the grid candidates."""
    anchors = generate_anchors(GRID, head.anchor_set).reshape(-1, 7)
    gt_t = torch.tensor(gt, dtype=torch.float32)
    near = grid_candidates(GRID, head.anchor_set, gt_t)
    t = assign_targets(
        anchors, gt_t, head.assign, near, anchor_thresholds(GRID, head.anchor_set, head.assign)
    )
    a = len(anchors) // (H * W)
    return t.labels.view(a, H, W), t.gt_index.view(a, H, W), t.box_targets.view(a, H, W, 7)


def test_preset_sizes_and_layout() -> None:
    assert [a.name for a in SIZES.anchor_set] == ["car", "van", "truck_bus"]
    assert TRUCK.size == (11.75, 2.5, 3.5) and (TRUCK.pos_iou, TRUCK.neg_iou) == (0.55, 0.4)
    anchors = generate_anchors(GRID, SIZES.anchor_set)
    assert anchors.shape == (6, H, W, 7)
    # Class by class, each class's yaws in order; every cell of one anchor has its size and z.
    for a, (cls, yaw) in enumerate((c, y) for c in SIZES.anchor_set for y in c.yaws):
        expected = torch.tensor([cls.z_center, *cls.size, yaw], dtype=torch.float32)
        torch.testing.assert_close(anchors[a, 7, 11, 2:], expected)
    torch.testing.assert_close(anchors[5, 7, 11, :2], torch.tensor(centre(7, 11)))
    pos, neg = anchor_thresholds(GRID, SIZES.anchor_set, SIZES.assign)
    assert pos.view(6, H, W)[:, 0, 0].tolist() == pytest.approx([0.6] * 4 + [0.55] * 2)
    assert neg.view(6, H, W)[:, 0, 0].tolist() == pytest.approx([0.45] * 4 + [0.4] * 2)


def test_a_car_matches_car_and_van_anchors_never_a_truck_anchor() -> None:
    labels, index, _ = targets([box(20, 9, CAR)])
    # Van anchor on the car: 4.55 x 1.83 / 5.2 x 2.03 = 0.79 >= 0.6, a positive too.
    assert labels[0, 20, 9] == 1 and labels[2, 20, 9] == 1
    assert set(torch.nonzero(labels == 1)[:, 0].tolist()) == {0, 2}
    # Truck anchors around it: at most 8.3 / 29.4 = 0.28 IoU -> all negative.
    assert (labels[4:, 15:26, 2:17] == 0).all()
    assert (index[labels == 1] == 0).all()


def test_a_van_matches_its_own_anchor_best() -> None:
    labels, _, box_targets = targets([box(10, 20, VAN)])
    assert labels[2, 10, 20] == 1 and (labels[4:] != 1).all()
    torch.testing.assert_close(box_targets[2, 10, 20], torch.zeros(7))  # exactly its anchor


def test_a_truck_is_positive_for_truck_anchors_only() -> None:
    labels, _, box_targets = targets([box(30, 20, TRUCK)])
    # Along its length the truck anchor keeps IoU (11.75 - s) / (11.75 + s): 0.87, 0.76, 0.66
    # and 0.57 at s = 0.8, 1.6, 2.4, 3.2 m -> positive at 0.55; 0.49 at 4 m is ignored.
    positive = torch.nonzero(labels == 1).tolist()
    assert positive == [[4, 30, j] for j in range(16, 25)]
    assert labels[4, 30, 15] == -1 and labels[4, 30, 13] == 0  # 0.49 ignored, 0.35 negative
    # One cell sideways: 1.7 / 3.3 = 0.52, between the truck's 0.4 and 0.55 -> ignored.
    assert labels[4, 29, 20] == -1 and labels[4, 31, 20] == -1
    # Car and van anchors inside the truck cover at most 0.36 of it: negatives.
    assert (labels[:4, 29:32, 13:28] == 0).all()
    torch.testing.assert_close(box_targets[4, 30, 20], torch.zeros(7))
    # With the default thresholds (0.6) the 0.57 anchors at 3.2 m are only ignored.
    default = replace(SIZES, anchors=(CAR, VAN, replace(TRUCK, pos_iou=None, neg_iou=None)))
    labels_default, _, _ = targets([box(30, 20, TRUCK)], default)
    assert torch.nonzero(labels_default == 1)[:, 2].tolist() == list(range(17, 24))


def test_a_truck_is_matched_at_iou_07_by_its_own_anchor_not_by_a_car_anchor() -> None:
    truck = [1.3, -6.1, -0.1, 12.3, 2.5, 3.6, 0.12]  # off the cell centres, turned 7 degrees
    anchors = generate_anchors(GRID, SIZES.anchor_set).reshape(-1, 7)
    iou = rotated_iou_bev(np.array([truck]), anchors.numpy())[0]
    best = int(np.argmax(iou))
    assert best // (H * W) == 4 and iou[best] >= 0.7  # a truck anchor, IoU >= 0.7
    labels, _, _ = targets([truck])
    assert labels.view(-1)[best] == 1
    # The shipped single car anchor cannot: its best exact IoU with the truck is < 0.25.
    car_only = generate_anchors(GRID, AnchorConfig()).reshape(-1, 7)
    assert rotated_iou_bev(np.array([truck]), car_only.numpy()).max() < 0.25


def test_grid_candidates_give_the_same_targets_for_every_size() -> None:
    gt = torch.tensor(
        [box(20, 9, CAR, 0.3), box(10, 20, VAN, 1.2), box(30, 20, TRUCK, -0.2), box(2, 2, TRUCK)]
    )
    anchors = generate_anchors(GRID, SIZES.anchor_set).reshape(-1, 7)
    thresholds = anchor_thresholds(GRID, SIZES.anchor_set, SIZES.assign)
    full = assign_targets(anchors, gt, SIZES.assign, None, thresholds)
    near = grid_candidates(GRID, SIZES.anchor_set, gt)
    fast = assign_targets(anchors, gt, SIZES.assign, near, thresholds)
    assert len(near) < len(anchors)
    torch.testing.assert_close(fast.labels, full.labels)
    torch.testing.assert_close(fast.box_targets, full.box_targets)
    assert fast.num_positive > 10


def test_decode_of_encode_is_the_identity_for_every_size() -> None:
    gen = torch.Generator().manual_seed(0)
    for anchor in SIZES.anchor_set:
        n = 50
        anchors = torch.tensor([[0.0, 0.0, anchor.z_center, *anchor.size, 0.0]]).repeat(n, 1)
        anchors[:, :2] = torch.rand(n, 2, generator=gen) * 60 - 30
        anchors[:, 6] = torch.randint(0, 2, (n,), generator=gen) * math.pi / 2
        boxes = anchors.clone()
        boxes[:, :3] += torch.randn(n, 3, generator=gen)
        boxes[:, 3:6] *= torch.exp(0.2 * torch.randn(n, 3, generator=gen))
        boxes[:, 6] += torch.randn(n, generator=gen)
        torch.testing.assert_close(decode_boxes(encode_boxes(boxes, anchors), anchors), boxes)


def test_head_decodes_a_truck_from_its_truck_anchor() -> None:
    head = AnchorHead(8, GRID, SIZES)
    truck = torch.tensor([box(30, 20, TRUCK, 0.1)])
    truck[0, 3] = 12.4
    flat = 4 * H * W + 30 * W + 20  # truck anchor, yaw 0, cell (30, 20)
    residual = encode_boxes(truck[0], head.anchors[flat])
    cls = torch.full((1, 6, H, W), -10.0)
    cls[0, 4, 30, 20] = 5.0
    reg = torch.zeros(1, 6, 7, H, W)
    reg[0, 4, :, 30, 20] = residual
    detections = head.decode(HeadOutput(cls, reg.view(1, 42, H, W)))[0]
    assert len(detections) == 1
    np.testing.assert_allclose(detections.boxes[0], truck[0].numpy(), atol=1e-5)
    assert head.assign([truck]).labels.view(6, H, W)[4, 30, 20] == 1


def test_config_selects_single_or_several_anchors() -> None:
    single = HeadConfig.from_dict({"anchor": {"size": [4.0, 1.8, 1.6]}})
    assert len(single.anchor_set) == 1 and "anchors" in single.to_dict()
    assert HeadConfig.from_dict(single.to_dict()) == single
    assert HeadConfig.from_dict(SIZES.to_dict()) == SIZES
    assert "anchor" not in SIZES.to_dict()
    with pytest.raises(ValueError, match="not both"):
        HeadConfig.from_dict({"anchor": {}, "anchors": [{"name": "car"}]})
    with pytest.raises(ValueError, match=r"head\.anchors\[1\].*'length'"):
        HeadConfig.from_dict({"anchors": [{"name": "car"}, {"name": "van", "length": 5.0}]})
    with pytest.raises(ValueError, match="unique"):
        HeadConfig.from_dict({"anchors": [{"name": "car"}, {"name": "car"}]})
    with pytest.raises(ValueError, match="neg_iou <= pos_iou"):
        AnchorConfig(name="truck", pos_iou=0.3, neg_iou=0.5)
    with pytest.raises(ValueError, match="head.anchors: must be a list, got a dict"):
        HeadConfig.from_dict({"anchors": {"name": "car"}})


def test_shipped_single_anchor_checkpoint_configs_still_parse() -> None:
    # What a shipped checkpoint stores: an 'anchor' section, no 'anchors', no class fields.
    stored = {
        "anchor": {"size": [3.9, 1.6, 1.56], "z_center": -1.0, "yaws": [0.0, math.pi / 2]},
        "assign": {"pos_iou": 0.6, "neg_iou": 0.45, "match_best_anchor": True},
        "score_threshold": 0.2,
        "nms_iou": 0.15,
    }
    config = HeadConfig.from_dict(stored)
    assert config.anchor_set == (AnchorConfig(),) and AnchorHead(8, GRID, config).num_anchors == 2
