"""Feature warping: whole-cell shifts, 90-degree rotation, identity, mask area, linear fields."""

import math

import numpy as np
import pytest
import torch

from models.grid import GridSpec
from models.warp import affine_theta, warp_bev, warp_to_ego
from scenarios.geometry import yaw_pose

# 8 x 8 cells of 1 m over [-4, 4)^2 (0.5 m voxels, stride 2).
SQUARE = GridSpec((-4.0, -4.0, -1.0, 4.0, 4.0, 1.0), (0.5, 0.5, 2.0), feature_stride=2)
# 4 rows x 6 cols of 1 m, off-centre: x in [-2, 4), y in [-3, 1).
WIDE = GridSpec((-2.0, -3.0, -1.0, 4.0, 1.0, 1.0), (1.0, 1.0, 2.0), feature_stride=1)


def pattern(grid: GridSpec, channels: int = 2) -> torch.Tensor:
    h, w = grid.bev_shape
    return torch.arange(channels * h * w, dtype=torch.float32).reshape(channels, h, w) + 1.0


def test_identity_is_identity() -> None:
    f = pattern(WIDE)
    pose = yaw_pose(12.0, -7.0, 1.9, 0.7)
    out = warp_to_ego(f, pose, pose, WIDE)
    torch.testing.assert_close(out.features[0], f, rtol=0, atol=1e-5)
    assert out.mask.shape == (1, 1, 4, 6) and out.mask.min() == 1.0


def test_translation_by_whole_cells_shifts_pattern() -> None:
    f = pattern(WIDE)
    # Neighbour 1 cell ahead (+x) and 2 cells left (+y) of the ego; both poses rotated in world.
    ego = yaw_pose(5.0, 3.0, 0.0, math.radians(30.0))
    nbr = ego @ yaw_pose(1.0, 2.0, 0.0, 0.0)
    out = warp_to_ego(f, nbr, ego, WIDE)
    expected = torch.zeros_like(f)
    expected[:, 2:, 1:] = f[:, :-2, :-1]  # neighbour cell (i, j) lands on ego cell (i+2, j+1)
    torch.testing.assert_close(out.features[0], expected, rtol=0, atol=1e-4)
    mask = torch.zeros(4, 6)
    mask[2:, 1:] = 1.0
    assert torch.equal(out.mask[0, 0], mask)


def test_rotation_by_90_degrees_rotates_pattern() -> None:
    f = pattern(SQUARE)
    out = warp_to_ego(f, yaw_pose(0, 0, 0, math.pi / 2), np.eye(4), SQUARE)
    # Neighbour point (x, y) is ego point (-y, x): cell (i, j) -> ego cell (j, 7 - i).
    expected = torch.rot90(f, k=-1, dims=(1, 2))
    torch.testing.assert_close(out.features[0], expected, rtol=0, atol=1e-4)
    assert out.mask.min() == 1.0
    # One hot cell by hand: neighbour centre (2.5, 0.5) = col 6, row 4 -> ego (-0.5, 2.5).
    hot = torch.zeros(1, 8, 8)
    hot[0, 4, 6] = 1.0
    warped = warp_to_ego(hot, yaw_pose(0, 0, 0, math.pi / 2), np.eye(4), SQUARE).features
    assert torch.nonzero(warped[0, 0] > 0.5).tolist() == [[6, 3]]


def test_linear_field_is_sampled_exactly_under_any_pose() -> None:
    grid = GridSpec((-10.0, -6.0, -1.0, 10.0, 6.0, 1.0), (0.5, 0.5, 2.0), feature_stride=1)
    h, w = grid.bev_shape
    xs = grid.point_range[0] + (np.arange(w) + 0.5) * grid.cell_size
    ys = grid.point_range[1] + (np.arange(h) + 0.5) * grid.cell_size
    gx, gy = np.meshgrid(xs, ys)
    field = torch.tensor(0.3 * gx - 0.7 * gy + 2.0, dtype=torch.float32)[None]
    nbr_to_ego = yaw_pose(1.3, -0.4, 0.0, math.radians(17.0))
    out = warp_bev(field, nbr_to_ego, grid)
    back = np.linalg.inv(nbr_to_ego)  # ego cell centre -> neighbour frame
    nx_ = back[0, 0] * gx + back[0, 1] * gy + back[0, 3]
    ny_ = back[1, 0] * gx + back[1, 1] * gy + back[1, 3]
    interior = (np.abs(nx_) < 10.0 - 0.5) & (np.abs(ny_) < 6.0 - 0.5)  # all 4 taps inside
    assert interior.sum() > 0.6 * h * w
    np.testing.assert_allclose(
        out.features[0, 0].numpy()[interior], (0.3 * nx_ - 0.7 * ny_ + 2.0)[interior], atol=1e-4
    )


def test_mask_area_after_translation_and_rotation() -> None:
    out = warp_bev(pattern(SQUARE), yaw_pose(3.0, 0.0, 0.0, 0.0), SQUARE)
    assert out.mask.sum() == 8 * 5
    big = GridSpec((-20.0, -20.0, -1.0, 20.0, 20.0, 1.0), (1.0, 1.0, 2.0), feature_stride=1)
    rotated = warp_bev(torch.ones(1, 40, 40), yaw_pose(0, 0, 0, math.pi / 4), big)
    octagon = 2.0 * (math.sqrt(2.0) - 1.0) * 40 * 40  # square meets its 45-degree copy
    assert abs(rotated.mask.sum().item() - octagon) / octagon < 0.02


def test_batched_warp_and_theta() -> None:
    f = torch.stack([pattern(SQUARE), pattern(SQUARE) * 2])
    transforms = np.stack([np.eye(4), yaw_pose(-1.0, 0.0, 0.0, 0.0)])
    out = warp_bev(f, transforms, SQUARE)
    torch.testing.assert_close(out.features[0], f[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.features[1, :, :, :-1], f[1, :, :, 1:], rtol=0, atol=1e-4)
    assert out.mask[1, 0, :, -1].sum() == 0
    theta = affine_theta(yaw_pose(1.0, 0.0, 0.0, 0.0), SQUARE)
    torch.testing.assert_close(theta, torch.tensor([[[1.0, 0.0, -0.25], [0.0, 1.0, 0.0]]]))
    with pytest.raises(ValueError, match="features must be"):
        warp_bev(torch.zeros(1, 5, 5), np.eye(4), SQUARE)


# The sender's window: x in [-8, 8), y in [-4, 4), 1 m cells (16 x 8); SQUARE is the ego's grid.
WINDOW = GridSpec((-8.0, -4.0, -1.0, 8.0, 4.0, 1.0), (0.5, 0.5, 2.0), feature_stride=2)


def test_warp_from_a_wider_window_into_the_ego_grid() -> None:
    """A hot cell 6.5 m ahead of a neighbour standing 6 m behind the ego lands on ego cell
    (x 0.5, y 0.5); from the neighbour's old window (SQUARE) it is never sent."""
    behind = yaw_pose(-6.0, 0.0, 0.0, 0.0)
    hot = torch.zeros(1, 8, 16)
    hot[0, 4, 14] = 1.0  # centre x = -8 + 14.5 = 6.5, y = -4 + 4.5 = 0.5
    out = warp_bev(hot, behind, WINDOW, SQUARE)
    assert out.features.shape == (1, 1, 8, 8)
    assert torch.nonzero(out.features[0, 0] > 0.5).tolist() == [[4, 4]]  # x 0.5, y 0.5
    # Target columns 0-5 (x -3.5 .. 1.5) are neighbour x 2.5 .. 7.5, inside its window;
    # columns 6-7 (x 2.5, 3.5) are neighbour x 8.5, 9.5, outside.
    expected = torch.zeros(8, 8)
    expected[:, :6] = 1.0
    assert torch.equal(out.mask[0, 0], expected)
    # The old window (the ego grid's extent in the neighbour's frame) ends at x = 4.
    old = warp_bev(hot[:, :, 4:12], behind, SQUARE)
    assert float(old.features.abs().sum()) == 0.0


def test_warp_between_grids_needs_the_same_cell_size() -> None:
    with pytest.raises(ValueError, match="cell size"):
        fine = GridSpec((-4.0, -4.0, -1.0, 4.0, 4.0, 1.0), (0.5, 0.5, 2.0), feature_stride=1)
        warp_bev(pattern(fine), np.eye(4), fine, SQUARE)
