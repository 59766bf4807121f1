"""Small, fast inputs shared by the agent and simulation tests: a sparse-LiDAR scenario with
three connected vehicles and an untrained tiny detector (20 x 40 BEV cells, 24 channels)."""

from __future__ import annotations

from pathlib import Path

import torch

from models.checkpoint import save_checkpoint
from models.detector import CooperativeDetector
from models.detector_config import DetectorConfig
from tests.scenario_files import write_scenario

TINY_MODEL = {
    "name": "tiny",
    "grid": {
        "point_range": [-32, -16, -3, 32, 16, 1],
        "voxel_size": [0.8, 0.8, 4],
        "feature_stride": 2,
    },
    "features": {
        "preset": "cpu",
        "pillar": {"num_filters": [8]},
        "voxelize": {"max_points_per_voxel": 8, "max_voxels": 4000},
        "backbone": {
            "layer_nums": [1, 1, 1],
            "layer_strides": [2, 2, 2],
            "num_filters": [8, 8, 8],
            "upsample_strides": [1, 2, 4],
            "num_upsample_filters": [8, 8, 8],
        },
    },
    # An untrained head scores about the 0.01 prior: a low threshold keeps some boxes, so
    # comparisons between runs compare real detections.
    "head": {"score_threshold": 0.005, "max_detections": 20},
    "fusion": "attention",
}


def tiny_config(fusion: str = "attention") -> DetectorConfig:
    return DetectorConfig.from_dict({**TINY_MODEL, "fusion": fusion})


def tiny_model(fusion: str = "attention", seed: int = 0) -> CooperativeDetector:
    torch.manual_seed(seed)
    return CooperativeDetector(tiny_config(fusion)).eval()


def write_tiny_checkpoint(path: Path, fusion: str = "attention") -> Path:
    model = tiny_model(fusion)
    return save_checkpoint(path, model, model.config, {})


def write_tiny_diffkd_checkpoint(path: Path, skip_above: float | None = None) -> Path:
    """An untrained tiny Diff-KD model: AGF on the pillar map, a small PKD refiner."""
    torch.manual_seed(0)
    refiner = {
        "latent_channels": 4,
        "hidden": 8,
        "blocks": 1,
        "ae_stride": 4,
        "patch": 1,
        "steps": 2,
        "skip_above": skip_above,
    }
    config = DetectorConfig.from_dict(
        {
            **TINY_MODEL,
            "name": "tiny_diffkd",
            "fusion": "agf",
            "fuse_at": "encoder",
            "refiner": refiner,
        }
    )
    model = CooperativeDetector(config).eval()
    return save_checkpoint(path, model, model.config, {})


def write_small_scenario(path: Path, frames: float = 0.6, connected: int = 3) -> Path:
    """The built-in intersection with a 16-beam, 5,760-ray LiDAR and few frames."""
    return write_scenario(
        path,
        name="small_intersection",
        duration_s=frames,
        channels=16,
        points_per_second=57_600,
        traffic={"connected": connected},
    )
