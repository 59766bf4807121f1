"""Box voting after NMS: weighted means of overlapping candidates, on hand-built boxes."""

from __future__ import annotations

import math

import numpy as np
import torch

from models.box_voting import vote_boxes
from models.grid import GridSpec
from models.head import AnchorHead, HeadConfig, HeadOutput

CAR = [0.0, 0.0, -1.0, 4.5, 1.8, 1.5, 0.0]


def test_weighted_mean_of_overlapping_candidates_only() -> None:
    kept = np.array([CAR], np.float32)
    cands = np.array(
        [
            CAR,
            [0.4, 0.2, -1.2, 4.7, 1.9, 1.5, 0.1],  # overlaps the kept box: votes
            [0.2, 0.0, -1.0, 4.5, 1.8, 1.5, math.pi - 0.1],  # flipped by ~pi: votes, yaw -0.1
            [9.0, 0.0, -1.0, 4.5, 1.8, 1.5, 0.0],  # another car: does not vote
        ],
        np.float32,
    )
    scores = np.array([0.6, 0.2, 0.2, 0.9], np.float32)
    out = vote_boxes(kept, cands, scores, 0.3)
    np.testing.assert_allclose(out[0, :6], [0.12, 0.04, -1.04, 4.54, 1.82, 1.5], atol=1e-5)
    np.testing.assert_allclose(out[0, 6], 0.2 * 0.1 + 0.2 * -0.1, atol=1e-6)
    # A box with no candidate near it (not even itself) stays as it was.
    alone = np.array([[30.0, 0.0, -1.0, 4.5, 1.8, 1.5, 0.5]], np.float32)
    np.testing.assert_array_equal(vote_boxes(alone, cands, scores, 0.3), alone)
    assert vote_boxes(np.zeros((0, 7)), cands, scores, 0.3).shape == (0, 7)


def test_head_votes_only_when_configured() -> None:
    grid = GridSpec((-4.0, -4.0, -3.0, 4.0, 4.0, 1.0), (0.4, 0.4, 4.0), feature_stride=2)
    cls = torch.full((1, 2, 10, 10), -10.0)
    cls[0, 0, 5, 5], cls[0, 0, 5, 6] = 3.0, 2.0  # two yaw-0 anchors 0.8 m apart, same car
    reg = torch.zeros(1, 14, 10, 10)
    plain = AnchorHead(4, grid, HeadConfig()).decode(HeadOutput(cls, reg))[0]
    voted = AnchorHead(4, grid, HeadConfig(vote_iou=0.3)).decode(HeadOutput(cls, reg))[0]
    assert len(plain) == len(voted) == 1
    np.testing.assert_array_equal(plain.scores, voted.scores)
    w = torch.sigmoid(torch.tensor([3.0, 2.0])).numpy()
    assert plain.boxes[0, 0] == np.float32(0.4)  # cell (5, 5) centre: x = -4 + 0.8 * 5.5
    np.testing.assert_allclose(voted.boxes[0, 0], (0.4 * w[0] + 1.2 * w[1]) / w.sum(), atol=1e-5)
