"""Traffic of the synthetic world: vehicle types, spawning, IDM car-following, signals, routing.

Vehicles drive the closed lane graph of a :class:`~scenarios.road_map.RoadMap`. Each one follows
the Intelligent Driver Model behind the first vehicle (or red stop line) along its planned path,
slows for curves, and picks a random turn at every junction. A junction serves one approach at
a time (protected phases) and a vehicle enters it only when no vehicle of another approach is
inside, so paths never cross. Position updates are clamped to the gap ahead, so vehicles on one
path never overlap. All randomness comes from one Generator seeded by the scenario seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from scenarios.road_map import RoadMap


@dataclass(frozen=True)
class VehicleType:
    """Size ranges (metres) and driving style of one category."""

    length: tuple[float, float]
    width: tuple[float, float]
    height: tuple[float, float]
    max_accel: float
    speed_factor: float


VEHICLE_TYPES: dict[str, VehicleType] = {
    "car": VehicleType((4.2, 4.9), (1.75, 1.9), (1.4, 1.6), 1.8, 1.0),
    "van": VehicleType((4.9, 5.5), (1.95, 2.1), (1.9, 2.3), 1.4, 0.95),
    "truck": VehicleType((10.5, 13.0), (2.45, 2.55), (3.2, 3.8), 0.9, 0.85),
}
TURN_WEIGHTS = {"straight": 0.5, "left": 0.25, "right": 0.25}
COMFORT_DECEL = 2.0  # IDM b
MAX_DECEL = 4.5  # a vehicle that would need more than this at amber/red goes on
HEADWAY, MIN_GAP = 1.3, 2.0  # IDM T and s0
SLOT_SPACING = 18.0  # initial centre-to-centre spacing on a lane, > longest truck + gap


@dataclass(frozen=True)
class TrafficState:
    """Every vehicle (moving and parked) at one instant, in id order, world frame."""

    ids: NDArray[np.int64]
    boxes: NDArray[np.float64]  # (M, 7) x, y, z (centre), l, w, h, yaw
    categories: tuple[str, ...]
    speeds: NDArray[np.float64]


class Traffic:
    """Moving and parked vehicles on a road map, stepped at a fixed ``dt``."""

    def __init__(
        self,
        road: RoadMap,
        moving: int,
        parked: int,
        connected: int,
        mix: dict[str, float],
        seed: int,
        dt: float = 0.1,
        signal_green: float = 10.0,
        signal_clearance: float = 4.0,
    ) -> None:
        if not 0 < connected <= moving:
            raise ValueError(f"traffic: need 0 < connected ({connected}) <= vehicles ({moving})")
        self.road, self.dt, self.time = road, dt, 0.0
        self.rng = np.random.default_rng([seed, 2])
        self.green, self.clearance = signal_green, signal_clearance
        self.cycle = max(1, road.num_signal_groups) * (signal_green + signal_clearance)
        self.signal_offset = float(self.rng.uniform(0.0, self.cycle))
        n = moving
        cats = ["car"] * connected + list(self._draw_categories(mix, n - connected))
        self.categories: list[str] = cats
        self.length, self.width, self.height = self._draw_sizes(cats)
        limit = max(seg.speed_limit for seg in road.segments)
        factors = np.array([VEHICLE_TYPES[c].speed_factor for c in cats])
        self.v0 = limit * factors * self.rng.uniform(0.85, 1.05, n)
        self.accel = np.array([VEHICLE_TYPES[c].max_accel for c in cats])
        self.seg = np.zeros(n, np.int64)
        self.s = np.zeros(n)
        self.v = np.zeros(n)
        self.plan: list[list[int]] = [[] for _ in range(n)]
        self.came_from = np.full(n, -1, np.int64)  # signal group of the last approach driven
        self._place(connected)
        self.ids = np.arange(1, n + 1, dtype=np.int64)
        self.cav_ids = self.ids[:connected].copy()
        self.parked = self._park(parked, n + 1)

    # ----------------------------------------------------------------- spawning
    def _draw_categories(self, mix: dict[str, float], count: int) -> NDArray[np.str_]:
        names = sorted(mix)
        weights = np.array([mix[k] for k in names], dtype=np.float64)
        return self.rng.choice(names, size=count, p=weights / weights.sum())

    def _draw_sizes(self, cats: list[str]) -> tuple[NDArray[np.float64], ...]:
        keys = ("length", "width", "height")
        sizes = np.array(
            [[self.rng.uniform(*getattr(VEHICLE_TYPES[c], k)) for k in keys] for c in cats]
        ).reshape(-1, 3)
        return sizes[:, 0], sizes[:, 1], sizes[:, 2]

    def _place(self, connected: int) -> None:
        """CAVs near the junction on different approaches (or mid-highway), others in free slots."""
        road, n = self.road, len(self.categories)
        taken: list[tuple[int, float]] = []
        inbound = road.lanes("inbound")
        order = self.rng.permutation(sorted({seg.signal_group for seg in inbound}))
        for i in range(connected):
            for _ in range(100):
                if inbound:
                    group = order[i % len(order)]
                    lane = self.rng.choice([g for g in inbound if g.signal_group == group])
                    s = lane.length - self.rng.uniform(10.0, 35.0) - 25.0 * (i // len(order))
                else:
                    lane = road.segments[self.rng.choice([g.index for g in road.lanes("outbound")])]
                    centre = int(np.argmin(np.hypot(*lane.points.T)))
                    s = lane.cumlen[centre] + self.rng.uniform(-60.0, 60.0)
                if all(seg != lane.index or abs(s - t) > SLOT_SPACING for seg, t in taken):
                    break
            taken.append((lane.index, float(s)))
        lanes = [seg for seg in road.segments if seg.kind in ("inbound", "outbound")]
        slots = [
            (seg.index, float(s))
            for seg in lanes
            for s in np.arange(10.0, seg.length - 10.0, SLOT_SPACING)
        ]
        slots = [
            (g, s)
            for g, s in slots
            if all(g != tg or abs(s - ts) > SLOT_SPACING for tg, ts in taken)
        ]
        if len(slots) < n - connected:
            raise ValueError(f"traffic: {n} vehicles do not fit the map ({len(slots)} free slots)")
        for k in self.rng.permutation(len(slots))[: n - connected]:
            taken.append(slots[k])
        for i, (seg, s) in enumerate(taken):
            self.seg[i], self.s[i] = seg, s
            self._extend_plan(i)
        self.v = self.rng.uniform(0.4, 0.9, n) * self.v0
        for i in range(n):
            gap = self._leader(i, self._occupancy(), set())[0]
            self.v[i] = min(
                self.v[i],
                np.sqrt(2.0 * 2.5 * max(gap - 1.0, 0.0)),
                self.road.segments[self.seg[i]].speed_limit,
            )

    def _park(self, count: int, first_id: int) -> TrafficState:
        spots = self.road.parking_spots
        if count > len(spots):
            raise ValueError(f"traffic: {count} parked vehicles but only {len(spots)} kerb spots")
        pick = np.sort(self.rng.choice(len(spots), size=count, replace=False))
        cats = [str(c) for c in self.rng.choice(["car", "van"], size=count, p=[0.75, 0.25])]
        length, width, height = self._draw_sizes(cats)
        xyz = np.column_stack([spots[pick, :2], height / 2]).reshape(-1, 3)
        boxes = np.column_stack([xyz, length, width, height, spots[pick, 2]]).reshape(-1, 7)
        ids = np.arange(first_id, first_id + count, dtype=np.int64)
        return TrafficState(ids, boxes, tuple(cats), np.zeros(count))

    # ----------------------------------------------------------------- routing
    def _extend_plan(self, i: int) -> None:
        """Keep three planned segments ahead; choose turns at junction entries at random."""
        plan = self.plan[i]
        while len(plan) < 3:
            last = self.road.segments[plan[-1] if plan else self.seg[i]]
            nxt = last.successors
            if len(nxt) == 1:
                plan.append(nxt[0])
                continue
            w = np.array([TURN_WEIGHTS[self.road.segments[k].turn] for k in nxt])
            plan.append(int(nxt[self.rng.choice(len(nxt), p=w / w.sum())]))

    # ----------------------------------------------------------------- signals
    def signal_state(self, group: int) -> str:
        """``"green"``, ``"amber"`` (last 3 s of green) or ``"red"`` for one approach now."""
        if self.road.num_signal_groups == 0:
            return "green"
        t = (self.time + self.signal_offset) % self.cycle
        slot = self.green + self.clearance
        if int(t // slot) != group:
            return "red"
        within = t % slot
        return "green" if within < self.green - 3.0 else "amber" if within < self.green else "red"

    def _junction_busy(self) -> set[int]:
        """Signal groups with any part of a vehicle inside the junction (on a connector) now."""
        busy: set[int] = set()
        for i in range(len(self.s)):
            g, half = int(self.seg[i]), self.length[i] / 2
            seg = self.road.segments[g]
            if seg.kind == "connector":
                busy.add(self._origin_group[g])
            elif seg.kind == "inbound" and self.s[i] + half > seg.length:
                busy.add(seg.signal_group)  # front already past the stop line
            elif seg.kind == "outbound" and self.s[i] - half < 0.0 and self.came_from[i] >= 0:
                busy.add(int(self.came_from[i]))  # tail still inside the junction
        return busy

    @property
    def _origin_group(self) -> dict[int, int]:
        if not hasattr(self, "_origin_cache"):
            self._origin_cache = {
                c: seg.signal_group for seg in self.road.lanes("inbound") for c in seg.successors
            }
        return self._origin_cache

    # ----------------------------------------------------------------- car following
    def _occupancy(self) -> dict[int, list[tuple[float, int]]]:
        occ: dict[int, list[tuple[float, int]]] = {}
        for i in range(len(self.s)):
            occ.setdefault(int(self.seg[i]), []).append((float(self.s[i]), i))
        for entries in occ.values():
            entries.sort()
        return occ

    def _leader(
        self, i: int, occ: dict[int, list[tuple[float, int]]], busy: set[int]
    ) -> tuple[float, float, float]:
        """``(gap to obstacle ahead, its speed, deceleration demanded by curves ahead)``."""
        segs = [int(self.seg[i]), *self.plan[i]]
        v, half = float(self.v[i]), self.length[i] / 2
        lookahead = max(60.0, 4.0 * v)
        offset = -float(self.s[i])
        curve_acc = 0.0
        for k, g in enumerate(segs):
            seg = self.road.segments[g]
            if k > 0 and v > seg.speed_limit:
                dist = max(offset - half, 0.5)
                curve_acc = min(curve_acc, (seg.speed_limit**2 - v**2) / (2.0 * dist))
            for s_j, j in occ.get(g, []):
                if k == 0 and (s_j, j) <= (float(self.s[i]), i):
                    continue
                return offset + s_j - half - self.length[j] / 2, float(self.v[j]), curve_acc
            if seg.kind == "inbound":
                stop = offset + seg.length - half  # front bumper to stop line
                if stop >= -0.01:
                    state = self.signal_state(seg.signal_group)
                    others_inside = bool(busy - {seg.signal_group})
                    can_stop = v < 0.5 or v * v / (2.0 * max(stop, 1e-3)) < MAX_DECEL
                    if others_inside or (state != "green" and can_stop):
                        return stop, 0.0, curve_acc
            offset += seg.length
            if offset > lookahead:
                break
        return np.inf, v, curve_acc

    def step(self) -> None:
        """Advance every moving vehicle by ``dt`` (IDM, Jacobi update, clamped to the gap)."""
        occ, busy = self._occupancy(), self._junction_busy()
        n = len(self.s)
        new_v, advance = np.zeros(n), np.zeros(n)
        for i in range(n):
            gap, lead_v, curve_acc = self._leader(i, occ, busy)
            v = float(self.v[i])
            limit = min(self.v0[i], self.road.segments[self.seg[i]].speed_limit)
            a_max = float(self.accel[i])
            brake = v * (v - lead_v) / (2.0 * np.sqrt(a_max * COMFORT_DECEL))
            s_star = MIN_GAP + max(0.0, v * HEADWAY + brake)
            free = 1.0 - (v / max(limit, 0.1)) ** 4
            interaction = (s_star / max(gap, 0.1)) ** 2 if np.isfinite(gap) else 0.0
            acc = a_max * (free - interaction)
            if curve_acc < 0.0:
                acc = min(acc, max(curve_acc, -MAX_DECEL))
            v_next = max(0.0, v + acc * self.dt)
            ds = 0.5 * (v + v_next) * self.dt
            room = max(0.0, gap - 0.3)
            if ds > room:
                ds, v_next = room, min(v_next, room / self.dt)
            new_v[i], advance[i] = v_next, ds
        self.v = new_v
        self.s = self.s + advance
        for i in range(n):
            while self.s[i] > self.road.segments[self.seg[i]].length:
                left = self.road.segments[self.seg[i]]
                if left.kind == "inbound":
                    self.came_from[i] = left.signal_group
                self.s[i] -= left.length
                self.seg[i] = self.plan[i].pop(0)
                self._extend_plan(i)
        self.time += self.dt

    # ----------------------------------------------------------------- output
    def state(self) -> TrafficState:
        """All vehicles now, moving then parked (ids ascending), as world-frame boxes."""
        n = len(self.s)
        xy, yaw = np.zeros((n, 2)), np.zeros(n)
        for g in np.unique(self.seg):
            sel = self.seg == g
            xy[sel], yaw[sel] = self.road.segments[int(g)].pose_at(self.s[sel])
        boxes = np.column_stack([xy, self.height / 2, self.length, self.width, self.height, yaw])
        return TrafficState(
            np.concatenate([self.ids, self.parked.ids]),
            np.concatenate([boxes, self.parked.boxes]),
            tuple(self.categories) + self.parked.categories,
            np.concatenate([self.v, self.parked.speeds]),
        )
