"""Replay OPV2V / V2XSet scenarios as Frames.

Layout: ``<root>/<split>/<scenario>/<cav_id>/NNNNNN.pcd|.yaml``. Within a scenario the CAV
folders are ordered exactly as OpenCOOD orders them (:func:`opencood_cav_order`) and the first
is the ego. Frame numbers are CARLA ticks: the simulator runs at 20 Hz and the dumps are taken
every second tick (10 Hz, numbers differ by 2), so ``Frame.timestamp = (n - n0) / 20`` seconds
with ``n0`` the scenario's first frame number, and ``Frame.index`` is the position in sorted
order. A frame holds the CAVs that have a dump at that number; the ego must have every one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from scenarios.frame import AgentObservation, Frame, ObjectSet
from scenarios.opv2v_yaml import CavRecord, OPV2VFormatError, read_cav_yaml
from scenarios.pcd import PCDFormatError, read_pcd

__all__ = [
    "TICK_HZ",
    "OPV2VFormatError",
    "OPV2VScenario",
    "frame_from_records",
    "list_scenarios",
    "opencood_cav_order",
]

TICK_HZ = 20.0  # CARLA ticks per second in OPV2V; frame numbers count ticks
_FRAME_STEM = re.compile(r"^\d+$")


def opencood_cav_order(names: Iterable[str]) -> list[str]:
    """CAV folder names in OpenCOOD's order: sorted as strings, a leading negative id (a
    roadside unit) moved to the end. The first name is OpenCOOD's ego."""
    ordered = sorted(names)
    if ordered and ordered[0].startswith("-"):
        ordered = ordered[1:] + ordered[:1]
    return ordered


def _cav_dirs(scenario: Path) -> dict[int, Path]:
    """Integer-named sub-folders of a scenario (other folders are ignored), in OpenCOOD order."""
    names = []
    for child in scenario.iterdir():
        if child.is_dir() and re.fullmatch(r"-?\d+", child.name):
            names.append(child.name)
    return {int(name): scenario / name for name in opencood_cav_order(names)}


def list_scenarios(root: str | Path, split: str | None = None) -> list[Path]:
    """Scenario folders of a dataset split (``root/split``, or ``root`` itself when ``split``
    is None), sorted by name: folders holding at least one integer-named CAV folder."""
    base = Path(root) if split is None else Path(root) / split
    if not base.is_dir():
        raise OPV2VFormatError(f"{base}: no such dataset folder")
    return sorted(p for p in base.iterdir() if p.is_dir() and _cav_dirs(p))


def _frame_numbers(cav_dir: Path) -> list[int]:
    """Frame numbers of a CAV folder: yaml files named by digits, ``additional`` ones skipped."""
    numbers = []
    for path in cav_dir.glob("*.yaml"):
        if "additional" in path.name or not _FRAME_STEM.match(path.stem):
            continue
        numbers.append(int(path.stem))
    return sorted(numbers)


def frame_from_records(
    index: int,
    timestamp: float,
    records: Sequence[tuple[int, CavRecord, np.ndarray]],
) -> Frame:
    """Assemble a Frame from ``(agent_id, yaml record, points)`` with the ego first.

    Ground truth is the union of every agent's ``vehicles`` (world frame); when several list
    one id the first agent's entry wins, so the ego's view is preferred. Objects are sorted by
    id so that the result does not depend on which agent saw what first.
    """
    agents: dict[int, AgentObservation] = {}
    boxes: dict[int, np.ndarray] = {}
    for agent_id, record, points in records:
        agents[agent_id] = AgentObservation(
            agent_id=agent_id,
            lidar_pose=record.lidar_pose,
            points=points,
            speed=record.speed,
            vehicle_pose=record.vehicle_pose,
            is_rsu=agent_id < 0 if record.is_rsu is None else record.is_rsu,
        )
        for object_id, box in record.vehicles.items():
            boxes.setdefault(object_id, box)
    ids = np.array(sorted(boxes), dtype=np.int64)
    objects = (
        ObjectSet(ids, np.stack([boxes[int(i)] for i in ids])) if len(ids) else ObjectSet.empty()
    )
    return Frame(
        timestamp=timestamp,
        index=index,
        agents=agents,
        objects=objects,
        ego_id=records[0][0],
    )


class OPV2VScenario:
    """One OPV2V / V2XSet scenario folder as a :class:`~scenarios.source.FrameSource`.

    ``ego_id`` overrides OpenCOOD's choice of ego (the first CAV folder); the chosen ego comes
    first in every Frame, the other agents follow in OpenCOOD order. ``load_points=False``
    skips the PCD files (empty point arrays) for ground-truth-only passes.
    """

    rate_hz: float = 10.0

    def __init__(
        self, path: str | Path, ego_id: int | None = None, load_points: bool = True
    ) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise OPV2VFormatError(f"{self.path}: scenario folder does not exist")
        cavs = _cav_dirs(self.path)
        if not cavs:
            raise OPV2VFormatError(f"{self.path}: no CAV folders (integer-named sub-folders)")
        if ego_id is not None and ego_id not in cavs:
            raise OPV2VFormatError(f"{self.path}: ego {ego_id} is not among CAVs {list(cavs)}")
        self.ego_id = next(iter(cavs)) if ego_id is None else ego_id
        order = [self.ego_id] + [c for c in cavs if c != self.ego_id]
        self._cav_dirs = {c: cavs[c] for c in order}
        self._numbers = {c: set(_frame_numbers(d)) for c, d in self._cav_dirs.items()}
        all_numbers = sorted(set().union(*self._numbers.values()))
        if not all_numbers:
            raise OPV2VFormatError(f"{self.path}: no frame yaml files in any CAV folder")
        missing = [n for n in all_numbers if n not in self._numbers[self.ego_id]]
        if missing:
            shown = ", ".join(f"{n:06d}" for n in missing[:5])
            raise OPV2VFormatError(
                f"{self._cav_dirs[self.ego_id]}: ego {self.ego_id} has no dump for frame(s) "
                f"{shown}{' ...' if len(missing) > 5 else ''} that other CAVs have"
            )
        self._frame_numbers = all_numbers
        self.load_points = load_points

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def num_frames(self) -> int:
        return len(self._frame_numbers)

    @property
    def frame_numbers(self) -> list[int]:
        """The 6-digit frame numbers (CARLA ticks) of the frames, in order."""
        return list(self._frame_numbers)

    @property
    def cav_ids(self) -> list[int]:
        """All CAV ids of the scenario, ego first."""
        return list(self._cav_dirs)

    def frame(self, index: int) -> Frame:
        """The frame at position ``index`` (0-based; negative indices are not accepted)."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"{self.name}: frame {index} out of range [0, {self.num_frames})")
        number = self._frame_numbers[index]
        records = []
        for cav_id, cav_dir in self._cav_dirs.items():
            if number not in self._numbers[cav_id]:
                continue
            stem = cav_dir / f"{number:06d}"
            record = read_cav_yaml(stem.with_suffix(".yaml"))
            records.append((cav_id, record, self._points(stem.with_suffix(".pcd"))))
        timestamp = (number - self._frame_numbers[0]) / TICK_HZ
        return frame_from_records(index, timestamp, records)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        """Frames ``start`` .. ``stop - 1`` in order (``stop`` defaults to the end)."""
        end = self.num_frames if stop is None else min(stop, self.num_frames)
        for index in range(start, end):
            yield self.frame(index)

    def _points(self, path: Path) -> np.ndarray:
        if not self.load_points:
            return np.zeros((0, 4), dtype=np.float32)
        if not path.is_file():
            raise OPV2VFormatError(f"{path}: missing PCD file for this frame's yaml")
        try:
            return read_pcd(path)
        except PCDFormatError as exc:
            raise OPV2VFormatError(str(exc)) from exc

    def __repr__(self) -> str:
        return f"OPV2VScenario({str(self.path)!r}, ego={self.ego_id}, frames={self.num_frames})"
