"""The ego's message checks, one by one, and the soundness of the model-derived value bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.message_checks import (
    MessageExpectation,
    check_link,
    check_pose,
    check_values,
)
from channel import CodecConfig, GridHeader, GridMismatchError, decode_feature, encode_feature
from models.checkpoint import load_checkpoint
from models.message_bound import message_value_bounds
from tests.adversarial.hostile import CHECKPOINT

GRID = GridHeader(0.0, 0.0, 8.0, 6.0, 0.5)


def _pose(yaw: float = 0.3, x: float = 10.0) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    pose = np.eye(4)
    pose[:2, :2] = [[c, -s], [s, c]]
    pose[0, 3] = x
    return pose


def test_check_link_compares_sender_and_send_time() -> None:
    msg = encode_feature(np.ones((2, 12, 16), np.float32), np.eye(4), 0.3, 5, GRID)
    header = decode_feature(msg).header
    assert check_link(header, 5, 0.3) is None
    assert "sender 5" in check_link(header, 6, 0.3)
    assert "sent at 0.3" in check_link(header, 5, 0.2)


def test_check_pose() -> None:
    ego = np.eye(4)
    assert check_pose(_pose(), ego, 1000.0) is None
    sheared = _pose()
    sheared[:3, :3] *= 1.01
    assert "not a rigid" in check_pose(sheared, ego, 1000.0)
    mirrored = _pose()
    mirrored[:3, 2] *= -1  # orthonormal, det -1
    assert "not a rigid" in check_pose(mirrored, ego, 1000.0)
    assert "beyond the 1000 m" in check_pose(_pose(x=1500.0), ego, 1000.0)
    bottom = _pose()
    bottom[3, 0] = 0.5
    assert "last row" in check_pose(bottom, ego, 1000.0)


def test_check_values_with_and_without_model_bounds() -> None:
    loose = MessageExpectation((2, 1, 3), GRID, abs_bound=10.0)
    assert check_values(np.full((2, 1, 3), 9.0, np.float32), loose) is None
    assert "beyond the bound 10" in check_values(np.full((2, 1, 3), -11.0, np.float32), loose)
    nan = np.zeros((2, 1, 3), np.float32)
    nan[1, 0, 2] = np.nan
    assert "NaN/inf" in check_values(nan, loose)
    tight = MessageExpectation(
        (2, 1, 3), GRID, np.zeros(2, np.float32), np.array([1.0, 5.0], np.float32)
    )
    ok = np.array([[[0, 1, 0.5]], [[5, 0, 0]]], np.float32)
    assert check_values(ok, tight) is None
    ok[0, 0, 1] = 1.5
    assert check_values(ok, tight).startswith("channel 0 value 1.5 outside")


@pytest.fixture(scope="module")
def shipped():
    model, _, _ = load_checkpoint(CHECKPOINT)
    return model


def test_value_bound_is_sound_on_extreme_clouds(shipped) -> None:
    # Points anywhere in the grid, intensity in [0, 1], many per pillar and at the corners:
    # no honest cloud may exceed the bound, or the ego would reject honest neighbours.
    low, high = message_value_bounds(shipped)
    x0, y0, z0, x1, y1, z1 = shipped.grid.point_range
    rng = np.random.default_rng(0)
    clouds = []
    for _ in range(3):
        pts = rng.uniform((x0, y0, z0, 0.0), (x1, y1, z1, 1.0), (20000, 4))
        corner = rng.choice([0.0, 1.0], size=(4000, 4))
        pts[:4000] = np.array([x0, y0, z0, 0.0]) + corner * np.array(
            [x1 - x0 - 1e-3, y1 - y0 - 1e-3, z1 - z0 - 1e-3, 1.0]
        )
        clouds.append(pts.astype(np.float32))
    with torch.no_grad():
        maps = shipped.encode(clouds).numpy()
    per_channel = maps.transpose(1, 0, 2, 3).reshape(maps.shape[1], -1)
    assert (per_channel.max(axis=1) <= high + 1e-4).all()
    assert (per_channel.min(axis=1) >= low - 1e-4).all()


def test_honest_int8_message_passes_after_quantisation(shipped) -> None:
    expect = MessageExpectation.for_model(shipped, GridHeader(*shipped_grid(shipped)))
    rng = np.random.default_rng(1)
    x0, y0, z0, x1, y1, z1 = shipped.grid.point_range
    pts = rng.uniform((x0, y0, z0, 0.0), (x1, y1, z1, 1.0), (30000, 4)).astype(np.float32)
    with torch.no_grad():
        feature = shipped.encode([pts])[0].numpy()
    for dtype in ("int8", "float16"):
        msg = encode_feature(feature, np.eye(4), 0.0, 1, expect.grid, CodecConfig(dtype))
        assert check_values(decode_feature(msg).feature, expect) is None


def shipped_grid(model) -> tuple[float, float, float, float, float]:
    x0, y0, _, x1, y1, _ = model.message_grid.point_range
    return (x0, y0, x1, y1, model.message_grid.cell_size)


def test_decoder_extremes_make_the_value_check_o_of_c() -> None:
    # With the decoder's per-channel extremes the map itself is not read again.
    expect = MessageExpectation(
        (2, 1, 3), GRID, np.zeros(2, np.float32), np.array([1.0, 5.0], np.float32)
    )
    unread = np.full((2, 1, 3), np.nan, np.float32)
    ok = (np.zeros(2, np.float32), np.array([1.0, 4.0], np.float32))
    assert check_values(unread, expect, ok) is None
    bad = (np.zeros(2, np.float32), np.array([1.0, 6.0], np.float32))
    assert check_values(unread, expect, bad).startswith("channel 1 value 6 outside")


def test_decoder_reports_extremes_of_the_sent_values() -> None:
    f = np.zeros((2, 12, 16), np.float32)
    f[0, 3, 4], f[1, 5, 6] = 2.5, 7.0
    dec = decode_feature(encode_feature(f, np.eye(4), 0.0, 1, GRID, CodecConfig("float32")))
    np.testing.assert_array_equal(dec.value_max, [2.5, 7.0])
    np.testing.assert_array_equal(dec.value_min, [0.0, 0.0])


def test_a_wider_window_gets_its_own_shape_grid_and_value_bound() -> None:
    """With ``message_range`` the expectation is the window's shape and grid, and the value
    bound comes from the window's coordinates, so an honest map of points 75 m out passes."""
    wide, _, _ = load_checkpoint(CHECKPOINT, overrides={"message_range": [-80, -80, 80, 80]})
    narrow, _, _ = load_checkpoint(CHECKPOINT, overrides={"message_range": [-48, -32, 48, 32]})
    expect = MessageExpectation.for_model(wide, GridHeader(*shipped_grid(wide)))
    assert expect.shape == wide.message_shape != narrow.message_shape
    assert expect.grid.as_list() == [-80.0, -80.0, 80.0, 80.0, 0.4]
    rng = np.random.default_rng(3)
    pts = rng.uniform((70, -80, -3, 0.0), (80, 80, 1, 1.0), (8000, 4)).astype(np.float32)
    with torch.no_grad():
        feature = wide.encode([pts])[0].numpy()
    assert check_values(feature, expect) is None
    msg = encode_feature(feature, np.eye(4), 0.0, 1, expect.grid, CodecConfig("float16"))
    with pytest.raises(GridMismatchError):
        decode_feature(
            msg,
            expected_shape=narrow.message_shape,
            expected_grid=GridHeader(*shipped_grid(narrow)),
        )
