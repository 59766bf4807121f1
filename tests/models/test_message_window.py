"""A sender's window wider than the ego's grid (``message_range``): validation, the ego's own
map as a crop, a car 60 m ahead of a neighbour reaching the ego, and the backbone fuse point."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from models.batch import CooperativeSample
from models.detector import CooperativeDetector, build_detector
from models.detector_config import DetectorConfig, load_detector_config, parse_message_range
from models.inference import predict
from scenarios.geometry import points_to_frame, yaw_pose

WIDE = (-80.0, -80.0, 80.0, 80.0)


def with_range(name: str, message_range: tuple[float, ...] | None, **changes) -> DetectorConfig:
    config = load_detector_config(name)
    return dataclasses.replace(config, message_range=message_range, **changes)


@pytest.mark.parametrize(
    ("value", "needs"),
    [
        ([-40.0, -80.0, 80.0, 80.0], "must contain the grid"),
        ([-50.0, -80.0, 80.0, 80.0], "3.2 m backbone strides"),
        ([-80.0, -80.0, 80.0], "message_range: expected 4 items, got 3"),
        (["a", -80.0, 80.0, 80.0], "message_range[0]: must be a valid number, got 'a'"),
        ([-80.0, -80.0, math.inf, 80.0], "finite"),
    ],
)
def test_bad_message_range_names_the_field(value: list, needs: str) -> None:
    data = {**load_detector_config("cpu_max").to_dict(), "message_range": value}
    with pytest.raises(ValueError, match="message_range") as err:
        DetectorConfig.from_dict(data, "my.yaml")
    assert needs in str(err.value) and "my.yaml" in str(err.value)


def test_message_range_only_for_feature_fusion() -> None:
    with pytest.raises(ValueError, match="message_range: only feature fusion sends maps"):
        with_range("cpu_none", WIDE)


def test_message_range_round_trips_and_parses() -> None:
    config = with_range("cpu_max", WIDE)
    assert DetectorConfig.from_dict(config.to_dict()) == config
    assert config.message_window.point_range == (-80.0, -80.0, -3.0, 80.0, 80.0, 1.0)
    assert load_detector_config("cpu_max").message_window == config.grid
    assert parse_message_range("-80, -80,80,80") == WIDE
    with pytest.raises(ValueError, match="message_range"):
        parse_message_range("80,80")


def _models(name: str, message_range, **changes) -> tuple[CooperativeDetector, ...]:
    """The preset with its own window and with ``message_range``: the same weights."""
    torch.manual_seed(0)
    old = build_detector(with_range(name, None, **changes)).eval()
    new = build_detector(with_range(name, message_range, **changes)).eval()
    new.load_state_dict(old.state_dict(), strict=True)  # no new weights
    return old, new


def test_own_map_is_the_grid_encoding() -> None:
    old, new = _models("cpu_max", WIDE)
    rng = np.random.default_rng(0)
    # 8000 points: fewer pillars than max_voxels (16000) in either window, so none is dropped.
    pts = rng.uniform((-79, -79, -2.5, 0), (79, 79, 0.5, 1), (8000, 4)).astype(np.float32)
    with torch.no_grad():
        wide = new.encode([pts])
        assert wide.shape == (1, *new.message_shape) == (1, 32, 400, 400)
        assert new.map_shape == old.message_shape == (32, 160, 240)
        torch.testing.assert_close(new.own_map(wide), old.encode([pts]), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="own_map"):
        new.own_map(old.encode([pts]))


def car_points(centre_xy: tuple[float, float], n: int = 400) -> np.ndarray:
    """Points on the sides of a 4.5 x 1.8 x 1.5 m car (axis-aligned), sensor frame."""
    rng = np.random.default_rng(1)
    local = rng.uniform(-0.5, 0.5, (n, 3)) * (4.5, 1.8, 1.5)
    local[:, 1] = np.sign(local[:, 1]) * 0.9
    return np.c_[local[:, :2] + centre_xy, local[:, 2] - 1.15, np.full(n, 0.5)].astype(np.float32)


def test_car_60_m_ahead_of_a_neighbour_reaches_the_ego_only_with_the_wide_window() -> None:
    """Neighbour at ego (-20, 5); a car 60 m ahead of it (outside its old 96 x 64 m window)
    lies at ego (40, 0), inside the ego's grid. The ego has no points: what the fused
    pseudo-image holds came from the neighbour."""
    old, new = _models("cpu_max", WIDE)
    nbr_to_ego = yaw_pose(-20.0, 5.0, 0.0, 0.0)
    car_nbr = (60.0, -5.0)  # ego (40, 0): inside the ego's 96 x 64 m grid
    car_ego = points_to_frame(np.array([[*car_nbr, 0.0, 1.0]], np.float32), nbr_to_ego)[0, :2]
    np.testing.assert_allclose(car_ego, (40.0, 0.0), atol=1e-5)
    sample = CooperativeSample(
        np.zeros((0, 4), np.float32),
        (car_points(car_nbr),),
        nbr_to_ego[None],
        np.zeros((0, 7), np.float32),
    )
    grid = old.map_grid
    col = round((40.0 - grid.point_range[0]) / grid.cell_size)
    row = round((0.0 - grid.point_range[1]) / grid.cell_size)
    window = (..., slice(row - 5, row + 6), slice(col - 8, col + 9))
    with torch.no_grad():
        fused_old = old.forward_pass([sample]).fused.features
        fused_new = new.forward_pass([sample]).fused.features
    assert float(fused_old.abs().sum()) == 0.0  # the old window never held the car
    assert float(fused_new[window].abs().sum()) > 0.0
    assert float(fused_new.abs().sum()) == pytest.approx(float(fused_new[window].abs().sum()))


def test_backbone_fuse_point_works_with_a_wider_window() -> None:
    """Fused after the backbone: the sender runs the backbone on its window and the ego keeps
    the crop; detections come out on the ego's grid."""
    message_range = (-51.2, -35.2, 51.2, 35.2)
    old, new = _models("cpu_max", message_range, fuse_at="backbone")
    assert new.message_shape == (96, 88, 128) and new.map_shape == (96, 80, 120)
    sample = CooperativeSample(
        car_points((10.0, 3.0)),
        (car_points((30.0, -2.0)),),
        yaw_pose(-20.0, 5.0, 0.0, 0.0)[None],
        np.zeros((0, 7), np.float32),
    )
    with torch.no_grad():
        out = new([sample])
        maps, nbrs = new.encode_samples([sample])
    assert maps.shape == (1, 96, 80, 120) and nbrs[0][0].feature.shape == (96, 88, 128)
    assert out.cls_logits.shape[-2:] == (80, 120)
    assert len(predict(new, [sample])) == 1
