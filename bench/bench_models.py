"""Time the detector per agent-frame: voxelize + encoder + BEV backbone + head + decode/NMS,
and a full cooperative forward with 4 agents, on two threads.

Prints one JSON object. The cloud is LiDAR-like (not uniform noise): rings of a 64-beam sensor
1.9 m above flat ground, plus car-sized boxes and two building walls, ~30k points inside the
grid's range. Run: ``python bench/bench_models.py [--repeats N] [--train] [--device cuda]``
(models on that device, voxelization on the CPU, CUDA synchronised around each timing).
Stage times are the best of N runs (``total_median_ms`` is the median of the whole
single-agent detect path); ``train_step_ms`` is a forward + backward + SGD step of the
feature half alone, with a stand-in loss. ``nms_ms`` decodes and NMSes at score threshold 0,
i.e. the head's ``pre_nms_top_k`` (1000) best anchors of an untrained head: a worst case for
a trained model's few candidates.
``coop4_<fuse_at>_*`` run :class:`~models.detector.CooperativeDetector` with attention fusion
on an ego plus 3 neighbours (4 clouds encoded in one batch, 3 warped, fused, head, decode +
NMS), fused at the pillar map (``encoder``: one backbone pass) or after the backbone.
``refine_k<K>_ms`` time the PKD refiner (``models.refiner``, the ``cpu_diffkd`` preset's
refiner, its gated readout included) on one agent's message map at K DDIM steps;
``refine_k2_over_encoder`` is its K = 2 time over the encoder's (the budget is 0.25), both
best times; ``refine_k2_over_encoder_paired`` the median of per-round ratios with the two run
back to back in each round (the encoder, then the refiner on its output, as in a tick: caches
cold, and on shared cores both see the same neighbours); ``refine_k2_over_encode_stage`` is
over voxelize + encoder.
``coop4_agf[_pkd]_predict_ms`` are the 4-agent AGF inference
without and with the refiner (K = 2) in front.
``--head PRESET`` takes the head (anchors, box voting) from a detector preset, e.g.
``cpu_none_sizes`` (anchors per vehicle size); the default is the single car anchor. When that
preset sends a wider window (``message_range``, e.g. ``cpu_max_sizes``), the rows of its grid
also time the encode stage on the window (``window_voxelize_ms``, ``window_encoder_ms``, a cloud
of the same size spread over the window), ``window_total_ms`` (``total_ms`` with that encode
stage instead of the grid's: what a vehicle that sends and detects runs per frame) and
``coop4_encoder_window_predict_ms``.
``--checkpoint PATH`` adds a ``trained`` object: the single-agent detect path of that trained
model (encode on its message window, own-map crop, backbone, head, decode + NMS + box voting at
its configured score threshold) on the same kind of cloud: ``total_ms`` (median),
``detect_ms`` (decode + NMS + voting) and the boxes kept, i.e. the per-agent-frame cost with a
trained head's candidates rather than the untrained worst case.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import numpy as np
import torch

from models.batch import CooperativeSample
from models.checkpoint import load_checkpoint
from models.detector import CooperativeDetector
from models.detector_config import FUSE_POINTS, DetectorConfig, load_detector_config
from models.device import resolve_device
from models.encoders.feature_net import FEATURE_PRESETS
from models.grid import GridSpec
from models.head import HeadConfig
from models.inference import predict
from models.refiner import FeatureRefiner
from scenarios.geometry import yaw_pose


def lidar_like_cloud(grid: GridSpec, n_points: int = 30000, seed: int = 0) -> np.ndarray:
    """``(n_points, 4)`` float32 in the grid's range: ground rings, car boxes, walls."""
    rng = np.random.default_rng(seed)
    x0, y0, z0, x1, y1, z1 = grid.point_range
    height = 1.9
    # Ground: 64 beams from -25 to -1 degrees, random azimuths; hit distance h / tan(-elev).
    n_ground = int(n_points * 0.6)
    elev = np.radians(rng.choice(np.linspace(-25.0, -1.0, 64), n_ground))
    dist = height / np.tan(-elev)
    az = rng.uniform(-np.pi, np.pi, n_ground)
    ground = np.c_[dist * np.cos(az), dist * np.sin(az), np.full(n_ground, -height)]
    # Cars: 40 boxes 4.5 x 1.8 x 1.5 m, points on their surfaces.
    n_cars = int(n_points * 0.25)
    centres = np.c_[rng.uniform(x0 * 0.8, x1 * 0.8, 40), rng.uniform(y0 * 0.8, y1 * 0.8, 40)]
    which = rng.integers(0, 40, n_cars)
    size = np.array([4.5, 1.8, 1.5])
    local = rng.uniform(-0.5, 0.5, (n_cars, 3)) * size
    face = rng.integers(0, 3, n_cars)  # push each point onto a face: +-x, +-y or +-z
    rows = np.arange(n_cars)
    local[rows, face] = np.sign(local[rows, face]) * size[face] / 2
    cars = np.c_[centres[which] + local[:, :2], local[:, 2] - height + 0.75]
    # Walls along both sides of the road.
    n_walls = n_points - n_ground - n_cars
    wx = rng.uniform(x0, x1, n_walls)
    wy = np.where(rng.random(n_walls) < 0.5, y0 * 0.6, y1 * 0.6)
    walls = np.c_[wx, wy, rng.uniform(-height, z1 - 0.1, n_walls)]
    xyz = np.concatenate([ground, cars, walls])
    keep = (
        (xyz[:, 0] >= x0)
        & (xyz[:, 0] < x1)
        & (xyz[:, 1] >= y0)
        & (xyz[:, 1] < y1)
        & (xyz[:, 2] >= z0)
        & (xyz[:, 2] < z1)
    )
    xyz = xyz[keep]
    # Top up with more ground so the cloud really has n_points in range.
    while xyz.shape[0] < n_points:
        extra = rng.uniform([x0, y0], [x1, y1], (n_points - xyz.shape[0], 2))
        xyz = np.concatenate([xyz, np.c_[extra, np.full(len(extra), -height)]])
    intensity = rng.uniform(0.0, 1.0, xyz.shape[0])
    return np.c_[xyz, intensity].astype(np.float32)[rng.permutation(xyz.shape[0])]


def _synchronize() -> None:
    """Wait for queued CUDA kernels, so a timing covers the work and not only its launch."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn: Any, repeats: int) -> tuple[Any, float, float]:
    """Result of the last call, and the best and median wall times in milliseconds.

    The best time is the headline: on shared cores the median mostly measures the neighbours.
    """
    times, out = [], None
    for _ in range(repeats):
        _synchronize()
        t = time.perf_counter()
        out = fn()
        _synchronize()
        times.append(time.perf_counter() - t)
    return out, 1000.0 * min(times), 1000.0 * float(np.median(times))


def _paired_ratio(numerator: Any, denominator: Any, repeats: int) -> float:
    """Median over ``repeats`` rounds of ``time(numerator) / time(denominator)``, the
    denominator run first in each round."""
    ratios = []
    for _ in range(repeats):
        _, bottom, _ = _timed(denominator, 1)
        _, top, _ = _timed(numerator, 1)
        ratios.append(top / bottom)
    return float(np.median(ratios))


def cooperative_sample(grid: GridSpec, agents: int = 4) -> CooperativeSample:
    """An ego and ``agents - 1`` neighbours 15-35 m away, each with its own LiDAR-like cloud."""
    poses = [yaw_pose(15.0 + 10.0 * k, 6.0 * (-1) ** k, 0.0, 0.4 * k) for k in range(agents - 1)]
    clouds = tuple(lidar_like_cloud(grid, seed=k + 1) for k in range(agents - 1))
    transforms = np.stack(poses) if poses else np.zeros((0, 4, 4))
    return CooperativeSample(lidar_like_cloud(grid), clouds, transforms, np.zeros((0, 7)))


def bench_trained(path: str, repeats: int, device: torch.device) -> dict[str, Any]:
    """The detect path of a trained checkpoint at its own score threshold (see docstring)."""
    model, config, _ = load_checkpoint(path, map_location=device)
    model = model.to(device).eval()
    cloud = lidar_like_cloud(model.message_grid)

    def head_out() -> Any:
        return model.head(model.bev(model.own_map(model.encode([cloud]))))

    with torch.no_grad():
        out = head_out()  # warm-up
        dets, detect_ms, _ = _timed(lambda: model.detect(out), repeats)
        _, _, total_ms = _timed(lambda: model.detect(head_out()), repeats)
    return {
        "checkpoint": path,
        "model": config.name,
        "points": int(cloud.shape[0]),
        "total_ms": total_ms,
        "detect_ms": detect_ms,
        "detections": len(dets[0].boxes),
    }


def bench_one(
    preset: str,
    encoder: str,
    repeats: int,
    train: bool,
    head: HeadConfig | None = None,
    message_range: tuple[float, float, float, float] | None = None,
    device: torch.device = torch.device("cpu"),  # noqa: B008 - immutable
) -> dict[str, Any]:
    grid, config = FEATURE_PRESETS[preset]
    head = head or HeadConfig()
    torch.manual_seed(0)
    detector = (
        CooperativeDetector(
            DetectorConfig(
                f"{preset}_{encoder}", grid, config.with_encoder(encoder), head, fusion="attention"
            )
        )
        .to(device)
        .eval()
    )
    net = detector.features
    cloud = lidar_like_cloud(net.encoder.voxel_grid)
    row: dict[str, Any] = {"preset": preset, "encoder": encoder, "points": int(cloud.shape[0])}
    row["head_type"] = head.type
    row["anchors_per_cell"] = getattr(detector.anchor_head, "num_anchors", 0)  # 0: centre head

    def detect_one() -> Any:
        maps = detector.bev(detector.encode([cloud]))
        return detector.detect(detector.head(maps), score_threshold=0.0)

    with torch.no_grad():
        net([cloud])  # warm-up (spconv builds its index pairs lazily)
        voxels, row["voxelize_ms"], _ = _timed(lambda: net.voxelize([cloud]), repeats)
        bev, row["encoder_ms"], _ = _timed(lambda: net.encoder(voxels), repeats)
        out, row["backbone_ms"], _ = _timed(lambda: net.backbone(bev), repeats)
        head_out, row["head_ms"], _ = _timed(lambda: detector.head(out), repeats)
        dets, row["nms_ms"], _ = _timed(
            lambda: detector.detect(head_out, score_threshold=0.0), repeats
        )
        row["nms_candidates"] = detector.config.head.pre_nms_top_k
        row["detections"] = len(dets[0])
        _, _, row["total_median_ms"] = _timed(detect_one, repeats)
        sample = cooperative_sample(net.encoder.voxel_grid)
        for fuse_at in FUSE_POINTS:
            coop = (
                CooperativeDetector(
                    DetectorConfig(
                        f"{preset}_{encoder}",
                        grid,
                        config.with_encoder(encoder),
                        head,
                        fusion="attention",
                        fuse_at=fuse_at,
                    )
                )
                .to(device)
                .eval()
            )
            coop([sample])  # warm-up
            _, row[f"coop4_{fuse_at}_forward_ms"], _ = _timed(
                lambda model=coop: model([sample]), repeats
            )
            _, row[f"coop4_{fuse_at}_predict_ms"], _ = _timed(
                lambda model=coop: predict(model, [sample], score_threshold=0.0), repeats
            )
        # The refiner acts on the encoder's pseudo-image (the map fused at the encoder).
        diffkd = load_detector_config("cpu_diffkd")
        assert diffkd.refiner is not None
        refiner = FeatureRefiner(bev.shape[1], diffkd.refiner).to(device).eval()
        refiner(bev, steps=2)  # warm-up
        for k in (1, 2, 5, 10):
            _, row[f"refine_k{k}_ms"], _ = _timed(lambda k=k: refiner(bev, steps=k), repeats)
        row["refine_k2_over_encoder"] = row["refine_k2_ms"] / row["encoder_ms"]
        row["refine_k2_over_encoder_paired"] = _paired_ratio(
            lambda: refiner(bev, steps=2), lambda: net.encoder(voxels), max(repeats, 30)
        )
        # The co-simulation's "encode" stage: voxelize + encoder, what a vehicle runs per frame.
        encode_stage = row["voxelize_ms"] + row["encoder_ms"]
        row["refine_k2_over_encode_stage"] = row["refine_k2_ms"] / encode_stage
        for name, refine in (("agf", None), ("agf_pkd", diffkd.refiner)):
            agf = (
                CooperativeDetector(
                    DetectorConfig(
                        f"{preset}_{encoder}_{name}",
                        grid,
                        config.with_encoder(encoder),
                        fusion="agf",
                        fusion_options=diffkd.fusion_options,
                        fuse_at="encoder",
                        refiner=refine,
                    )
                )
                .to(device)
                .eval()
            )
            predict(agf, [sample], score_threshold=0.0)  # warm-up
            _, row[f"coop4_{name}_predict_ms"], _ = _timed(
                lambda model=agf: predict(model, [sample], score_threshold=0.0), repeats
            )
    row["total_ms"] = sum(
        row[k] for k in ("voxelize_ms", "encoder_ms", "backbone_ms", "head_ms", "nms_ms")
    )
    row["voxels"] = voxels.num_voxels
    row["bev_in"] = list(bev.shape[1:])
    row["bev_out"] = list(out.shape[1:])
    row["params"] = sum(p.numel() for p in detector.parameters())
    if message_range is not None:
        row.update(
            _bench_window(
                grid, config.with_encoder(encoder), head, message_range, sample, repeats, device
            )
        )
        row["window_total_ms"] = row["total_ms"] + (
            row["window_voxelize_ms"]
            + row["window_encoder_ms"]
            - row["voxelize_ms"]
            - row["encoder_ms"]
        )
    if train:
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)

        def step() -> None:
            opt.zero_grad()
            net.encode(voxels).square().mean().backward()
            opt.step()

        step()
        _, row["train_step_ms"], _ = _timed(step, repeats)
    return row


@torch.no_grad()
def _bench_window(
    grid: GridSpec,
    features: Any,
    head: HeadConfig,
    message_range: tuple[float, float, float, float],
    sample: CooperativeSample,
    repeats: int,
    device: torch.device,
) -> dict[str, Any]:
    """The encode stage on the sender's window and the 4-agent predict fused at the encoder."""
    coop = (
        CooperativeDetector(
            DetectorConfig(
                "window",
                grid,
                features,
                head,
                fusion="attention",
                fuse_at="encoder",
                message_range=message_range,
            )
        )
        .to(device)
        .eval()
    )
    net = coop.features
    cloud = lidar_like_cloud(net.encoder.voxel_grid)
    row: dict[str, Any] = {"message_range": list(message_range)}
    voxels, row["window_voxelize_ms"], _ = _timed(lambda: net.voxelize([cloud]), repeats)
    _, row["window_encoder_ms"], _ = _timed(lambda: net.encoder(voxels), repeats)
    row["window_voxels"] = voxels.num_voxels
    row["window_message_shape"] = list(coop.message_shape)
    predict(coop, [sample], score_threshold=0.0)  # warm-up
    _, row["coop4_encoder_window_predict_ms"], _ = _timed(
        lambda: predict(coop, [sample], score_threshold=0.0), repeats
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", action="store_true", help="also time a forward+backward step")
    parser.add_argument("--presets", nargs="+", default=sorted(FEATURE_PRESETS))
    parser.add_argument("--encoders", nargs="+", default=["pointpillars", "sparse_voxel"])
    parser.add_argument(
        "--head", default=None, help="detector preset whose head (and message_range) to use"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (voxelize: CPU)")
    parser.add_argument(
        "--checkpoint", default=None, help="also time this trained model's detect path ('trained')"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    chosen = None if args.head is None else load_detector_config(args.head)
    head = None if chosen is None else chosen.head
    rows = [
        bench_one(
            p,
            e,
            args.repeats,
            args.train,
            head,
            chosen.message_range
            if chosen is not None and chosen.grid == FEATURE_PRESETS[p][0]
            else None,
            device,
        )
        for p in args.presets
        for e in args.encoders
    ]
    print(
        json.dumps(
            {
                "threads": args.threads,
                "device": str(device),
                "head": args.head or "single car anchor",
                "torch": torch.__version__,
                "machine": platform.processor() or platform.machine(),
                "per_agent_frame": rows,
                **(
                    {"trained": bench_trained(args.checkpoint, args.repeats, device)}
                    if args.checkpoint
                    else {}
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
