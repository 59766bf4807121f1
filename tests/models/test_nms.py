"""Rotated NMS on hand-built boxes."""

from __future__ import annotations

import math

import numpy as np
import torch

from models.nms import rotated_nms


def box(x: float, y: float, yaw: float = 0.0) -> list:
    return [x, y, 0.0, 4.0, 2.0, 1.5, yaw]


def test_threshold_decides_overlapping_pair() -> None:
    # A and B overlap with IoU 1/3 (shifted half a length); C is far away.
    boxes = np.array([box(0, 0), box(2, 0), box(20, 0)], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7])
    assert rotated_nms(boxes, scores, iou_threshold=0.3).tolist() == [0, 2]
    assert rotated_nms(boxes, scores, iou_threshold=0.5).tolist() == [0, 1, 2]
    # IoU exactly at the threshold suppresses (>=).
    assert rotated_nms(boxes, scores, iou_threshold=1 / 3 - 1e-9).tolist() == [0, 2]


def test_suppressed_box_does_not_suppress() -> None:
    # A-B IoU 0.6, B-C IoU 0.6, A-C IoU 1/3: B goes, so C survives at threshold 0.5.
    boxes = np.array([box(0, 0), box(1, 0), box(2, 0)])
    assert rotated_nms(boxes, [0.9, 0.8, 0.7], 0.5).tolist() == [0, 2]


def test_indices_refer_to_input_order_and_rotation_counts() -> None:
    # Same centre, crossed at 90 deg: IoU 1/3. The best box is last in the input.
    boxes = torch.tensor([box(0, 0, math.pi / 2), box(30, 5), box(0, 0)])
    scores = torch.tensor([0.5, 0.6, 0.95])
    assert rotated_nms(boxes, scores, 0.3).tolist() == [2, 1]
    assert rotated_nms(boxes, scores, 0.4).tolist() == [2, 1, 0]


def test_score_threshold_top_k_and_max_size() -> None:
    boxes = np.array([box(10.0 * i, 0) for i in range(5)])
    scores = np.array([0.1, 0.5, 0.3, 0.9, 0.7])
    assert rotated_nms(boxes, scores, 0.5).tolist() == [3, 4, 1, 2, 0]
    assert rotated_nms(boxes, scores, 0.5, score_threshold=0.3).tolist() == [3, 4, 1, 2]
    assert rotated_nms(boxes, scores, 0.5, pre_max_size=2).tolist() == [3, 4]
    assert rotated_nms(boxes, scores, 0.5, post_max_size=3).tolist() == [3, 4, 1]


def test_ties_keep_input_order_and_empty_input() -> None:
    boxes = np.array([box(0, 0), box(0, 0), box(0, 0)])
    assert rotated_nms(boxes, [0.5, 0.5, 0.5], 0.5).tolist() == [0]
    out = rotated_nms(np.zeros((0, 7)), np.zeros(0), 0.5)
    assert out.dtype == np.int64 and out.shape == (0,)
    assert rotated_nms(boxes, [0.1, 0.1, 0.1], 0.5, score_threshold=0.2).shape == (0,)


def test_clustered_scene_keeps_one_per_object() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[10.0 * i, 3.0 * (i % 2)] for i in range(8)])
    jitter = rng.normal(0, 0.1, (8, 12, 2))
    boxes = np.array([box(*(c + d)) for c, js in zip(centres, jitter, strict=True) for d in js])
    scores = rng.uniform(0.2, 1.0, len(boxes))
    keep = rotated_nms(boxes, scores, 0.2)
    assert len(keep) == 8
    assert sorted(np.round(boxes[keep, 0] / 10).astype(int).tolist()) == list(range(8))
