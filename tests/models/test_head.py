"""Anchors, target assignment, losses, decoding and a short overfit of the head."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.anchors import (
    AnchorConfig,
    AssignConfig,
    assign_targets,
    generate_anchors,
    grid_candidates,
)
from models.box_ops import rotated_iou_bev
from models.grid import GridSpec
from models.head import AnchorHead, HeadConfig, HeadOutput, HeadTargets
from models.losses import apply_direction, direction_labels, sigmoid_focal_loss

# 10 x 10 cells of 0.8 m; cell (i, j) is centred at (-4 + 0.8 (j + .5), -4 + 0.8 (i + .5)).
TINY = GridSpec((-4.0, -4.0, -3.0, 4.0, 4.0, 1.0), (0.4, 0.4, 4.0), feature_stride=2)
CAR = [3.9, 1.6, 1.56]


def test_anchor_layout_on_grid() -> None:
    anchors = generate_anchors(TINY, AnchorConfig())
    assert anchors.shape == (2, 10, 10, 7) and anchors.dtype == torch.float32
    torch.testing.assert_close(anchors[0, 2, 7], torch.tensor([2.0, -2.0, -1.0, *CAR, 0.0]))
    torch.testing.assert_close(anchors[1, 2, 7, 6], torch.tensor(math.pi / 2))
    custom = generate_anchors(TINY, AnchorConfig(size=(1, 1, 2), z_center=0.5, yaws=(0.3,)))
    assert custom.shape == (1, 10, 10, 7) and float(custom[0, 0, 0, 2]) == 0.5


def test_one_gt_marks_the_right_anchors() -> None:
    anchors = generate_anchors(TINY, AnchorConfig()).reshape(-1, 7)
    gt = torch.tensor([[0.4, 0.4, -0.8, *CAR, 0.1]])  # centre of cell (5, 5), yaw near 0
    t = assign_targets(anchors, gt, AssignConfig())
    # Nearest-BEV IoU of the yaw-0 anchors: same cell 1; one column over (0.8 m along the
    # length) 3.1/4.7 = 0.66 -> positive; two columns 2.3/5.5 = 0.42 -> negative; one row
    # over (0.8 m across) 3.12/9.36 = 1/3 -> negative. The 90-deg anchor: 2.56/9.92 -> negative.
    # Flat index of anchor a at (i, j) is (a * 10 + i) * 10 + j.
    assert torch.nonzero(t.labels == 1).flatten().tolist() == [54, 55, 56]
    assert (t.labels == -1).sum() == 0  # nothing lands in [0.45, 0.6)
    assert t.gt_index[55] == 0 and t.num_positive == 3
    diag = math.hypot(3.9, 1.6)
    torch.testing.assert_close(
        t.box_targets[55], torch.tensor([0, 0, 0.2 / 1.56, 0, 0, 0, 0.1]), atol=1e-6, rtol=0
    )
    assert float(t.box_targets[54, 0]) == pytest.approx(0.8 / diag, abs=1e-6)
    assert float(t.box_targets[56, 0]) == pytest.approx(-0.8 / diag, abs=1e-6)


def test_best_anchor_rule_and_empty_gt() -> None:
    anchors = generate_anchors(TINY, AnchorConfig()).reshape(-1, 7)
    # A 1 m square at the centre of cell (5, 5): its best IoU, 1 / 6.24, is reached by every
    # anchor that covers it whole: yaw 0 at columns 4-6, yaw 90 at rows 4-6. All ties count.
    small = torch.tensor([[0.4, 0.4, -0.8, 1.0, 1.0, 1.7, 0.0]])
    t = assign_targets(anchors, small, AssignConfig())
    assert torch.nonzero(t.labels == 1).flatten().tolist() == [54, 55, 56, 145, 155, 165]
    t = assign_targets(anchors, small, AssignConfig(match_best_anchor=False))
    assert t.num_positive == 0
    t = assign_targets(anchors, torch.zeros((0, 7)), AssignConfig())
    assert bool((t.labels == 0).all())


def test_grid_candidates_give_the_same_targets() -> None:
    grid = GridSpec((-24.0, -16.0, -3.0, 24.0, 16.0, 1.0), (0.4, 0.4, 4.0), feature_stride=2)
    anchors = generate_anchors(grid, AnchorConfig()).reshape(-1, 7)
    gen = torch.Generator().manual_seed(1)
    n = 30
    gt = torch.cat(
        [
            torch.rand(n, 1, generator=gen) * 54 - 27,  # some fall off the grid
            torch.rand(n, 1, generator=gen) * 38 - 19,
            torch.full((n, 1), -1.0),
            torch.rand(n, 3, generator=gen) * 3 + 1,
            torch.rand(n, 1, generator=gen) * 6.3 - 3.15,
        ],
        dim=1,
    )
    near = grid_candidates(grid, AnchorConfig(), gt)
    assert len(near) < len(anchors)
    full = assign_targets(anchors, gt, AssignConfig())
    fast = assign_targets(anchors, gt, AssignConfig(), candidates=near)
    assert torch.equal(full.labels, fast.labels) and torch.equal(full.gt_index, fast.gt_index)
    assert torch.equal(full.box_targets, fast.box_targets)


def test_head_config_from_dict_rejects_unknown_keys() -> None:
    cfg = HeadConfig.from_dict(
        {"anchor": {"size": [4.0, 1.8, 1.6]}, "assign": {"pos_iou": 0.5}, "nms_iou": 0.2}
    )
    assert cfg.anchor.size == (4.0, 1.8, 1.6) and cfg.assign.pos_iou == 0.5
    assert HeadConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="'nms_thresh'"):
        HeadConfig.from_dict({"nms_thresh": 0.1})
    with pytest.raises(ValueError, match=r"head\.anchor.*'length'"):
        HeadConfig.from_dict({"anchor": {"length": 4.0}})
    with pytest.raises(ValueError, match="nms_iou"):
        HeadConfig(nms_iou=0.0)
    with pytest.raises(ValueError, match="neg_iou <= pos_iou"):
        AssignConfig(pos_iou=0.4, neg_iou=0.5)


def test_forward_shapes_and_flat_order() -> None:
    head = AnchorHead(8, TINY, HeadConfig(use_direction_classifier=True))
    out = head(torch.randn(2, 8, 10, 10))
    assert out.cls_logits.shape == (2, 2, 10, 10) and out.box_preds.shape == (2, 14, 10, 10)
    assert out.dir_logits is not None and out.dir_logits.shape == (2, 4, 10, 10)
    # Flat index (a * H + i) * W + j reads channel a * 7 + k at (i, j).
    assert out.flat_boxes()[1, (1 * 10 + 3) * 10 + 4, 5] == out.box_preds[1, 7 + 5, 3, 4]
    assert out.flat_cls()[0, 37] == out.cls_logits[0, 0, 3, 7]
    torch.testing.assert_close(torch.sigmoid(head.cls.bias), torch.full((2,), 0.01))
    with pytest.raises(ValueError, match="grid expects"):
        head(torch.randn(1, 8, 10, 12))


def test_losses_known_values() -> None:
    # logit 0, target 1: 0.25 * 0.5^2 * log 2; target 0: 0.75 * 0.5^2 * log 2.
    focal = sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(focal, torch.tensor([0.0625, 0.1875]) * math.log(2))
    head = AnchorHead(4, TINY)
    k = head.anchors.shape[0]
    labels = torch.zeros(1, k, dtype=torch.int64)
    labels[0, 55] = 1
    box_targets = torch.zeros(1, k, 7)
    box_targets[0, 55, 6] = math.pi  # a flip by pi costs nothing under the sine difference
    out = HeadOutput(torch.zeros(1, 2, 10, 10), torch.zeros(1, 14, 10, 10))
    loss = head.loss(out, HeadTargets(labels, box_targets, torch.zeros(1, k, dtype=torch.int64)))
    assert float(loss.reg) == pytest.approx(0.0, abs=1e-6)
    expected_cls = (0.0625 + 0.1875 * (k - 1)) * math.log(2)  # over 1 positive
    assert float(loss.cls) == pytest.approx(expected_cls, rel=1e-5)
    no_pos = head.loss(out, HeadTargets(labels * 0, box_targets, labels * 0))
    assert torch.isfinite(no_pos.total) and no_pos.num_positive == 0


def test_direction_bins_round_trip() -> None:
    yaw = torch.tensor([0.0, 1.0, 2.5, -2.5, -0.5, 3.0])
    bins = direction_labels(yaw, math.pi / 4)
    flipped = yaw + math.pi  # what a sine-difference regression may return
    torch.testing.assert_close(apply_direction(flipped, bins, math.pi / 4), yaw, atol=1e-6, rtol=0)


def test_head_overfits_two_boxes_and_decodes_them() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    grid = GridSpec((-12.8, -12.8, -3.0, 12.8, 12.8, 1.0), (0.8, 0.8, 4.0), feature_stride=2)
    head = AnchorHead(32, grid, HeadConfig(use_direction_classifier=True))
    features = torch.randn(1, 32, *grid.bev_shape)
    gt = torch.tensor(
        [[3.3, -4.1, -0.9, 4.2, 1.8, 1.5, 0.3], [-6.0, 5.0, -1.1, 4.0, 1.7, 1.6, -1.4]]
    )
    targets = head.assign([gt])
    assert targets.num_positive >= 2
    optimiser = torch.optim.Adam(head.parameters(), lr=0.05)
    losses = []
    for _ in range(150):
        loss = head.loss(head(features), targets)
        optimiser.zero_grad()
        loss.total.backward()
        optimiser.step()
        losses.append(float(loss.total.detach()))
    assert losses[-1] < losses[0] / 10
    (det,) = head.decode(head(features), score_threshold=0.5)
    assert len(det) == 2 and det.boxes.dtype == np.float32
    iou = rotated_iou_bev(det.boxes, gt)
    assert sorted(iou.argmax(axis=1).tolist()) == [0, 1]
    assert iou.max(axis=1).min() > 0.8
    matched = gt.numpy()[iou.argmax(axis=1)]
    yaw_err = np.abs((det.boxes[:, 6] - matched[:, 6] + np.pi) % (2 * np.pi) - np.pi)
    assert yaw_err.max() < 0.1  # heading, not just the footprint: the direction bins learned
