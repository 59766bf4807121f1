"""Box decoding and NMS hold on any finite input: a feature map scaled by 1e30 (which the
ego's value checks reject, but a model without bounds only checks finiteness) gives no
exception and no non-finite box; NMS drops non-finite, absurd and degenerate boxes."""

from __future__ import annotations

import numpy as np
import torch

from models.box_ops import MAX_BOX_METRES
from models.nms import rotated_nms
from tests.agents.helpers import tiny_model


def test_nms_on_hostile_boxes_keeps_only_sane_ones() -> None:
    good = [0.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.3]
    boxes = np.array(
        [
            good,
            [1e300, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],  # finite but far beyond any map
            [0.0, 0.0, 0.0, 1e300, 1e300, 1.5, 0.0],  # finite, absurd size
            [np.inf, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],
            [np.nan, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],
            [0.0, 0.0, 0.0, 0.0, 2.0, 1.5, 0.0],  # zero length
            [100.0, 0.0, 0.0, 4.0, 2.0, 1.5, 1e300],  # a finite yaw far out of range is still a box
            [30.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],
        ]
    )
    scores = np.array([0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, np.nan])
    keep = rotated_nms(boxes, scores, 0.1)
    assert keep.tolist() == [0, 6]


def test_head_decode_survives_huge_features() -> None:
    model = tiny_model("attention")
    c, h, w = model.message_shape
    rng = np.random.default_rng(0)
    fused = torch.from_numpy(rng.uniform(0, 1, (1, c, h, w)).astype(np.float32)) * 1e30
    with torch.no_grad():
        dets = model.detect(model.head(fused))[0]
    boxes = np.asarray(dets.boxes)
    assert np.isfinite(boxes).all() and np.isfinite(np.asarray(dets.scores)).all()
    assert (np.abs(boxes[:, :6]) <= MAX_BOX_METRES).all()
