"""Recall by vehicle size: do trucks and buses get found as well as cars?

Ground truth stays the one class "vehicle" (OPV2V); this only splits it for the report. A box's
size class comes from its length, so the rule works on any data (the synthetic world's
categories are not in a :class:`~models.batch.CooperativeSample`, and OPV2V's are CARLA
blueprints): ``car`` up to :data:`VAN_MIN_LENGTH` (inclusive), ``van`` up to
:data:`TRUCK_MIN_LENGTH` (inclusive), ``truck_bus`` above. The bounds follow
``scenarios/traffic.py`` (cars 4.2-4.9 m, vans 4.9-5.5 m, trucks 10.5-13 m) and leave room
for OPV2V's longer SUVs and vans (up to 6 m).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from cosim.training.visibility import ClassRecall
from models.batch import CooperativeSample

SIZE_CLASSES = ("car", "van", "truck_bus")
VAN_MIN_LENGTH = 4.9  # m: a box longer than this is a van (or a truck, below)
TRUCK_MIN_LENGTH = 6.0  # m: a box longer than this is a truck or bus


def size_classes(boxes: NDArray[np.floating]) -> NDArray[np.int64]:
    """Index into :data:`SIZE_CLASSES` for each ``(M, 7)`` box, by its length (column 3)."""
    length = np.asarray(boxes, np.float64).reshape(-1, 7)[:, 3]
    return np.searchsorted([VAN_MIN_LENGTH, TRUCK_MIN_LENGTH], length, side="left").astype(np.int64)


class SizeRecall(ClassRecall):
    """:class:`~cosim.training.visibility.ClassRecall` over :data:`SIZE_CLASSES`."""

    class_names = SIZE_CLASSES

    def classes_of(self, sample: CooperativeSample) -> NDArray[np.int64]:
        return size_classes(sample.gt_boxes)
