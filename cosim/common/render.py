"""Bird's-eye-view pictures of a Frame: every agent's points in its own colour, boxes, agents."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.patches import Polygon  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from scenarios.corruptions import CORRUPTION_NAMES, CorruptionContext, corrupt  # noqa: E402
from scenarios.frame import Frame  # noqa: E402
from scenarios.geometry import box_corners_bev  # noqa: E402
from scenarios.lidar_config import LidarConfig  # noqa: E402

AGENT_COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
)


def draw_boxes(
    axes: Axes,
    boxes: NDArray[np.floating],
    colour: str,
    label: str | None = None,
    linewidth: float = 1.0,
) -> None:
    """Outline ``(M, 7)`` boxes in BEV, with a tick from the centre towards the heading."""
    for index, corners in enumerate(box_corners_bev(boxes)):
        axes.add_patch(
            Polygon(
                corners,
                closed=True,
                fill=False,
                edgecolor=colour,
                linewidth=linewidth,
                label=label if index == 0 else None,
            )
        )
        front = corners[[0, 3]].mean(axis=0)
        axes.plot(
            [boxes[index, 0], front[0]],
            [boxes[index, 1], front[1]],
            color=colour,
            linewidth=linewidth,
        )


def draw_frame(
    axes: Axes,
    frame: Frame,
    view_range: float = 100.0,
    points_override: dict[int, NDArray[np.float32]] | None = None,
) -> None:
    """Draw ``frame`` in the ego's LiDAR frame on ``axes``.

    ``points_override`` replaces an agent's sensor-frame points (e.g. a corrupted sweep).
    """
    for slot, agent_id in enumerate(frame.agent_ids):
        colour = AGENT_COLOURS[slot % len(AGENT_COLOURS)]
        transform = frame.transform(agent_id, frame.ego_id)
        sensor_points = (points_override or {}).get(agent_id, frame.agent(agent_id).points)
        xyz = sensor_points[:, :3].astype(np.float64) @ transform[:3, :3].T + transform[:3, 3]
        axes.scatter(
            xyz[:, 0], xyz[:, 1], s=0.3, c=colour, alpha=0.6, linewidths=0, rasterized=True
        )
        origin = transform[:2, 3]
        role = "ego" if agent_id == frame.ego_id else "cav"
        axes.plot(
            *origin,
            marker="^" if role == "ego" else "o",
            color=colour,
            markersize=8,
            markeredgecolor="black",
            label=f"{role} {agent_id}",
        )
    _, boxes = frame.objects_in(max_range=view_range, exclude_self=False)
    draw_boxes(axes, boxes, "red", label="ground truth")
    axes.set_xlim(-view_range, view_range)
    axes.set_ylim(-view_range, view_range)
    axes.set_aspect("equal")
    axes.set_xlabel("x (m, ego LiDAR frame)")
    axes.set_ylabel("y (m)")


def corrupted_points(
    frame: Frame, name: str, severity: int, seed: int, lidar: LidarConfig | None = None
) -> dict[int, NDArray[np.float32]]:
    """Every agent's sweep with one corruption applied, seeded per agent."""
    out = {}
    for slot, agent in enumerate(frame.agents.values()):
        context = CorruptionContext(lidar=lidar or LidarConfig(), speed_mps=agent.speed)
        out[agent.agent_id] = corrupt(agent.points, name, severity, seed + slot, context)
    return out


def render_frame(
    frame: Frame,
    out: Path,
    title: str = "",
    view_range: float = 100.0,
    corruption: str | None = None,
    severity: int = 2,
    seed: int = 0,
    lidar: LidarConfig | None = None,
) -> Path:
    """Save a BEV PNG of ``frame`` (optionally with a sensor corruption); returns the path."""
    figure, axes = plt.subplots(figsize=(9, 9), dpi=110)
    override = corrupted_points(frame, corruption, severity, seed, lidar) if corruption else None
    draw_frame(axes, frame, view_range, override)
    suffix = f"  {corruption} severity {severity}" if corruption else ""
    axes.set_title((title or f"frame {frame.index}  t = {frame.timestamp:.1f} s") + suffix)
    axes.legend(loc="upper right", fontsize=8, markerscale=1.0)
    return save(figure, out)


def render_corruption_grid(
    frame: Frame,
    out: Path,
    severity: int = 2,
    seed: int = 0,
    title: str = "",
    view_range: float = 60.0,
    lidar: LidarConfig | None = None,
) -> Path:
    """One picture: the clean frame and each of the seven corruptions at ``severity``."""
    names = ("clean", *CORRUPTION_NAMES)
    figure, grid = plt.subplots(2, 4, figsize=(20, 10.5), dpi=90)
    for axes, name in zip(grid.flat, names, strict=True):
        override = None if name == "clean" else corrupted_points(frame, name, severity, seed, lidar)
        draw_frame(axes, frame, view_range, override)
        count = sum(p.shape[0] for p in (override or {}).values()) or sum(
            a.points.shape[0] for a in frame.agents.values()
        )
        axes.set_title(f"{name}  ({count} points)")
    figure.suptitle(f"{title}  severity {severity}".strip())
    figure.tight_layout()
    return save(figure, out)


def save(figure: plt.Figure, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, bbox_inches="tight")
    plt.close(figure)
    return out
