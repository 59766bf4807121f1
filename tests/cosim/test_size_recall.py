"""Recall by vehicle size and the centre / size errors of matches, on hand-built boxes."""

from __future__ import annotations

import numpy as np
import pytest

from cosim.training.size_recall import SIZE_CLASSES, SizeRecall, size_classes
from cosim.training.visibility import ERROR_KEYS, match_errors
from models.batch import CooperativeSample

# A car, a van, a truck and a bus (the class comes from the length alone).
GT = np.array(
    [
        [10.0, 0.0, -1.0, 4.5, 1.8, 1.5, 0.0],
        [-10.0, 5.0, -1.0, 5.2, 2.0, 2.1, 1.2],
        [0.0, -12.0, -0.2, 12.0, 2.5, 3.5, 0.0],
        [20.0, 12.0, -0.2, 11.0, 2.5, 3.2, 0.0],
    ],
    np.float32,
)


def sample() -> CooperativeSample:
    return CooperativeSample(np.zeros((1, 4), np.float32), (), np.zeros((0, 4, 4)), GT)


def test_size_class_by_length_with_inclusive_upper_bounds() -> None:
    lengths = np.array([3.9, 4.9, 4.91, 6.0, 6.01, 12.0])
    boxes = np.zeros((6, 7))
    boxes[:, 3] = lengths
    assert [SIZE_CLASSES[c] for c in size_classes(boxes)] == [
        "car",
        "car",
        "van",
        "van",
        "truck_bus",
        "truck_bus",
    ]


def test_match_errors_known_values() -> None:
    pred = GT[:1].astype(np.float64).copy()
    pred[0, :2] += [0.3, 0.4]  # 0.5 m off
    pred[0, 3] -= 0.2
    pred[0, 4] += 0.1
    pred[0, 6] += np.pi + np.radians(4.0)  # a flip by pi does not count
    errors = match_errors(pred, GT[:1].astype(np.float64))
    np.testing.assert_allclose(errors[0], [4.0, 0.5, 0.2, 0.1], atol=1e-5)
    assert len(ERROR_KEYS) == errors.shape[1]


def test_recall_and_errors_per_size() -> None:
    recall = SizeRecall((0.5, 0.7))
    car = GT[0] + np.array([0.4, 0, 0, 0, 0, 0, 0], np.float32)  # 4.1/4.9 = 0.84
    truck = GT[2] + np.array([0, 0, 0, -4.0, 0, 0, 0], np.float32)  # 8/12 = 0.67
    recall.add(sample(), np.stack([car, truck]))
    report = recall.report()
    assert {k: v["gt"] for k, v in report.items()} == {"car": 1, "van": 1, "truck_bus": 2}
    assert [v["found"] for v in report.values()] == [1, 0, 1]
    assert [v["found@0.7"] for v in report.values()] == [1, 0, 0]
    assert report["truck_bus"]["recall"] == 0.5 and report["van"]["recall"] == 0.0
    assert report["car"]["median_centre_error_m"] == pytest.approx(0.4, abs=1e-5)
    assert report["truck_bus"]["median_length_error_m"] == pytest.approx(4.0, abs=1e-5)
    assert report["truck_bus"]["median_width_error_m"] == pytest.approx(0.0, abs=1e-5)
    assert all(report["van"][key] is None for key in ERROR_KEYS)
