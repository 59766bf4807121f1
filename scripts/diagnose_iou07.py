"""Why do boxes found through a neighbour miss IoU 0.7? Numbers, not guesses (issue 12).

Usage (from the repository root, after building a test split)::

    python scripts/diagnose_iou07.py models/checkpoints/max.pt --data data/test --frames 60

Two parts, each printed as a table:

1. **Which error costs IoU 0.7.** Every GT box found at IoU >= 0.5 by the model as configured
   is matched to its best detection; the detection is then "repaired" one quantity at a time
   (centre set to the GT's, then length and width, then yaw) and the share of boxes that
   reach 0.7 after each repair is printed, with the signed median errors (centre along and
   across the GT heading, length, width) per visibility class (ego saw it / only a neighbour).
2. **Where a neighbour-only box loses its accuracy** (intermediate fusion models only). For
   every GT box only a neighbour saw, the same weights detect it five ways, each from that
   one neighbour's evidence alone:

   * ``fused``: the model as configured (ego + every neighbour's warped map);
   * ``warped map``: the neighbour's message map warped into the ego grid (bilinear
     ``grid_sample``, as ``models/warp.py`` does), then backbone + head, no ego;
   * ``nearest warp``: the same with nearest-cell sampling (no blending of a pillar with its
     empty neighbours, which scales its features down by up to 4x at a half-pillar shift);
   * ``points moved``: the neighbour's *points* moved into the ego frame, encoded there, then
     backbone + head (what the warp would give if it were exact);
   * ``own frame``: the neighbour detects in its own frame, boxes moved to the ego frame
     (late fusion of that neighbour alone).

   ``warped map`` against ``points moved`` isolates the feature warp (same evidence, same
   weights; only resampling a pillar map whose channels encode sub-pillar geometry in the
   sender's frame differs); ``own frame`` against ``points moved`` shows what the grid's
   orientation alone does. Rows are split by the neighbour's heading relative to the ego
   (nearest multiple of 90 degrees: a whole-cell shift plus a 0/90/180 degree turn resamples
   exactly, any other turn interpolates).

A one-off analysis: it reads models, never writes anything.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from cosim.training.evaluate import eval_dataset
from cosim.training.visibility import VISIBILITY_CLASSES, visibility_classes
from models.batch import CooperativeSample
from models.box_ops import rotated_iou_bev
from models.checkpoint import load_checkpoint
from models.detector import CooperativeDetector
from models.inference import predict
from models.warp import affine_theta
from scenarios.geometry import boxes_to_frame, points_in_boxes, points_to_frame, wrap_angle

REPAIRS = ("as is", "+centre", "+centre+size", "+centre+size+yaw")


def best_match(pred: NDArray[np.float64], gt: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
    """Per GT box: index of the detection of highest BEV IoU (-1 when none) and that IoU."""
    if len(pred) == 0 or len(gt) == 0:
        return np.full(len(gt), -1), np.zeros(len(gt))
    iou = rotated_iou_bev(pred, gt)
    return iou.argmax(axis=0), iou.max(axis=0)


def repaired_ious(pred: NDArray[np.float64], gt: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(N, 4)`` IoU of each matched pair as is and after each cumulative repair."""
    out = np.zeros((len(pred), len(REPAIRS)))
    fixed = pred.copy()
    for k, cols in enumerate(((), (0, 1), (3, 4), (6,))):
        fixed[:, list(cols)] = gt[:, list(cols)]
        out[:, k] = np.diag(rotated_iou_bev(fixed, gt))
    return out


def signed_errors(pred: NDArray[np.float64], gt: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(N, 5)``: centre offset along and across the GT heading, length and width differences
    (pred - GT, metres), and yaw error modulo pi (degrees, unsigned)."""
    d = pred[:, :2] - gt[:, :2]
    cos, sin = np.cos(gt[:, 6]), np.sin(gt[:, 6])
    along, across = d[:, 0] * cos + d[:, 1] * sin, -d[:, 0] * sin + d[:, 1] * cos
    yaw = np.degrees(np.abs(wrap_angle(2.0 * (pred[:, 6] - gt[:, 6]))) / 2.0)
    return np.column_stack([along, across, pred[:, 3] - gt[:, 3], pred[:, 4] - gt[:, 4], yaw])


def seeing_neighbour(sample: CooperativeSample, gt: NDArray[np.float64]) -> NDArray[np.int64]:
    """Per GT box, the neighbour with the most points in it (-1 without neighbours)."""
    if not sample.neighbour_points:
        return np.full(len(gt), -1)
    counts = [
        points_in_boxes(points_to_frame(p, t)[:, :3], gt).sum(axis=0)
        for p, t in zip(sample.neighbour_points, sample.neighbour_to_ego, strict=True)
    ]
    return np.argmax(np.stack(counts), axis=0)


def turn_bucket(nbr_to_ego: NDArray[np.float64]) -> str:
    """The neighbour's heading off the nearest multiple of 90 degrees, as a label."""
    yaw = math.degrees(math.atan2(nbr_to_ego[1, 0], nbr_to_ego[0, 0]))
    off = abs((yaw + 45.0) % 90.0 - 45.0)
    return "turn < 5 deg" if off < 5.0 else ("turn 5-20 deg" if off < 20.0 else "turn 20-45 deg")


class SingleSource:
    """Detections from one neighbour's evidence alone, three ways (see the module doc)."""

    def __init__(self, model: CooperativeDetector) -> None:
        self.model = model

    def warped_map(self, points: NDArray[np.float32], to_ego: NDArray[np.float64]) -> NDArray:
        m = self.model
        warped = m.warp(m.encode([points]), to_ego[None])
        return m.detect(m.head(warped.features * warped.mask))[0].boxes

    def nearest_warp(self, points: NDArray[np.float32], to_ego: NDArray[np.float64]) -> NDArray:
        m = self.model
        features = m.encode([points])
        theta = affine_theta(to_ego[None], m.message_grid).to(features)
        sample = F.affine_grid(theta, list(features.shape), align_corners=False)
        warped = F.grid_sample(features, sample, mode="nearest", align_corners=False)
        return m.detect(m.head(warped))[0].boxes

    def points_moved(self, points: NDArray[np.float32], to_ego: NDArray[np.float64]) -> NDArray:
        m = self.model
        return m.detect(m.head(m.encode([points_to_frame(points, to_ego)])))[0].boxes

    def own_frame(self, points: NDArray[np.float32], to_ego: NDArray[np.float64]) -> NDArray:
        m = self.model
        own = m.anchor_head.decode(m.head(m.encode([points])))[0].boxes
        return boxes_to_frame(own, to_ego)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--every", type=int, default=1, help="use every N-th sample")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, config, _ = load_checkpoint(args.checkpoint)
    model.eval()
    dataset = eval_dataset(model, args.data)
    indices = range(0, min(len(dataset), args.frames * args.every), args.every)
    ious: dict[str, list[NDArray]] = defaultdict(list)
    errors: dict[str, list[NDArray]] = defaultdict(list)
    single = SingleSource(model)
    ways = ("fused", "warped map", "nearest warp", "points moved", "own frame")
    per_way: dict[tuple[str, str], list[float]] = defaultdict(list)  # (bucket, way) -> IoUs
    per_way_err: dict[tuple[str, str], list[NDArray]] = defaultdict(list)
    intermediate = config.is_feature_fusion
    with torch.no_grad():
        for i in indices:
            sample = dataset[i]
            gt = sample.gt_boxes.astype(np.float64)
            if len(gt) == 0:
                continue
            pred = predict(model, [sample])[0].boxes.astype(np.float64)
            classes = visibility_classes(sample)
            best, best_iou = best_match(pred, gt)
            hit = best_iou >= 0.5
            for c, name in enumerate(VISIBILITY_CLASSES[:2]):
                mine = hit & (classes == c)
                if mine.any():
                    ious[name].append(repaired_ious(pred[best[mine]], gt[mine]))
                    errors[name].append(signed_errors(pred[best[mine]], gt[mine]))
            if not intermediate:
                continue
            only_nbr = np.nonzero(classes == 1)[0]
            seer = seeing_neighbour(sample, gt)
            for g in only_nbr:
                k = int(seer[g])
                points, to_ego = sample.neighbour_points[k], sample.neighbour_to_ego[k]
                bucket = turn_bucket(to_ego)
                boxes = {
                    "fused": pred,
                    "warped map": single.warped_map(points, to_ego),
                    "nearest warp": single.nearest_warp(points, to_ego),
                    "points moved": single.points_moved(points, to_ego),
                    "own frame": single.own_frame(points, to_ego),
                }
                for way in ways:
                    b = np.asarray(boxes[way], np.float64).reshape(-1, 7)
                    j, iou = best_match(b, gt[g : g + 1])
                    for key in (bucket, "all"):
                        per_way[(key, way)].append(float(iou[0]))
                        if iou[0] >= 0.5:
                            per_way_err[(key, way)].append(signed_errors(b[j], gt[g : g + 1]))

    print(
        f"{args.checkpoint} ({config.fusion}, fuse_at {config.fuse_at}) on {args.data}: "
        f"{len(indices)} samples"
    )
    print("\n1. GT found at IoU >= 0.5: share reaching 0.7 as is and after each repair")
    print(f"{'seen by':<16}{'found':>7}" + "".join(f"{r:>19}" for r in REPAIRS))
    for name in VISIBILITY_CLASSES[:2]:
        arr = np.concatenate(ious[name]) if ious[name] else np.zeros((0, 4))
        shares = [f"{(arr[:, k] >= 0.7).mean():.3f}" if len(arr) else "n/a" for k in range(4)]
        print(f"{name:<16}{len(arr):>7}" + "".join(f"{s:>19}" for s in shares))
    print("   signed median errors of those matches (pred - GT; along/across the GT heading)")
    head = ("along m", "across m", "|along| m", "|across| m", "length m", "width m", "yaw deg")
    print(f"{'seen by':<16}" + "".join(f"{h:>11}" for h in head))
    for name in VISIBILITY_CLASSES[:2]:
        arr = np.concatenate(errors[name]) if errors[name] else np.zeros((0, 5))
        if not len(arr):
            continue
        row = [
            np.median(arr[:, 0]),
            np.median(arr[:, 1]),
            np.median(np.abs(arr[:, 0])),
            np.median(np.abs(arr[:, 1])),
            np.median(arr[:, 2]),
            np.median(arr[:, 3]),
            np.median(arr[:, 4]),
        ]
        print(f"{name:<16}" + "".join(f"{v:>11.3f}" for v in row))
    if not intermediate:
        return
    print("\n2. neighbour-only GT, detected from that neighbour's evidence alone, five ways")
    print(
        f"{'rotation':<16}{'way':<14}{'boxes':>6}{'R@0.5':>8}{'R@0.7':>8}"
        f"{'|along|':>9}{'|across|':>9}{'length':>8}{'width':>8}{'yaw':>7}"
    )
    for bucket in ("turn < 5 deg", "turn 5-20 deg", "turn 20-45 deg", "all"):
        for way in ways:
            values = np.asarray(per_way.get((bucket, way), []))
            if not len(values):
                continue
            errs = per_way_err.get((bucket, way), [])
            arr = np.concatenate(errs) if errs else np.zeros((0, 5))
            med = [np.median(np.abs(arr[:, k])) if len(arr) else math.nan for k in range(5)]
            print(
                f"{bucket:<16}{way:<14}{len(values):>6}{(values >= 0.5).mean():>8.3f}"
                f"{(values >= 0.7).mean():>8.3f}"
                + "".join(f"{v:>9.2f}" for v in med[:2])
                + "".join(f"{v:>8.2f}" for v in med[2:4])
                + f"{med[4]:>7.1f}"
            )


if __name__ == "__main__":
    main()
