"""Road layouts of the synthetic world: lanes as sampled polylines, buildings, parking spots.

A map is a closed lane graph so traffic can run for any duration with stable vehicle ids:
inbound lanes end at a stop line, connectors (cubic arcs) cross the junction, outbound lanes
run to the end of an arm, and a U-turn loop there feeds the inbound lane again. Coordinates are
world-frame metres, right-hand traffic, yaw counter-clockwise from +x.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

LANE_KINDS = ("inbound", "connector", "outbound", "uturn")


@dataclass
class Segment:
    """One drivable lane piece: a polyline with arc length, successors and a speed limit."""

    index: int
    kind: str
    points: NDArray[np.float64]
    successors: list[int] = field(default_factory=list)
    signal_group: int = -1  # inbound lanes: the arm whose green light lets them go
    turn: str = ""  # connectors: "left", "right" or "straight"
    speed_limit: float = 13.9

    def __post_init__(self) -> None:
        steps = np.hypot(*np.diff(self.points, axis=0).T)
        self.cumlen = np.concatenate([[0.0], np.cumsum(steps)])
        self.headings = np.arctan2(*np.diff(self.points, axis=0).T[::-1])

    @property
    def length(self) -> float:
        return float(self.cumlen[-1])

    def pose_at(self, s: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``(xy (K, 2), yaw (K,))`` at arc lengths ``s`` along the polyline (clipped to it)."""
        s = np.clip(np.asarray(s, dtype=np.float64), 0.0, self.length)
        x = np.interp(s, self.cumlen, self.points[:, 0])
        y = np.interp(s, self.cumlen, self.points[:, 1])
        piece = np.searchsorted(self.cumlen, s, side="right") - 1
        piece = np.clip(piece, 0, len(self.headings) - 1)
        return np.stack([x, y], axis=1), self.headings[piece]


@dataclass
class RoadMap:
    """Lane graph, static boxes and kerb-side parking for one layout."""

    layout: str
    segments: list[Segment]
    buildings: NDArray[np.float64]  # (K, 7) world boxes, z = centre height
    parking_spots: NDArray[np.float64]  # (P, 3) x, y, yaw
    num_signal_groups: int
    extent: float  # half-size of the square that holds the whole map

    def lanes(self, kind: str) -> list[Segment]:
        return [seg for seg in self.segments if seg.kind == kind]


def _unit(angle: float) -> NDArray[np.float64]:
    return np.array([np.cos(angle), np.sin(angle)])


def _line(a: NDArray[np.float64], b: NDArray[np.float64], step: float = 2.0) -> NDArray[np.float64]:
    n = max(2, int(np.ceil(np.linalg.norm(b - a) / step)) + 1)
    t = np.linspace(0.0, 1.0, n)[:, None]
    return a + t * (b - a)


def _bezier(
    p0: NDArray[np.float64], h0: float, p3: NDArray[np.float64], h3: float, n: int = 24
) -> NDArray[np.float64]:
    """Cubic curve from ``p0`` heading ``h0`` to ``p3`` heading ``h3``; close to a circular arc
    for a right-angle turn (handles 0.39 of the chord) and a straight line when aligned."""
    handle = 0.39 * float(np.linalg.norm(p3 - p0))
    p1, p2 = p0 + handle * _unit(h0), p3 - handle * _unit(h3)
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def _uturn(centre: NDArray[np.float64], radius: float, start_angle: float) -> NDArray[np.float64]:
    """Half circle turning left, starting at ``centre + radius * unit(start_angle)``."""
    angles = start_angle + np.linspace(0.0, np.pi, 16)
    return centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _curve_speed(points: NDArray[np.float64], limit: float, lateral_acc: float = 2.5) -> float:
    """Speed limit from the tightest curvature of a polyline: ``sqrt(a_lat * radius)``."""
    d = np.diff(points, axis=0)
    heading = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    step = np.hypot(d[:, 0], d[:, 1])
    if len(heading) < 2:
        return limit
    curvature = np.abs(np.diff(heading)) / np.maximum(0.5 * (step[1:] + step[:-1]), 1e-6)
    kappa = float(curvature.max())
    return limit if kappa < 1e-4 else min(limit, float(np.sqrt(lateral_acc / kappa)))


def _turn_kind(angle_in: float, angle_out: float) -> str:
    """Classify a connector from arm ``angle_in`` to arm ``angle_out`` (arm directions outward)."""
    delta = (angle_out - angle_in) % (2 * np.pi)  # heading change is delta - pi
    if abs(delta - np.pi) < 0.3:
        return "straight"
    return "left" if delta > np.pi else "right"


def _building_row(
    rng: np.random.Generator,
    origin: NDArray[np.float64],
    along: NDArray[np.float64],
    outward: NDArray[np.float64],
    start: float,
    stop: float,
    heights: tuple[float, float],
) -> list[list[float]]:
    """Boxes lining one side of a road from ``start`` to ``stop`` metres along ``along``."""
    boxes: list[list[float]] = []
    pos = start
    yaw = float(np.arctan2(along[1], along[0]))
    while pos < stop - 6.0:
        length = min(float(rng.uniform(12.0, 30.0)), stop - pos)
        depth = float(rng.uniform(10.0, 20.0))
        height = float(rng.uniform(*heights))
        centre = origin + (pos + length / 2) * along + (depth / 2) * outward
        boxes.append([centre[0], centre[1], height / 2, length, depth, height, yaw])
        pos += length + float(rng.uniform(2.0, 8.0))
    return boxes


def junction_map(params: dict[str, Any], arm_angles_deg: list[float], seed: int) -> RoadMap:
    """A signalised junction with one arm per angle; each arm is its own signal phase."""
    rng = np.random.default_rng([seed, 1])
    width, lanes = float(params["lane_width"]), int(params["lanes_per_direction"])
    arm_len, limit = float(params["arm_length"]), float(params["speed_limit"])
    parking_w, sidewalk = 2.5, 3.0
    road_half = lanes * width + parking_w
    stop_r = road_half + 2.0
    angles = [np.radians(a) for a in arm_angles_deg]
    segments: list[Segment] = []

    def add(kind: str, points: NDArray[np.float64], **kw: Any) -> int:
        speed = _curve_speed(points, limit)
        segments.append(Segment(len(segments), kind, points, speed_limit=speed, **kw))
        return len(segments) - 1

    inbound: dict[tuple[int, int], int] = {}
    outbound: dict[tuple[int, int], int] = {}
    for a, ang in enumerate(angles):
        u = _unit(ang)
        n = _unit(ang + np.pi / 2)
        for k in range(lanes):
            off = (k + 0.5) * width
            outbound[a, k] = add("outbound", _line(stop_r * u - off * n, arm_len * u - off * n))
            inbound[a, k] = add(
                "inbound", _line(arm_len * u + off * n, stop_r * u + off * n), signal_group=a
            )
            loop = add("uturn", _uturn(arm_len * u, off, ang - np.pi / 2))
            segments[outbound[a, k]].successors.append(loop)
            segments[loop].successors.append(inbound[a, k])
    for a, ang_in in enumerate(angles):
        for b, ang_out in enumerate(angles):
            if a == b:
                continue
            turn = _turn_kind(ang_in, ang_out)
            for k in range(lanes):
                if turn == "left" and k != 0 or turn == "right" and k != lanes - 1:
                    continue
                k_out = {"left": 0, "right": lanes - 1}.get(turn, k)
                start = segments[inbound[a, k]].points[-1]
                end = segments[outbound[b, k_out]].points[0]
                conn = add("connector", _bezier(start, ang_in + np.pi, end, ang_out), turn=turn)
                segments[inbound[a, k]].successors.append(conn)
                segments[conn].successors.append(outbound[b, k_out])

    buildings: list[list[float]] = []
    spots: list[list[float]] = []
    heights = (float(params["building_height_min"]), float(params["building_height_max"]))
    edge = road_half + sidewalk
    for ang in angles:
        u = _unit(ang)
        for side in (1.0, -1.0):
            n = side * _unit(ang + np.pi / 2)
            neighbour = (ang + side * np.pi / 2) % (2 * np.pi)
            has_neighbour = any(
                abs((b - neighbour + np.pi) % (2 * np.pi) - np.pi) < 0.1 for b in angles
            )
            start = edge if has_neighbour else 0.0
            buildings += _building_row(rng, edge * n, u, n, start, arm_len - 10.0, heights)
            # Parking strip between the outer lane and the kerb; traffic direction on this side.
            yaw = ang + (np.pi if side > 0 else 0.0)
            for pos in np.arange(stop_r + 12.0, arm_len - 15.0, 6.5):
                xy = pos * u + (lanes * width + parking_w / 2) * n
                spots.append([xy[0], xy[1], yaw])
    extent = arm_len + 40.0
    return RoadMap(
        "junction",
        segments,
        np.array(buildings).reshape(-1, 7),
        np.array(spots).reshape(-1, 3),
        len(angles),
        extent,
    )


def highway_map(params: dict[str, Any], seed: int) -> RoadMap:
    """A straight divided highway along x, U-turn loops at both ends, noise barriers aside."""
    rng = np.random.default_rng([seed, 1])
    width, lanes = float(params["lane_width"]), int(params["lanes_per_direction"])
    half_len, limit = float(params["length"]) / 2, float(params["speed_limit"])
    median = float(params["median_width"])
    segments: list[Segment] = []

    def add(kind: str, points: NDArray[np.float64]) -> int:
        speed = _curve_speed(points, limit)
        segments.append(Segment(len(segments), kind, points, speed_limit=speed))
        return len(segments) - 1

    for k in range(lanes):
        off = median / 2 + (k + 0.5) * width
        east = add("outbound", _line(np.array([-half_len, -off]), np.array([half_len, -off]), 5.0))
        west = add("outbound", _line(np.array([half_len, off]), np.array([-half_len, off]), 5.0))
        east_loop = add("uturn", _uturn(np.array([half_len, 0.0]), off, -np.pi / 2))
        west_loop = add("uturn", _uturn(np.array([-half_len, 0.0]), off, np.pi / 2))
        segments[east].successors.append(east_loop)
        segments[east_loop].successors.append(west)
        segments[west].successors.append(west_loop)
        segments[west_loop].successors.append(east)
    shoulder = median / 2 + lanes * width
    spots = [
        [x, side * (shoulder + 1.5), 0.0 if side < 0 else np.pi]
        for x in np.arange(-half_len + 30.0, half_len - 30.0, 7.0)
        for side in (-1.0, 1.0)
    ]
    heights = (float(params["building_height_min"]), float(params["building_height_max"]))
    buildings: list[list[float]] = []
    barrier = shoulder + 4.0
    for side in (-1.0, 1.0):
        pos = -half_len + 20.0
        while pos < half_len - 60.0:
            length = float(rng.uniform(40.0, 120.0))
            length = min(length, half_len - 20.0 - pos)
            y = side * (barrier + 0.25)
            buildings.append([pos + length / 2, y, 2.0, length, 0.5, 4.0, 0.0])
            pos += length + float(rng.uniform(20.0, 60.0))
        for row in _building_row(
            rng,
            np.array([-half_len, side * (barrier + 15.0)]),
            np.array([1.0, 0.0]),
            np.array([0.0, side]),
            0.0,
            2 * half_len,
            heights,
        ):
            buildings.append(row)
    return RoadMap(
        "highway",
        segments,
        np.array(buildings).reshape(-1, 7),
        np.array(spots).reshape(-1, 3),
        0,
        half_len + 60.0,
    )


LAYOUT_ARMS = {"intersection": [0.0, 90.0, 180.0, 270.0], "t_junction": [0.0, 180.0, 270.0]}


def build_map(layout: str, params: dict[str, Any], seed: int) -> RoadMap:
    """The map for a scenario's ``map.layout`` and its parameters."""
    if layout in LAYOUT_ARMS:
        return junction_map(params, LAYOUT_ARMS[layout], seed)
    if layout == "highway":
        return highway_map(params, seed)
    raise ValueError(f"unknown map layout {layout!r}; known: {sorted([*LAYOUT_ARMS, 'highway'])}")
