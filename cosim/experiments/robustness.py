"""Robustness benchmark, one condition at a time: sensor corruptions and communication faults.

A :class:`Condition` is one fault at one level. :func:`condition_samples` cuts the evaluation
samples of a stored dataset exactly as ``cosim eval`` does
(:data:`cosim.training.evaluate.EVAL_DATA`:
each frame's own ego, up to 4 neighbours within 70 m, the same ground truth for every
condition and every fusion strategy) and then applies the fault to what the model sees:

- ``sensor``: a corruption at severity 1-3 on EVERY agent's points, ego and neighbours (as in
  Diff-KD), seeded by (seed, stored frame, agent); the context carries the scenario's LiDAR,
  the agent's speed and its yaw rate since the previous stored frame (0 on a source's first).
- ``pose``: Gaussian error (std sigma m on x, y and sigma deg on yaw, ``PoseErrorConfig.level``)
  on each neighbour's *reported* pose; ``neighbour_to_ego`` is built from it and the ego's true
  pose. Per-sender streams in frame order (``channel.PoseErrorModel``).
- ``latency``: each neighbour's message (points and pose) is the one of ``lag = latency /
  spacing`` stored frames earlier, placed with that older pose into the ego's current frame.
  The spacing must divide the latency (else ``ValueError`` naming it). The first ``lag`` frames
  of a source have no such history: they use the source's oldest frame (less stale), so the
  neighbour set, and only the staleness, differs from clean.
- ``loss``: Bernoulli, or Gilbert-Elliott bursts with the same mean loss and a mean burst of
  :data:`BURST_MESSAGES` messages; a lost neighbour is absent from that frame. One seeded
  ``channel.LinkModel`` per source, stepped in frame order, one message per neighbour->ego link.

Level 0 of every fault reproduces the clean samples bit for bit. Pure functions: the Ray
fan-out and the outputs live in :mod:`cosim.experiments.robustness_run` and
:mod:`cosim.experiments.robustness_report`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from channel.links import LinkConfig, LinkModel, id_key
from channel.pose_error import PoseErrorConfig, PoseErrorModel
from cosim.experiments.conditions import (
    CORRUPT_TARGETS,
    Condition,
    loss_config,
)
from cosim.training.dataset_build import source_lidars
from cosim.training.evaluate import EVAL_DATA
from models.batch import CooperativeSample
from models.dataset import FrameStore, sample_from_frame, shard_paths
from models.detector import CooperativeDetector
from models.grid import GridSpec
from models.inference import predict, predict_ego
from models.metrics import DEFAULT_IOU_THRESHOLDS, DetectionAccumulator
from scenarios.corruptions import CorruptionContext, corrupt
from scenarios.frame import Frame
from scenarios.geometry import relative_transform
from scenarios.lidar_config import LidarConfig

SAMPLE_ARGS = {k: v for k, v in EVAL_DATA.items() if k != "egos"}
assert EVAL_DATA["egos"] == "first", "robustness cuts one sample per frame (the frame's ego)"


def source_runs(store: FrameStore) -> list[tuple[str, list[int]]]:
    """``(source, stored frame positions)`` per scenario/seed, in stored order."""
    runs: list[tuple[str, list[int]]] = []
    for position, source in enumerate(store.frame_sources):
        if not runs or runs[-1][0] != source:
            runs.append((source, []))
        runs[-1][1].append(position)
    return runs


def frame_spacing(store: FrameStore) -> float:
    """Seconds between consecutive stored frames of one source (the same for all sources)."""
    stamps: list[float] = []
    for shard in store.shards:
        table = pq.read_table(shard_paths(store.root, shard)[0], columns=["frame_id", "timestamp"])
        ids, ts = table.column("frame_id").to_numpy(), table.column("timestamp").to_numpy()
        first = np.concatenate([[True], ids[1:] != ids[:-1]]) if len(ids) else ids.astype(bool)
        stamps += ts[first].tolist()
    gaps = [stamps[p] - stamps[p - 1] for _, run in source_runs(store) for p in run[1:]]
    if not gaps:
        raise ValueError(f"{store.root}: no source has two frames; latency needs a history")
    spacing = float(np.median(gaps))
    if not np.allclose(gaps, spacing, rtol=1e-6, atol=1e-6):
        raise ValueError(f"{store.root}: frame spacing varies ({min(gaps):g}-{max(gaps):g} s)")
    return spacing


def latency_lag(condition: Condition, spacing: float) -> int:
    """Stored frames of delay for a ``latency`` condition; ValueError when the spacing does not
    divide the latency."""
    if condition.kind != "latency":
        return 0
    ratio = condition.level / 1000.0 / spacing
    if abs(ratio - round(ratio)) > 1e-6:
        raise ValueError(
            f"latency {condition.level:g} ms is not a multiple of the data's frame spacing "
            f"{1000 * spacing:g} ms; build the dataset with a spacing that divides it "
            "(e.g. --every 1 for 100 ms at 10 Hz)"
        )
    return int(round(ratio))


def _yaw(pose: np.ndarray) -> float:
    return math.atan2(pose[1, 0], pose[0, 0])


def _context(
    frame: Frame, previous: Frame | None, agent_id: int, lidar: LidarConfig
) -> CorruptionContext:
    agent = frame.agent(agent_id)
    yaw_rate = 0.0
    if previous is not None and agent_id in previous.agents:
        dt = frame.timestamp - previous.timestamp
        turn = _yaw(agent.lidar_pose) - _yaw(previous.agent(agent_id).lidar_pose)
        yaw_rate = math.remainder(turn, 2 * math.pi) / dt if dt > 0 else 0.0
    return CorruptionContext(lidar=lidar, speed_mps=float(agent.speed), yaw_rate=yaw_rate)


class _Faults:
    """The seeded state of one condition over one source, applied to samples in frame order."""

    def __init__(
        self,
        condition: Condition,
        seed: int,
        run: int,
        lidar: LidarConfig,
        lag: int,
        target: str = "all",
    ) -> None:
        self.condition, self.seed, self.lidar, self.lag = condition, seed, lidar, lag
        self.target = target
        stream = int(np.random.SeedSequence([seed, run]).generate_state(1)[0])
        self.pose = (
            PoseErrorModel(PoseErrorConfig.level(condition.level), stream)
            if condition.kind == "pose"
            else None
        )
        self.links = (
            LinkModel(LinkConfig(loss=loss_config(condition)), stream)
            if condition.kind == "loss"
            else None
        )

    def apply(
        self, sample: CooperativeSample, frames: dict[int, Frame], run: list[int], k: int
    ) -> CooperativeSample:
        """``sample`` (cut from stored frame ``run[k]``; ``frames`` holds its recent history)
        as the model sees it under the condition."""
        kind, frame = self.condition.kind, frames[run[k]]
        ego, ids = sample.ego_id, sample.neighbour_ids
        if kind == "sensor":
            previous = frames.get(run[k - 1]) if k > 0 else None

            def hit(agent_id: int, points: np.ndarray) -> np.ndarray:
                seq = np.random.SeedSequence(self.seed, spawn_key=(run[k], id_key(agent_id)))
                context = _context(frame, previous, agent_id, self.lidar)
                return corrupt(
                    points,
                    self.condition.name,
                    int(self.condition.level),
                    np.random.default_rng(seq),
                    context,
                )

            ego_points, nbr_points = sample.ego_points, sample.neighbour_points
            if self.target in ("all", "ego"):
                ego_points = hit(ego, ego_points)
            if self.target in ("all", "neighbours"):
                nbr_points = tuple(hit(a, p) for a, p in zip(ids, nbr_points, strict=True))
            return replace(sample, ego_points=ego_points, neighbour_points=nbr_points)
        ego_pose = frame.agent(ego).lidar_pose
        if kind == "pose" and self.pose is not None:
            reported = [self.pose.perturb(a, frame.agent(a).lidar_pose)[0] for a in ids]
            return _with_neighbours(
                sample,
                ids,
                sample.neighbour_points,
                [relative_transform(r, ego_pose) for r in reported],
                pose_sigma=self.condition.level,
            )
        if kind == "latency" and self.lag > 0:
            old = frames[run[max(0, k - self.lag)]]
            keep = [a for a in ids if a in old.agents]
            return _with_neighbours(
                sample,
                keep,
                [old.agent(a).points for a in keep],
                [relative_transform(old.agent(a).lidar_pose, ego_pose) for a in keep],
                age_s=frame.timestamp - old.timestamp,
            )
        if kind == "loss" and self.links is not None:
            xy = frame.agent(ego).lidar_pose[:2, 3]
            received = [
                self.links.transmit(
                    a, ego, frame.timestamp, 0, tuple(frame.agent(a).lidar_pose[:2, 3]), tuple(xy)
                ).dropped
                is None
                for a in ids
            ]
            keep = [i for i, ok in enumerate(received) if ok]
            return _with_neighbours(
                sample,
                [ids[i] for i in keep],
                [sample.neighbour_points[i] for i in keep],
                [sample.neighbour_to_ego[i] for i in keep],
            )
        return sample


def _with_neighbours(
    sample: CooperativeSample,
    ids: list[int] | tuple[int, ...],
    points: Any,
    transforms: Any,
    pose_sigma: float = 0.0,
    age_s: float = 0.0,
) -> CooperativeSample:
    """``sample`` with another neighbour set; each carries the cues the ego would know: the
    pose-error level its sender reports and the age of its data."""
    stacked = np.stack(transforms) if len(transforms) else np.zeros((0, 4, 4))
    return replace(
        sample,
        neighbour_ids=tuple(ids),
        neighbour_points=tuple(points),
        neighbour_to_ego=stacked,
        neighbour_pose_sigma=np.full(len(ids), pose_sigma, np.float32),
        neighbour_age_s=np.full(len(ids), age_s, np.float32),
        neighbour_severity=None,  # a training target only: the evaluation samples carry none
    )


def condition_samples(
    store: FrameStore,
    grid: GridSpec,
    condition: Condition,
    frames: int | None = None,
    seed: int = 0,
    target: str = "all",
) -> Iterator[CooperativeSample]:
    """The evaluation samples of the first ``frames`` stored frames of each source (all when
    None) under ``condition``, in stored order; ground truth as in ``cosim eval``. A sensor
    corruption hits the agents ``target`` names (:data:`CORRUPT_TARGETS`)."""
    if target not in CORRUPT_TARGETS:
        raise ValueError(f"corrupt target must be one of {CORRUPT_TARGETS}, got {target!r}")
    lag = latency_lag(condition, frame_spacing(store)) if condition.kind == "latency" else 0
    lidars = source_lidars(store)
    for number, (source, run) in enumerate(source_runs(store)):
        run = run if frames is None else run[:frames]
        faults = _Faults(condition, seed, number, lidars.get(source, LidarConfig()), lag, target)
        history: dict[int, Frame] = {}
        for k, position in enumerate(run):
            oldest = run[max(0, k - max(lag, 1))]  # the latency source and the previous frame
            history = {p: f for p, f in history.items() if p >= oldest}
            frame = history[position] = store.frame(position)
            sample = sample_from_frame(frame, frame.ego_id, grid, source=source, **SAMPLE_ARGS)
            yield faults.apply(sample, history, run, k)


def evaluate_condition(
    model: CooperativeDetector,
    data_dir: str | Path,
    condition: Condition,
    frames: int | None = None,
    seed: int = 0,
    batch_size: int = 4,
    score_threshold: float | None = None,
    target: str = "all",
    refine_steps: int | None = None,
    refine_neighbours: bool = False,
) -> dict[str, Any]:
    """One table row: the condition, AP@0.3/0.5/0.7 (OPV2V per-frame sort), frames, GT boxes,
    mean neighbours given to the model, mean points per agent, seconds; for a model with a
    refiner also its mean ``gamma`` on the ego maps, the share of them it skipped (adaptive
    steps) and its milliseconds per ego map."""
    start = time.perf_counter()
    store = FrameStore(data_dir)
    acc = DetectionAccumulator(DEFAULT_IOU_THRESHOLDS)
    neighbours = points = clouds = 0
    gammas: list[float] = []
    steps_run: list[int] = []
    refine_s = 0.0
    batch: list[CooperativeSample] = []
    samples = condition_samples(store, model.grid, condition, frames, seed, target)
    for sample in [*samples, None]:
        if sample is not None:
            batch.append(sample)
            neighbours += sample.num_neighbours
            clouds += 1 + sample.num_neighbours
            points += len(sample.ego_points) + sum(len(p) for p in sample.neighbour_points)
        if batch and (sample is None or len(batch) == batch_size):
            if model.refiner is None:
                detections = predict(
                    model, batch, score_threshold=score_threshold, refine_steps=refine_steps
                )
            else:
                results = predict_ego(
                    model,
                    batch,
                    score_threshold,
                    refine_steps=refine_steps,
                    refine_neighbours=refine_neighbours,
                )
                detections = [r.detections for r in results]
                gammas += [r.gamma for r in results]
                steps_run += [r.steps_run for r in results]
                refine_s += sum(r.timings["refine"] for r in results)
            for s, det in zip(batch, detections, strict=True):
                acc.add(det.boxes, det.scores, s.gt_boxes)
            batch = []
    refiner: dict[str, float] = {}
    if model.refiner is not None:
        asked = model.refiner.config.steps if refine_steps is None else refine_steps
        ran = np.asarray(steps_run)
        refiner = {
            "refine_gamma": float(np.mean(gammas)) if asked > 0 and gammas else math.nan,
            "refine_skipped": float(np.mean(ran == 0)) if asked > 0 and ran.size else math.nan,
            "refine_ms": 1e3 * refine_s / max(len(ran), 1),
        }
    aps = acc.average_precision(False)
    return {
        **condition.to_dict(),
        "label": condition.label,
        **{f"ap@{t:g}": aps[t] for t in DEFAULT_IOU_THRESHOLDS},
        "frames": acc.num_frames,
        "num_gt": acc.num_gt,
        "mean_neighbours": neighbours / max(acc.num_frames, 1),
        "mean_points": points / max(clouds, 1),
        **refiner,
        "seconds": time.perf_counter() - start,
    }
