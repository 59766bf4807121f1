"""AP on hand-computed cases (OPV2V protocol) and corruption errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.metrics import (
    DetectionAccumulator,
    evaluate_detections,
    match_detections,
    mean_relative_corruption_error,
    relative_corruption_error,
    voc_ap,
)


def box(x: float, y: float, yaw: float = 0.0) -> list:
    return [x, y, 0.0, 4.0, 2.0, 1.5, yaw]


def arr(*rows: list) -> np.ndarray:
    return np.array(rows, dtype=np.float32).reshape(-1, 7)


GT2 = arr(box(0, 0), box(20, 0))


def test_two_gt_three_detections_tp_fp_tp() -> None:
    # Scores .9 on GT0 (tp), .8 a near-duplicate of GT0 (GT0 taken -> fp), .7 on GT1 (tp).
    # tp/fp: 1,0,1 -> precision 1, 1/2, 2/3; recall 1/2, 1/2, 1.
    # Envelope: 1 up to recall 1/2, then 2/3. AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    preds = arr(box(20, 0), box(0, 0), box(0.1, 0))
    scores = np.array([0.7, 0.9, 0.8])  # deliberately not in score order
    ap = evaluate_detections([(preds, scores, GT2)])
    assert set(ap) == {0.3, 0.5, 0.7}
    for value in ap.values():
        assert value == pytest.approx(5 / 6)


def test_accumulator_counts_detections_and_false_positives() -> None:
    acc = DetectionAccumulator()
    acc.add(arr(box(20, 0), box(0, 0), box(0.1, 0)), np.array([0.7, 0.9, 0.8]), GT2)
    acc.add(arr(box(50, 0)), np.array([0.5]), GT2)  # a frame with one stray box
    assert acc.num_detections == 4
    assert acc.false_positives() == {0.3: 2, 0.5: 2, 0.7: 2}


def test_empty_predictions_and_empty_ground_truth() -> None:
    assert evaluate_detections([(arr(), np.zeros(0), GT2)]) == {0.3: 0.0, 0.5: 0.0, 0.7: 0.0}
    # No GT anywhere: recall is undefined -> NaN, with or without detections, in both modes.
    for preds, scores in ((arr(), np.zeros(0)), (arr(box(0, 0)), np.array([0.9]))):
        for global_sort in (False, True):
            ap = evaluate_detections([(preds, scores, arr())], global_sort=global_sort)
            assert all(math.isnan(v) for v in ap.values())
    assert all(math.isnan(v) for v in evaluate_detections([]).values())
    # A frame without GT still adds its false positives to the others' curve:
    # order fp(.95), tp(.9): precision 0, 1/2 at recall 0, 1/2 -> AP = 1/2 * 1/2.
    frames = [(arr(box(5, 5)), [0.95], arr()), (arr(box(0, 0)), [0.9], GT2)]
    assert evaluate_detections(frames, (0.5,))[0.5] == pytest.approx(0.25)


def test_rotated_box_matches_at_03_not_05() -> None:
    # 4x2 and the same box turned 90 deg about its centre: IoU 4 / 12 = 1/3.
    ap = evaluate_detections([(arr(box(0, 0, math.pi / 2)), np.array([0.8]), arr(box(0, 0)))])
    assert ap == {0.3: 1.0, 0.5: 0.0, 0.7: 0.0}


def test_greedy_matching_uses_only_unmatched_gt() -> None:
    iou = np.array([[0.6, 0.4], [0.55, 0.0]])
    assert match_detections(iou, 0.5).tolist() == [True, False]
    iou = np.array([[0.6, 0.4], [0.7, 0.5]])  # det 1 prefers GT 0, which is taken -> GT 1
    assert match_detections(iou, 0.5).tolist() == [True, True]
    assert match_detections(np.zeros((3, 0)), 0.5).tolist() == [False, False, False]


def test_global_sort_versus_frame_order() -> None:
    frame_a = (arr(box(50, 50), box(0, 0)), np.array([0.5, 0.4]), arr(box(0, 0)))  # fp .5, tp .4
    frame_b = (arr(box(0, 0)), np.array([0.9]), arr(box(0, 0)))  # tp .9
    # Frame order a, b: fp, tp, tp -> precision 0, 1/2, 2/3; recall 0, 1/2, 1.
    # Envelope 2/3 everywhere -> AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3.
    assert evaluate_detections([frame_a, frame_b], (0.5,))[0.5] == pytest.approx(2 / 3)
    # Order b, a: tp, fp, tp -> 5/6 (as the hand case above).
    assert evaluate_detections([frame_b, frame_a], (0.5,))[0.5] == pytest.approx(5 / 6)
    # Global sort: .9 tp, .5 fp, .4 tp whatever the frame order -> 5/6.
    for frames in ([frame_a, frame_b], [frame_b, frame_a]):
        ap = evaluate_detections(frames, (0.5,), global_sort=True)
        assert ap[0.5] == pytest.approx(5 / 6)


def test_accumulator_incremental_and_torch_inputs() -> None:
    acc = DetectionAccumulator((0.5,))
    acc.add(torch.tensor(arr(box(0, 0))), torch.tensor([0.9]), torch.tensor(GT2))
    acc.add(arr(box(20.5, 0)), [0.6], arr(box(20, 0)))  # IoU 3.5/4.5 = 0.78: tp
    assert acc.num_gt == 3 and acc.num_frames == 2
    # tp, tp over 3 GT: recall 1/3, 2/3 at precision 1 -> AP 2/3.
    assert acc.average_precision()[0.5] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        acc.add(arr(box(0, 0), box(1, 1)), [0.5], GT2)


def test_voc_ap_envelope() -> None:
    # Points (0.5, 1.0) and (1.0, 0.5): 0.5 * 1 + 0.5 * 0.5.
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    # A dip in precision is filled by the envelope: (0.25, .5), (0.5, 1) -> 0.5 * 1.
    assert voc_ap(np.array([0.25, 0.5]), np.array([0.5, 1.0])) == pytest.approx(0.5)


def test_relative_corruption_errors() -> None:
    assert relative_corruption_error(0.8, 0.6) == pytest.approx(0.25)
    assert relative_corruption_error(0.5, 0.6) == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="non-zero clean AP"):
        relative_corruption_error(0.0, 0.1)
    assert mean_relative_corruption_error(0.8, {"fog": 0.6, "snow": 0.4}) == pytest.approx(0.375)
    assert mean_relative_corruption_error(0.8, [0.8, 0.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one"):
        mean_relative_corruption_error(0.8, {})
