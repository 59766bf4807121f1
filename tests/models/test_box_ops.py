"""BEV IoU on known geometry, the nearest-BEV approximation, and residual coding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
import torch

from models.box_ops import (
    bev_polygons,
    decode_boxes,
    encode_boxes,
    nearest_bev_iou,
    rotated_iou_bev,
)


def box(x: float, y: float, length: float = 4.0, width: float = 2.0, yaw: float = 0.0) -> list:
    return [x, y, 0.0, length, width, 1.5, yaw]


def test_rotated_iou_known_geometry() -> None:
    a = np.array([box(0, 0)], dtype=np.float32)
    b = np.array(
        [
            box(0, 0),  # identical: 1
            box(10, 0),  # disjoint: 0
            box(2, 0),  # shifted half a length: 4 / (8 + 8 - 4) = 1/3
            box(0, 0, yaw=math.pi / 2),  # crossed: 2x2 = 4 over 12 = 1/3
            box(0, 0, yaw=math.pi),  # flipped heading, same footprint: 1
            box(0, 3),  # touching edges only: 0
        ],
        dtype=np.float32,
    )
    iou = rotated_iou_bev(a, b)
    assert iou.shape == (1, 6)
    np.testing.assert_allclose(iou[0], [1.0, 0.0, 1 / 3, 1 / 3, 1.0, 0.0], atol=1e-6)


def test_rotated_iou_square_at_45_degrees() -> None:
    # 2x2 squares, one turned 45 deg: the overlap is a regular octagon of area 8(sqrt2 - 1).
    a = np.array([box(0, 0, 2, 2)])
    b = np.array([box(0, 0, 2, 2, math.pi / 4)])
    inter = 8 * (math.sqrt(2) - 1)
    assert rotated_iou_bev(a, b)[0, 0] == pytest.approx(inter / (8 - inter), abs=1e-9)


def test_rotated_iou_matches_bruteforce_shapely_and_accepts_torch() -> None:
    rng = np.random.default_rng(3)
    n, m = 30, 20
    a = np.column_stack(
        [
            rng.uniform(-8, 8, (n, 2)),
            np.zeros(n),
            rng.uniform(1, 5, (n, 2)),
            np.ones(n),
            rng.uniform(-math.pi, math.pi, n),
        ]
    ).astype(np.float32)
    b = np.column_stack(
        [
            rng.uniform(-8, 8, (m, 2)),
            np.zeros(m),
            rng.uniform(1, 5, (m, 2)),
            np.ones(m),
            rng.uniform(-math.pi, math.pi, m),
        ]
    ).astype(np.float32)
    pa, pb = bev_polygons(a), bev_polygons(b)
    expected = np.array([[p.intersection(q).area / p.union(q).area for q in pb] for p in pa])
    assert (expected > 0).sum() > 10  # the case exercises the prefilter both ways
    np.testing.assert_allclose(rotated_iou_bev(a, b), expected, atol=1e-5)
    np.testing.assert_allclose(rotated_iou_bev(torch.from_numpy(a), b), expected, atol=1e-5)
    assert shapely.area(pa[0]) == pytest.approx(a[0, 3] * a[0, 4], rel=1e-5)


def test_rotated_iou_empty_inputs() -> None:
    assert rotated_iou_bev(np.zeros((0, 7)), np.array([box(0, 0)])).shape == (0, 1)
    assert rotated_iou_bev(np.array([box(0, 0)]), np.zeros((0, 7))).shape == (1, 0)


def test_nearest_bev_iou_exact_for_axis_aligned_and_snaps_rotated() -> None:
    a = torch.tensor([box(0, 0), box(1, 1, yaw=math.pi / 2)], dtype=torch.float32)
    b = torch.tensor([box(2, 0), box(0, 0, yaw=-math.pi / 2), box(0, 0, yaw=math.pi)])
    np.testing.assert_allclose(nearest_bev_iou(a, b).numpy(), rotated_iou_bev(a, b), atol=1e-6)
    # 80 degrees snaps to 90: same as the crossed box, 1/3; 10 degrees snaps to 0: identical.
    c = torch.tensor([box(0, 0, yaw=math.radians(80)), box(0, 0, yaw=math.radians(-10))])
    np.testing.assert_allclose(nearest_bev_iou(a[:1], c).numpy(), [[1 / 3, 1.0]], atol=1e-6)
    assert nearest_bev_iou(a, b[:0]).shape == (2, 0)


def test_encode_decode_round_trip() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 500
    boxes = torch.cat(
        [
            torch.rand(n, 2, generator=gen) * 280 - 140,
            torch.rand(n, 1, generator=gen) * 2 - 2,
            torch.rand(n, 3, generator=gen) * 4 + 0.5,
            torch.rand(n, 1, generator=gen) * 2 * math.pi - math.pi,
        ],
        dim=1,
    )
    anchors = boxes + torch.randn(n, 7, generator=gen) * torch.tensor([2, 2, 0.5, 0, 0, 0, 1])
    anchors[:, 3:6] = torch.tensor([3.9, 1.6, 1.56])
    res = encode_boxes(boxes, anchors)
    torch.testing.assert_close(decode_boxes(res, anchors), boxes, atol=1e-5, rtol=0)
    res64 = encode_boxes(boxes.double(), anchors.double())
    torch.testing.assert_close(
        decode_boxes(res64, anchors.double()), boxes.double(), atol=1e-9, rtol=0
    )
    # A box equal to its anchor encodes to zeros; dx is scaled by the anchor's diagonal.
    assert torch.allclose(encode_boxes(anchors, anchors), torch.zeros(n, 7), atol=1e-6)
    one = encode_boxes(
        torch.tensor([[1.0, 0, -1, 3.9, 1.6, 1.56, 0.5]]),
        torch.tensor([[0.0, 0, -1, 3.9, 1.6, 1.56, 0.0]]),
    )
    diag = math.hypot(3.9, 1.6)
    torch.testing.assert_close(one, torch.tensor([[1 / diag, 0, 0, 0, 0, 0, 0.5]]))
