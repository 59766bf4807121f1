"""Fixtures shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosim.training.dataset_build import build_dataset
from tests.scenario_files import TINY_TRAFFIC, write_scenario


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 frames of the intersection, 3 connected vehicles with an 8-channel LiDAR."""
    folder = tmp_path_factory.mktemp("train_data")
    write_scenario(folder / "tiny.yaml", traffic=TINY_TRAFFIC)
    build_dataset(folder / "tiny.yaml", 4, folder / "frames", seeds=[0])
    return folder / "frames"
