"""Training data: the on-disk frame shards, and CooperativeSamples cut from them.

A dataset folder (written by ``cosim dataset build``) holds ``manifest.json`` and, per shard,
``shard-NNNNN.agents.parquet`` (one row per frame x agent, one row group per frame, so a frame is
read alone) and ``shard-NNNNN.objects.parquet`` (one row per frame x object, world frame). The
format lives here, next to its reader, so the writer and the reader cannot drift apart.
:class:`FrameStore` replays the folder as a FrameSource; :class:`CooperativeDataset` turns
``(frame, ego)`` pairs into samples with the same rules as :func:`sample_from_frame`, which the
live simulation driver uses too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch.utils.data

from models.batch import CooperativeSample
from models.grid import GridSpec
from scenarios.frame import AgentObservation, Frame, ObjectSet

FORMAT_NAME = "v2x-cosim-frames"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

AGENTS_SCHEMA = pa.schema(
    [
        ("frame_id", pa.int64()),  # unique within the dataset, in build order
        ("source", pa.string()),  # scenario name or OPV2V scenario folder name
        ("seed", pa.int64()),  # null for recorded data
        ("frame_index", pa.int64()),
        ("timestamp", pa.float64()),
        ("agent_id", pa.int64()),
        ("is_ego", pa.bool_()),
        ("is_rsu", pa.bool_()),
        ("lidar_pose", pa.list_(pa.float64(), 16)),  # world <- LiDAR, row-major
        ("vehicle_pose", pa.list_(pa.float64(), 16)),  # null when unknown
        ("speed", pa.float64()),
        ("has_hits", pa.bool_()),  # the objects table carries this agent's hit counts
        ("num_points", pa.int32()),
        ("points", pa.list_(pa.float32())),  # flat x, y, z, intensity in the LiDAR frame
    ]
)
OBJECTS_SCHEMA = pa.schema(
    [
        ("frame_id", pa.int64()),
        ("object_id", pa.int64()),
        ("box", pa.list_(pa.float64(), 7)),  # world frame x, y, z, l, w, h, yaw
        ("category", pa.string()),
        ("hit_agents", pa.list_(pa.int64())),  # empty when the source has no hit counts
        ("hit_counts", pa.list_(pa.int32())),
    ]
)
INDEX_COLUMNS = ["frame_id", "source", "seed", "agent_id", "is_ego", "is_rsu"]


class DatasetFormatError(ValueError):
    """A dataset folder, manifest or shard that does not follow the format; names the file."""


def shard_paths(root: Path, shard: str) -> tuple[Path, Path]:
    """The agents and objects Parquet files of shard ``shard`` (e.g. ``shard-00003``)."""
    return root / f"{shard}.agents.parquet", root / f"{shard}.objects.parquet"


def encode_frame(
    frame: Frame, frame_id: int, source: str, seed: int | None
) -> tuple[pa.Table, dict[str, list[Any]]]:
    """One frame as an agents table (one row per agent) and object column lists."""
    agents = list(frame.agents.values())
    hit_agents = [a.agent_id for a in agents if a.agent_id in frame.objects.hits]
    extra = sorted(set(frame.objects.hits) - set(hit_agents))
    if extra:
        raise ValueError(f"frame {frame.index}: hit counts for {extra}, which are not agents")
    counts = [len(a.points) for a in agents]
    flat = np.concatenate([a.points.reshape(-1) for a in agents]) if agents else np.zeros(0)
    offsets = np.concatenate([[0], np.cumsum(counts) * 4]).astype(np.int32)
    n = len(agents)
    columns = {
        "frame_id": [frame_id] * n,
        "source": [source] * n,
        "seed": [seed] * n,
        "frame_index": [frame.index] * n,
        "timestamp": [float(frame.timestamp)] * n,
        "agent_id": [a.agent_id for a in agents],
        "is_ego": [a.agent_id == frame.ego_id for a in agents],
        "is_rsu": [a.is_rsu for a in agents],
        "lidar_pose": [a.lidar_pose.reshape(-1).tolist() for a in agents],
        "vehicle_pose": [
            None if a.vehicle_pose is None else a.vehicle_pose.reshape(-1).tolist() for a in agents
        ],
        "speed": [float(a.speed) for a in agents],
        "has_hits": [a.agent_id in frame.objects.hits for a in agents],
        "num_points": counts,
    }
    arrays = [pa.array(columns[f.name], f.type) for f in AGENTS_SCHEMA if f.name != "points"]
    points = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.astype(np.float32)))
    table = pa.Table.from_arrays([*arrays, points], schema=AGENTS_SCHEMA)
    objects = frame.objects
    rows = {
        "frame_id": [frame_id] * len(objects),
        "object_id": objects.ids.tolist(),
        "box": objects.boxes.tolist(),
        "category": list(objects.categories),
        "hit_agents": [hit_agents] * len(objects),
        "hit_counts": [[int(objects.hits[a][k]) for a in hit_agents] for k in range(len(objects))],
    }
    return table, rows


def decode_frame(agents: pa.Table, objects: pa.Table, where: str) -> Frame:
    """The Frame stored in one frame's agents rows and objects rows (``where`` names the file)."""
    col = {name: agents.column(name) for name in AGENTS_SCHEMA.names}
    points = col["points"].combine_chunks()
    flat = points.values.to_numpy(zero_copy_only=False)
    offsets = points.offsets.to_numpy()
    num_points = col["num_points"].to_numpy()
    poses = np.asarray(col["lidar_pose"].combine_chunks().values).reshape(-1, 4, 4)
    body = col["vehicle_pose"].to_pylist()
    ids = col["agent_id"].to_pylist()
    out: dict[int, AgentObservation] = {}
    for k, agent_id in enumerate(ids):
        cloud = flat[offsets[k] : offsets[k + 1]]
        if cloud.size != 4 * num_points[k]:
            raise DatasetFormatError(f"{where}: agent {agent_id}: points length != 4 * num_points")
        out[agent_id] = AgentObservation(
            agent_id=agent_id,
            lidar_pose=poses[k],
            points=cloud.reshape(-1, 4),
            speed=float(col["speed"][k].as_py()),
            vehicle_pose=None if body[k] is None else np.reshape(body[k], (4, 4)),
            is_rsu=bool(col["is_rsu"][k].as_py()),
        )
    ego = [a for a, e in zip(ids, col["is_ego"].to_pylist(), strict=True) if e]
    if len(ego) != 1:
        raise DatasetFormatError(f"{where}: frame needs exactly one is_ego row, got {len(ego)}")
    hit_agents = [a for a, h in zip(ids, col["has_hits"].to_pylist(), strict=True) if h]
    m = objects.num_rows
    counts = np.asarray(objects.column("hit_counts").combine_chunks().values, dtype=np.int32)
    if counts.size != m * len(hit_agents):
        raise DatasetFormatError(f"{where}: hit_counts do not match the agents with has_hits")
    counts = counts.reshape(m, len(hit_agents))
    object_set = ObjectSet(
        objects.column("object_id").to_numpy(),
        np.asarray(objects.column("box").combine_chunks().values).reshape(m, 7),
        tuple(objects.column("category").to_pylist()),
        {a: counts[:, k] for k, a in enumerate(hit_agents)},
    )
    timestamp = float(col["timestamp"][0].as_py())
    return Frame(timestamp, int(col["frame_index"][0].as_py()), out, object_set, ego[0])


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The dataset's manifest, checked for the format name and version."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DatasetFormatError(f"{path}: no manifest; is {root} a dataset folder?")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{path}: not valid JSON: {err}") from None
    if manifest.get("format") != FORMAT_NAME:
        raise DatasetFormatError(f"{path}: format {manifest.get('format')!r} is not {FORMAT_NAME}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetFormatError(
            f"{path}: format_version {manifest.get('format_version')!r} is not supported "
            f"(this reader knows version {FORMAT_VERSION})"
        )
    return manifest


def _check_columns(path: Path, schema: pa.Schema) -> None:
    if not path.is_file():
        raise DatasetFormatError(f"{path}: shard file listed in the manifest is missing")
    names = set(pq.read_schema(path).names)
    missing = [name for name in schema.names if name not in names]
    if missing:
        raise DatasetFormatError(f"{path}: missing column(s) {missing}")


class FrameStore:
    """A dataset folder replayed as a FrameSource; frames are read lazily, one row group each.

    Only the small index columns are read up front; a shard's objects table is read (and kept)
    the first time one of its frames is asked for.
    """

    rate_hz: float = 10.0

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self._where: list[tuple[int, int]] = []  # frame -> (shard number, row group)
        self.frame_agents: list[list[tuple[int, bool, bool]]] = []  # (id, is_ego, is_rsu)
        self.frame_sources: list[str] = []
        self.shards = [entry["name"] for entry in self.manifest.get("shards", [])]
        for number, shard in enumerate(self.shards):
            agents_path, objects_path = shard_paths(self.root, shard)
            _check_columns(agents_path, AGENTS_SCHEMA)
            _check_columns(objects_path, OBJECTS_SCHEMA)
            index = pq.read_table(agents_path, columns=INDEX_COLUMNS).to_pydict()
            groups = pq.ParquetFile(agents_path).num_row_groups
            first = len(self._where)
            last_id = None
            for row, frame_id in enumerate(index["frame_id"]):
                if frame_id != last_id:
                    self._where.append((number, len(self._where) - first))
                    self.frame_agents.append([])
                    seed = index["seed"][row]
                    name = index["source"][row]
                    self.frame_sources.append(name if seed is None else f"{name}/{seed}")
                    last_id = frame_id
                self.frame_agents[-1].append(
                    (index["agent_id"][row], index["is_ego"][row], index["is_rsu"][row])
                )
            if len(self._where) - first != groups:
                raise DatasetFormatError(
                    f"{agents_path}: {groups} row groups for {len(self._where) - first} frames "
                    "(the format stores one row group per frame)"
                )
        self._files: dict[tuple[int, int], pq.ParquetFile] = {}
        self._objects: dict[int, tuple[pa.Table, np.ndarray]] = {}

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def num_frames(self) -> int:
        return len(self._where)

    def frame(self, index: int) -> Frame:
        """Stored frame ``index`` (position in the dataset, 0-based)."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"{self.root}: frame {index} outside [0, {self.num_frames})")
        shard, group = self._where[index]
        agents_path, objects_path = shard_paths(self.root, self.shards[shard])
        key = (os.getpid(), shard)  # file handles are per process (DataLoader workers fork)
        if key not in self._files:
            self._files[key] = pq.ParquetFile(agents_path)
        agents = self._files[key].read_row_group(group)
        if shard not in self._objects:
            table = pq.read_table(objects_path)
            self._objects[shard] = (table, table.column("frame_id").to_numpy())
        table, frame_ids = self._objects[shard]
        frame_id = agents.column("frame_id")[0].as_py()
        lo, hi = np.searchsorted(frame_ids, [frame_id, frame_id + 1])
        return decode_frame(agents, table.slice(lo, hi - lo), str(agents_path))

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        for index in range(start, stop):
            yield self.frame(index)


def select_neighbours(
    frame: Frame, ego_id: int, max_neighbours: int, comm_range: float
) -> list[int]:
    """Agents within ``comm_range`` (BEV distance between LiDARs) of the ego, nearest first,
    at most ``max_neighbours``; ties keep the frame's agent order."""
    centre = frame.agent(ego_id).lidar_pose[:2, 3]
    near = []
    for agent_id, agent in frame.agents.items():
        distance = float(np.hypot(*(agent.lidar_pose[:2, 3] - centre)))
        if agent_id != ego_id and distance <= comm_range:
            near.append((distance, agent_id))
    near.sort(key=lambda item: item[0])
    return [agent_id for _, agent_id in near[: max(0, max_neighbours)]]


def sample_from_frame(
    frame: Frame,
    ego_id: int,
    grid: GridSpec,
    max_neighbours: int = 4,
    comm_range: float = 70.0,
    min_points: int = 1,
    source: str = "",
) -> CooperativeSample:
    """The detector's view of ``frame`` with ``ego_id`` as ego (training and simulation alike).

    Neighbours: see :func:`select_neighbours`. Ground truth, in the ego LiDAR frame: objects whose
    centre lies in the grid's x/y range, other than the ego's own vehicle, with at least
    ``min_points`` LiDAR hits summed over the ego and the chosen neighbours (cooperative
    visibility, as OPV2V keeps only objects some CAV sees). When the frame has no hit counts for
    any of those agents (OPV2V data), every object in range is kept.
    """
    neighbours = select_neighbours(frame, ego_id, max_neighbours, comm_range)
    ids, boxes = frame.objects_in(ego_id, exclude_self=True)
    x0, y0, _, x1, y1, _ = grid.point_range
    keep = (boxes[:, 0] >= x0) & (boxes[:, 0] <= x1) & (boxes[:, 1] >= y0) & (boxes[:, 1] <= y1)
    counted = [a for a in (ego_id, *neighbours) if a in frame.objects.hits]
    if counted and min_points > 0:
        sorter = np.argsort(frame.objects.ids)
        rows = sorter[np.searchsorted(frame.objects.ids, ids, sorter=sorter)]
        total = sum(frame.objects.hits[a][rows].astype(np.int64) for a in counted)
        keep &= total >= min_points
    return CooperativeSample(
        ego_points=frame.agent(ego_id).points,
        neighbour_points=tuple(frame.agent(a).points for a in neighbours),
        neighbour_to_ego=np.stack([frame.transform(a, ego_id) for a in neighbours])
        if neighbours
        else np.zeros((0, 4, 4)),
        gt_boxes=boxes[keep],
        ego_id=ego_id,
        neighbour_ids=tuple(neighbours),
        frame_index=frame.index,
        source=source,
        gt_ids=ids[keep],
    )


Augment = Callable[[CooperativeSample, np.random.Generator], CooperativeSample]
#: Diff-KD pairs (:class:`models.pairs.PairMaker`): ``(clean sample, frame, rng, epoch)`` ->
#: the student's corrupted sample carrying the clean one.
PairHook = Callable[[CooperativeSample, Frame, np.random.Generator, int], CooperativeSample]


class CooperativeDataset(torch.utils.data.Dataset):
    """``(frame, ego)`` pairs of a dataset folder as CooperativeSamples.

    ``egos="first"``: each frame's own ego; ``"all"``: every connected vehicle (roadside units
    excepted) takes the ego role in turn. ``pairs`` (Diff-KD training) turns each clean sample
    into a corrupted one that carries the clean view, with a generator seeded by ``(seed,
    epoch, index, 1)``; ``augment(sample, rng)`` then runs with one seeded by ``(seed, epoch,
    index)``, so an item is the same in any worker; call :meth:`set_epoch`.
    """

    def __init__(
        self,
        root: str | Path,
        grid: GridSpec,
        egos: Literal["first", "all"] = "first",
        max_neighbours: int = 4,
        comm_range: float = 70.0,
        min_points: int = 1,
        augment: Augment | None = None,
        seed: int = 0,
        pairs: PairHook | None = None,
    ) -> None:
        if egos not in ("first", "all"):
            raise ValueError(f"egos must be 'first' or 'all', got {egos!r}")
        self.store = FrameStore(root)
        self.grid, self.max_neighbours = grid, max_neighbours
        self.comm_range, self.min_points = comm_range, min_points
        self.augment, self.seed, self.epoch = augment, seed, 0
        self.pairs = pairs
        self.items: list[tuple[int, int]] = [
            (frame, agent_id)
            for frame, agents in enumerate(self.store.frame_agents)
            for agent_id, is_ego, is_rsu in agents
            if (is_ego if egos == "first" else not is_rsu)
        ]
        self._cached: tuple[int, Frame] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation draws of this epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> CooperativeSample:
        frame_number, ego_id = self.items[index]
        if self._cached is None or self._cached[0] != frame_number:
            self._cached = (frame_number, self.store.frame(frame_number))
        sample = sample_from_frame(
            self._cached[1],
            ego_id,
            self.grid,
            self.max_neighbours,
            self.comm_range,
            self.min_points,
            self.store.frame_sources[frame_number],
        )
        if self.pairs is not None:
            pair_rng = np.random.default_rng([self.seed, self.epoch, index, 1])
            sample = self.pairs(sample, self._cached[1], pair_rng, self.epoch)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            sample = self.augment(sample, rng)
        return sample


def collate_samples(samples: list[CooperativeSample]) -> list[CooperativeSample]:
    """Identity collate for a DataLoader: the model batches variable-size clouds itself."""
    return list(samples)
