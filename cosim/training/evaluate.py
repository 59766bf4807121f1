"""Evaluate a detector on a dataset folder with one ground truth for every fusion strategy.

The evaluation samples are cut with fixed data parameters (:data:`EVAL_DATA`: each frame's own
ego, up to 4 neighbours within 70 m, objects hit by at least one point of any of those CAVs,
centre inside the grid), whatever the model's own ``max_neighbours``: a no-fusion model is
scored against the same boxes as a cooperative one, as in OPV2V. The model then uses what its
config says (``none`` ignores the neighbours, ``late`` merges their boxes, intermediate fusion
takes up to its ``max_neighbours`` nearest).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from cosim.common.progress import progress_bar
from cosim.training.size_recall import SizeRecall
from cosim.training.visibility import ClassRecall, VisibilityRecall
from models.dataset import CooperativeDataset
from models.detector import CooperativeDetector
from models.inference import predict
from models.metrics import DEFAULT_IOU_THRESHOLDS, DetectionAccumulator

EVAL_DATA: dict[str, Any] = {
    "egos": "first",
    "max_neighbours": 4,
    "comm_range": 70.0,
    "min_points": 1,
}


def eval_dataset(model: CooperativeDetector, data_dir: str | Path) -> CooperativeDataset:
    """The evaluation samples of ``data_dir`` on the model's grid (fixed GT rule, no augment)."""
    return CooperativeDataset(data_dir, model.grid, **EVAL_DATA)


@dataclass(frozen=True)
class EvalOptions:
    """What one evaluation pass may vary: the first ``frames`` samples (None: all), the batch,
    the score threshold (None: the checkpoint's) and the PKD refiner's DDIM steps (None: the
    checkpoint's)."""

    frames: int | None = None
    batch_size: int = 4
    score_threshold: float | None = None
    refine_steps: int | None = None


def accumulate(
    model: CooperativeDetector,
    data_dir: str | Path,
    options: EvalOptions = EvalOptions(),
    *,
    progress: bool = True,
    console: Console | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    recalls: Sequence[ClassRecall] = (),
) -> DetectionAccumulator:
    """Run the model on the evaluation samples of ``data_dir`` and match its detections to the
    GT at IoU 0.3 / 0.5 / 0.7; ``on_batch(done, total)`` after each batch; each of ``recalls``
    (by visibility, by size class) also collects its recall."""
    dataset = eval_dataset(model, data_dir)
    total = len(dataset) if options.frames is None else min(options.frames, len(dataset))
    acc = DetectionAccumulator(DEFAULT_IOU_THRESHOLDS)
    with progress_bar(console, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"eval {Path(data_dir).name}", total=total)
        for start in range(0, total, options.batch_size):
            samples = [dataset[i] for i in range(start, min(start + options.batch_size, total))]
            with torch.no_grad():
                detections = predict(
                    model,
                    samples,
                    score_threshold=options.score_threshold,
                    refine_steps=options.refine_steps,
                )
            for sample, det in zip(samples, detections, strict=True):
                acc.add(det.boxes, det.scores, sample.gt_boxes)
                for recall in recalls:
                    recall.add(sample, det.boxes)
            bar.update(task, advance=len(samples))
            if on_batch is not None:
                on_batch(start + len(samples), total)
    return acc


def evaluate(
    model: CooperativeDetector,
    data_dir: str | Path,
    options: EvalOptions = EvalOptions(),
    *,
    global_sort: bool = False,
    progress: bool = True,
    console: Console | None = None,
) -> dict[float, float]:
    """``{0.3: AP, 0.5: AP, 0.7: AP}`` on ``data_dir`` (OPV2V protocol; ``global_sort`` as in
    :mod:`models.metrics`)."""
    acc = accumulate(model, data_dir, options, progress=progress, console=console)
    return acc.average_precision(global_sort)


def evaluate_report(
    model: CooperativeDetector,
    data_dir: str | Path,
    options: EvalOptions = EvalOptions(),
    *,
    progress: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Both orderings from one pass: ``{"ap": {...}, "ap_global_sort": {...}, "frames",
    "num_gt", "detections", "false_positives", "score_threshold", "vote_iou",
    "recall_by_visibility",
    "recall_by_size", "data", "protocol"}`` with IoU keys as strings (JSON-ready); recall by
    visibility (:mod:`cosim.training.visibility`) and by size class
    (:mod:`cosim.training.size_recall`) at IoU
    0.5, each class row also carrying ``found@0.7`` / ``recall@0.7`` (a box found at 0.5 but
    not 0.7 is a false positive at 0.7) and the median yaw, centre, length and width errors of
    its matches at 0.5."""
    visibility = VisibilityRecall((0.5, 0.7))
    by_size = SizeRecall((0.5, 0.7))
    acc = accumulate(
        model, data_dir, options, progress=progress, console=console, recalls=(visibility, by_size)
    )
    head = model.config.head

    def plain(aps: dict[float, float]) -> dict[str, float | None]:
        return {f"{t:g}": None if math.isnan(v) else v for t, v in aps.items()}

    return {
        "data": str(data_dir),
        "frames": acc.num_frames,
        "num_gt": acc.num_gt,
        "ap": plain(acc.average_precision(False)),
        "ap_global_sort": plain(acc.average_precision(True)),
        "detections": acc.num_detections,
        "false_positives": {f"{t:g}": n for t, n in acc.false_positives().items()},
        "score_threshold": head.score_threshold
        if options.score_threshold is None
        else options.score_threshold,
        "vote_iou": model.anchor_head.config.vote_iou,
        "recall_by_visibility": visibility.report(),
        "recall_by_size": by_size.report(),
        "protocol": dict(EVAL_DATA, fusion=model.config.fusion),
        "refine_steps": None
        if model.refiner is None
        else (model.refiner.config.steps if options.refine_steps is None else options.refine_steps),
    }
