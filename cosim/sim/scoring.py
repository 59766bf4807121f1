"""Scoring a run: ground truth in the ego frame, per-frame counts, and the run summary.

Ground truth follows :func:`models.dataset.sample_from_frame` (the training rule): objects in
the grid's x/y range, not the ego itself, seen by at least ``min_points`` LiDAR points of the
ego and its true neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from agents.steps import EGO_STAGES, SENSE_STAGES
from cosim.sim.run_config import RunConfig
from models.box_ops import rotated_iou_bev
from models.dataset import sample_from_frame
from models.detector_config import DetectorConfig
from models.metrics import DEFAULT_IOU_THRESHOLDS, DetectionAccumulator, match_detections
from scenarios.frame import Frame

# "world" is the source: traffic and LiDAR simulation, or reading a recorded frame.
STAGES = ("world", *SENSE_STAGES, "channel", *EGO_STAGES)


def ground_truth(
    frame: Frame, ego_id: int, config: DetectorConfig, min_points: int = 1
) -> NDArray[np.float32]:
    """GT boxes ``(M, 7)`` in the ego LiDAR frame, by the training rule."""
    sample = sample_from_frame(
        frame, ego_id, config.grid, config.max_neighbours, config.comm_range, min_points
    )
    return np.asarray(sample.gt_boxes, np.float32).reshape(-1, 7)


def true_positives(
    boxes: NDArray[np.float32], scores: NDArray[np.float32], gt: NDArray[np.float32]
) -> dict[float, int]:
    """Matched detections per IoU threshold for one frame (greedy, score order)."""
    order = np.argsort(-scores, kind="stable")
    iou = rotated_iou_bev(boxes[order], gt)
    return {t: int(match_detections(iou, t).sum()) for t in DEFAULT_IOU_THRESHOLDS}


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 90, 99)) -> dict[str, float]:
    """``{"p50": ..}``; NaN when there are no values."""
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) if arr.size else math.nan for q in qs}


def message_summary(log: pa.Table, receptions: pa.Table) -> dict[str, Any]:
    """Counts, sizes and latency of the receptions of a run (from the channel log, one row per
    broadcast and listener, and the egos' reception rows).

    ``sent`` counts receptions decided by the channel: ``sent = delivered + lost +
    out_of_range + collision + too_old + in_flight_at_end``. ``fused`` counts fusions, a
    message held over from an earlier tick (``held_fused``) once per tick it is fused.
    ``latency_s`` is the age of each message on arrival; ``fused_age_s`` its age when fused;
    ``wire_bytes`` the percentiles of the bytes on the wire per reception (any payload kind).
    """
    rows = log.to_pydict()
    dropped = rows["dropped"]
    arrival, t_send = rows["t_arrival"], rows["t_send"]
    delivered_at = rows["t_delivered"]
    sent = len(dropped)
    status = receptions.column("status").to_pylist() if receptions.num_rows else []
    stale = receptions.column("stale").to_pylist() if receptions.num_rows else []
    held = receptions.column("held").to_pylist() if receptions.num_rows else []
    ages = receptions.column("age_s").to_pylist() if receptions.num_rows else []
    latencies = [a - s for a, s in zip(arrival, t_send, strict=True) if a is not None]
    wire = rows["wire_bytes"]
    raw = rows["raw_bytes"]
    return {
        "sent": sent,
        "delivered": sum(
            1 for d, t in zip(dropped, delivered_at, strict=True) if d is None and t is not None
        ),
        "fused": status.count("fused"),
        "stale_fused": sum(1 for s, st in zip(status, stale, strict=True) if s == "fused" and st),
        "held_fused": sum(1 for s, h in zip(status, held, strict=True) if s == "fused" and h),
        "late_delivered": sum(1 for st in stale if st),
        "lost": dropped.count("lost"),
        "out_of_range": dropped.count("out_of_range"),
        "collision": dropped.count("collision"),
        "too_old": dropped.count("too_old"),
        "in_flight_at_end": sum(
            1
            for d, a, t in zip(dropped, arrival, delivered_at, strict=True)
            if d is None and a is not None and t is None
        ),
        "codec_errors": sum(status.count(s) for s in ("codec_error", "wrong_grid", "rejected")),
        "superseded": status.count("superseded"),
        "mean_wire_bytes": float(np.mean(wire)) if wire else math.nan,
        "wire_bytes": percentiles(wire),
        "mean_raw_bytes": float(np.mean(raw)) if raw else math.nan,
        "compression_ratio": float(np.sum(raw) / np.sum(wire)) if wire and sum(wire) else math.nan,
        "latency_s": percentiles(latencies),
        "fused_age_s": percentiles([a for s, a in zip(status, ages, strict=True) if s == "fused"]),
    }


def medium_summary(transmissions: pa.Table, busy: pa.Table, num_ticks: int) -> dict[str, Any]:
    """The shared medium over a run: broadcasts queued, put on the air, replaced unsent by a
    newer message (age of information) or still queued at the end; air time; busy ratio
    (fraction of each tick some audible transmission is on the air) over vehicles and ticks."""
    tx = transmissions.to_pydict()
    status = tx["status"]
    sent = [i for i, st in enumerate(status) if st == "sent"]
    air = [tx["air_s"][i] for i in sent]
    access = [tx["t_start"][i] - tx["t_send"][i] for i in sent]
    ratio = busy.column("busy_ratio").to_pylist() if busy.num_rows else []
    return {
        "queued": len(status),
        "transmissions": len(sent),
        "transmissions_per_tick": len(sent) / num_ticks if num_ticks else math.nan,
        "replaced": status.count("replaced"),
        "queued_at_end": status.count("queued_at_end"),
        "mean_frames": float(np.mean([tx["frames"][i] for i in sent])) if sent else math.nan,
        "mean_air_s": float(np.mean(air)) if air else math.nan,
        "access_delay_s": percentiles(access),
        "busy_ratio": {
            "mean": float(np.mean(ratio)) if ratio else math.nan,
            **percentiles(ratio, (90,)),
            "max": float(np.max(ratio)) if ratio else math.nan,
        },
    }


def stage_summary(timings: pa.Table, num_ticks: int) -> dict[str, float]:
    """Mean seconds per tick of each stage, summed over the agents that ran it."""
    out = {stage: 0.0 for stage in STAGES}
    if timings.num_rows and num_ticks:
        stages = timings.column("stage").to_pylist()
        seconds = timings.column("seconds").to_pylist()
        for stage, s in zip(stages, seconds, strict=True):
            if stage in out:
                out[stage] += s
        out = {k: v / num_ticks for k, v in out.items()}
    return out


def ap_summary(acc: DetectionAccumulator) -> dict[str, float]:
    """``{"ap@0.3": .., "ap@0.5": .., "ap@0.7": ..}`` (NaN without ground truth)."""
    return {f"ap@{t:g}": v for t, v in acc.average_precision().items()}


def refine_summary(
    frames: pa.Table, config: DetectorConfig, run: RunConfig
) -> dict[str, Any] | None:
    """What the PKD refiner did over a run: the steps asked for, the fraction of ego-ticks it
    skipped (adaptive steps: the noise adapter judged the map clean), mean and range of its
    ``gamma``; None for a model without a refiner. ``run`` is the RunConfig (its refine_*
    overrides)."""
    if config.refiner is None:
        return None
    asked = config.refiner.steps if run.refine_steps is None else run.refine_steps
    skip = config.refiner.skip_above if run.refine_skip_above is None else run.refine_skip_above
    gamma = np.asarray(frames.column("refine_gamma").to_pylist(), np.float64)
    ran = np.asarray(frames.column("refine_steps").to_pylist(), np.int64)
    ok = np.asarray(frames.column("ego_ok").to_pylist(), bool)
    gamma, ran = gamma[ok], ran[ok]
    finite = gamma[np.isfinite(gamma)]
    return {
        "steps": asked,
        "refine_neighbours": run.refine_neighbours,
        "skip_above": skip,
        "ego_ticks": int(ok.sum()),
        "skipped_fraction": float(np.mean(ran == 0)) if asked > 0 and ran.size else math.nan,
        "mean_steps_run": float(ran.mean()) if ran.size else math.nan,
        "gamma_mean": float(finite.mean()) if finite.size else math.nan,
        "gamma_min": float(finite.min()) if finite.size else math.nan,
        "gamma_max": float(finite.max()) if finite.size else math.nan,
    }
