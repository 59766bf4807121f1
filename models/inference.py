"""Inference entry points: encoded maps, clouds or boxes -> detections in the ego LiDAR frame.

One path for every command: ``cosim run`` (the ego's payload strategy, :mod:`agents.payloads`)
calls :func:`fuse_and_detect`, :func:`detect_early` and :func:`detect_alone` +
:func:`models.late_fusion.detect_late` per ego; ``cosim eval`` and ``cosim robustness`` call
:func:`predict` on batches of samples, which ends in the same :func:`detect_features` (maps,
early fusion) and :func:`~models.late_fusion.detect_late` (boxes).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from models.batch import CooperativeSample
from models.detector import CooperativeDetector
from models.device import to_numpy
from models.head import Detections
from models.late_fusion import detect_late
from models.received import EgoDetections, NeighbourFeature, NeighbourInput
from models.voxelize import PointsLike


@contextlib.contextmanager
def inference_mode(model: CooperativeDetector) -> Iterator[None]:
    """``model`` in eval mode and no grad for the duration; afterwards each module's own
    previous mode again (training keeps a frozen part's BatchNorm in eval: not undone)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes:
            module.training = mode


def detect_features(
    model: CooperativeDetector,
    ego_maps: torch.Tensor,
    neighbours: Sequence[Sequence[NeighbourInput]],
    refine_steps: int | None = None,
    refine_neighbours: bool = False,
    score_threshold: float | None = None,
    nms_iou: float | None = None,
) -> list[EgoDetections]:
    """The one inference path from encoded maps: ego maps ``(B, *map_shape)`` (or one
    ``(C, H, W)``) and each ego's received neighbours -> refine (the ego maps, and the
    chosen neighbours' when ``refine_neighbours``) -> warp -> fuse -> bev -> head ->
    detect. ``refine_steps``: DDIM steps (None: the refiner's configured K, 0: off); the
    neighbours' refinement is timed with ``fuse``, where they are chosen. Neighbours beyond
    ``comm_range`` / past the nearest ``max_neighbours`` are ignored.
    """
    if model.config.fusion == "late":
        raise ValueError("detector: late fusion merges boxes; use predict or merge_late")
    with inference_mode(model):
        ego = ego_maps.to(model.device)
        ego = ego.unsqueeze(0) if ego.dim() == 3 else ego
        b = ego.shape[0]
        t0 = time.perf_counter()
        refined = model.refine(ego, refine_steps)
        if refined is not None:
            ego = refined.feature
        t1 = time.perf_counter()
        nbr_steps = None
        if refine_neighbours and model.refiner is not None:
            nbr_steps = model.refiner.config.steps if refine_steps is None else refine_steps
        fused = model.fuse_neighbours(ego, neighbours, nbr_steps)
        t2 = time.perf_counter()
        detections = model.detect(model.head(model.bev(fused.features)), score_threshold, nms_iou)
        t3 = time.perf_counter()
    timings = {"refine": (t1 - t0) / b, "fuse": (t2 - t1) / b, "head": (t3 - t2) / b}
    return [
        EgoDetections(
            detections[j],
            fused.chosen[j],
            to_numpy(fused.coverage[j]),
            float("nan") if refined is None else float(refined.gamma[j]),
            0 if refined is None else int(refined.steps_run[j]),
            timings,
        )
        for j in range(b)
    ]


def fuse_and_detect(
    model: CooperativeDetector,
    ego_feature: torch.Tensor,
    neighbours: Sequence[NeighbourFeature],
    refine_steps: int | None = None,
    refine_neighbours: bool = False,
) -> EgoDetections:
    """One ego's own map ``(C, H, W)`` and its decoded neighbours -> refine, warp, fuse, head:
    :func:`detect_features` for a batch of one."""
    return detect_features(
        model,
        ego_feature,
        [neighbours],
        refine_steps=refine_steps,
        refine_neighbours=refine_neighbours,
    )[0]


def encode_points(model: CooperativeDetector, points: NDArray[np.float32]) -> torch.Tensor:
    """One cloud (sensor frame) -> its message map ``model.message_shape``, no gradient (its
    own map is ``model.own_map`` of it)."""
    with torch.no_grad():
        return model.encode([points])[0]


def detect_early(
    model: CooperativeDetector,
    own_points: NDArray[np.float32],
    neighbour_clouds: Sequence[NDArray[np.float32]],
    neighbour_to_ego: NDArray[np.float64],
    refine_steps: int | None = None,
) -> EgoDetections:
    """Early fusion for one ego: the chosen neighbours' clouds moved into the ego frame after
    the ego's own (:meth:`CooperativeDetector.merged_cloud`), one encode, then
    :func:`fuse_and_detect` with no neighbour map; the merge and encode are timed as ``fuse``.
    """
    t0 = time.perf_counter()
    sample = CooperativeSample(
        own_points, tuple(neighbour_clouds), neighbour_to_ego, np.zeros((0, 7), np.float32)
    )
    merged = encode_points(model, model.merged_cloud(sample))
    merge_s = time.perf_counter() - t0
    result = fuse_and_detect(model, merged, [], refine_steps)
    timings = {**result.timings, "fuse": result.timings.get("fuse", 0.0) + merge_s}
    return EgoDetections(
        result.detections,
        model.select_neighbours(neighbour_to_ego),
        result.coverage,
        result.gamma,
        result.steps_run,
        timings,
    )


def detect_alone(
    model: CooperativeDetector,
    clouds: Sequence[PointsLike],
    score_threshold: float | None = None,
    nms_iou: float | None = None,
) -> list[Detections]:
    """Each cloud detected on its own, in its own sensor frame (encode -> bev -> head ->
    detect, no fusion): what every vehicle runs before late fusion merges the boxes."""
    with inference_mode(model):
        maps = model.own_map(model.encode(clouds))
        return model.detect(model.head(model.bev(maps)), score_threshold, nms_iou)


def predict(
    model: CooperativeDetector,
    samples: Sequence[CooperativeSample],
    score_threshold: float | None = None,
    nms_iou: float | None = None,
    refine_steps: int | None = None,
) -> list[Detections]:
    """Detections per sample in the ego LiDAR frame, for every fusion strategy: encode the
    batch's clouds, then :func:`detect_features` (late fusion: every agent's boxes by
    :func:`detect_alone`, merged per ego by :func:`~models.late_fusion.detect_late`)."""
    if model.config.fusion == "late":
        with inference_mode(model):
            return _predict_late(model, samples, score_threshold, nms_iou)
    results = predict_ego(model, samples, score_threshold, nms_iou, refine_steps)
    return [r.detections for r in results]


def predict_ego(
    model: CooperativeDetector,
    samples: Sequence[CooperativeSample],
    score_threshold: float | None = None,
    nms_iou: float | None = None,
    refine_steps: int | None = None,
    refine_neighbours: bool = False,
) -> list[EgoDetections]:
    """:func:`predict` with each ego's whole result (the refiner's ``gamma``, steps run and
    stage timings beside the detections); every strategy but late fusion.
    ``refine_neighbours`` refines each received map too (:func:`detect_features`)."""
    with inference_mode(model):
        ego_maps, neighbours = model.encode_samples(samples)
        return detect_features(
            model,
            ego_maps,
            neighbours,
            refine_steps,
            refine_neighbours,
            score_threshold=score_threshold,
            nms_iou=nms_iou,
        )


def _predict_late(
    model: CooperativeDetector,
    samples: Sequence[CooperativeSample],
    score_threshold: float | None,
    nms_iou: float | None,
) -> list[Detections]:
    chosen = [model.select_neighbours(s.neighbour_to_ego) for s in samples]
    clouds = [s.ego_points for s in samples]
    clouds += [s.neighbour_points[i] for s, idx in zip(samples, chosen, strict=True) for i in idx]
    per_agent = detect_alone(model, clouds, score_threshold, nms_iou)
    results, start = [], len(samples)
    for b, (s, idx) in enumerate(zip(samples, chosen, strict=True)):
        theirs: list[tuple[Detections, ArrayLike]] = [
            (per_agent[start + j], s.neighbour_to_ego[i]) for j, i in enumerate(idx)
        ]
        start += len(idx)
        results.append(detect_late(model, per_agent[b], theirs, nms_iou))
    return results
