"""Build a training dataset once: seeded synthetic (or OPV2V) frames to Parquet shards.

Training reads the shards (``models.dataset``) and never re-simulates. A build covers one or
more scenarios times one or more seeds; a held-out test split is a separate build from other
seeds, e.g. ``--seeds 0,1,2`` for train and ``--seeds 100,101`` for test. The stored frames are
grid-independent: the BEV grid, neighbour count and visibility rule apply at read time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.dataset import (
    AGENTS_SCHEMA,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    OBJECTS_SCHEMA,
    FrameStore,
    encode_frame,
    shard_paths,
)
from scenarios.frame import Frame
from scenarios.lidar_config import LidarConfig
from scenarios.opv2v import OPV2VScenario, list_scenarios
from scenarios.scenario_file import BUILTIN_SCENARIOS, load_scenario
from scenarios.source import FrameSource
from scenarios.synthetic import SyntheticSource

Progress = Callable[[int, int], None]
_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": ["source", "category"],
    # Splitting float bytes into streams lets zstd find the repeated exponents: ~30% smaller.
    "use_byte_stream_split": ["points.list.element", "box.list.element"],
}


@dataclass(frozen=True)
class SourceJob:
    """One source to store: a synthetic scenario with one seed, or one OPV2V scenario folder."""

    spec: str
    kind: str  # "synthetic" | "opv2v"
    seed: int | None
    source: FrameSource

    def indices(self, frames: int | None, every: int) -> range:
        stop = self.source.num_frames if frames is None else min(frames, self.source.num_frames)
        return range(0, stop, every)


def _jobs(
    scenarios: Sequence[str | Path],
    frames: int | None,
    seeds: Sequence[int],
    num_cavs: int | None,
) -> Iterator[SourceJob]:
    for spec in scenarios:
        text, path = str(spec), Path(spec)
        if text in BUILTIN_SCENARIOS or (path.suffix in {".yaml", ".yml"} and path.is_file()):
            for seed in seeds:
                source = SyntheticSource.from_scenario(
                    text if text in BUILTIN_SCENARIOS else path,
                    num_cavs=num_cavs,
                    num_frames=frames,
                    seed=int(seed),
                )
                yield SourceJob(text, "synthetic", int(seed), source)
        elif path.is_dir():
            if num_cavs is not None:
                raise ValueError(f"{path}: --agents applies to synthetic scenarios only")
            folders = (
                [path]
                if any(c.name.lstrip("-").isdigit() for c in path.iterdir() if c.is_dir())
                else list_scenarios(path)
            )
            for folder in folders:
                yield SourceJob(str(folder), "opv2v", None, OPV2VScenario(folder))
        else:
            raise FileNotFoundError(
                f"{text!r} is neither a built-in scenario ({', '.join(sorted(BUILTIN_SCENARIOS))}),"
                " a scenario YAML file, nor an OPV2V folder"
            )


class _ShardWriter:
    """Appends frames to the current shard (one row group per frame); rolls over when full."""

    def __init__(self, root: Path, frames_per_shard: int) -> None:
        self.root, self.frames_per_shard = root, frames_per_shard
        self.shards: list[dict[str, Any]] = []
        self._writer: pq.ParquetWriter | None = None
        self._objects: dict[str, list[Any]] = {}

    def add(self, frame: Frame, frame_id: int, source: str, seed: int | None) -> None:
        if self._writer is None:
            name = f"shard-{len(self.shards):05d}"
            agents_path, _ = shard_paths(self.root, name)
            self._writer = pq.ParquetWriter(agents_path, AGENTS_SCHEMA, **_WRITE_OPTIONS)
            self._objects = {name: [] for name in OBJECTS_SCHEMA.names}
            self.shards.append(
                {
                    "name": name,
                    "frames": 0,
                    "first_frame_id": frame_id,
                    "agent_rows": 0,
                    "object_rows": 0,
                }
            )
        agents, objects = encode_frame(frame, frame_id, source, seed)
        self._writer.write_table(agents)
        for key, values in objects.items():
            self._objects[key].extend(values)
        entry = self.shards[-1]
        entry["frames"] += 1
        entry["agent_rows"] += agents.num_rows
        entry["object_rows"] += len(objects["object_id"])
        if entry["frames"] >= self.frames_per_shard:
            self.close()

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        entry = self.shards[-1]
        agents_path, objects_path = shard_paths(self.root, entry["name"])
        table = pa.Table.from_pydict(self._objects, schema=OBJECTS_SCHEMA)
        pq.write_table(table, objects_path, **_WRITE_OPTIONS)
        entry["bytes"] = agents_path.stat().st_size + objects_path.stat().st_size


def build_dataset(
    scenario: str | Path | Sequence[str | Path],
    frames: int | None,
    out_dir: str | Path,
    seeds: Sequence[int] = (0,),
    num_cavs: int | None = None,
    every: int = 1,
    progress: Progress | None = None,
    frames_per_shard: int = 200,
    command: str | None = None,
) -> dict[str, Any]:
    """Store frames ``0, every, 2*every, ... < frames`` of each scenario x seed; return manifest.

    ``scenario``: built-in names, scenario YAML files and OPV2V folders (a scenario folder or a
    split folder of scenarios; seeds do not apply, ``frames`` caps the frames read, None reads
    all). ``out_dir`` must be new or empty. ``progress(done, total)`` after each stored frame.
    The same arguments give byte-identical shards.
    """
    specs = [scenario] if isinstance(scenario, str | Path) else list(scenario)
    if not specs:
        raise ValueError("build_dataset: no scenario given")
    if every < 1 or frames_per_shard < 1 or (frames is not None and frames < 1):
        raise ValueError(
            f"build_dataset: frames ({frames}), every ({every}) and "
            f"frames_per_shard ({frames_per_shard}) must be >= 1"
        )
    if not seeds:
        raise ValueError("build_dataset: no seed given")
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root}: output folder is not empty")
    jobs = list(_jobs(specs, frames, seeds, num_cavs))
    total = sum(len(job.indices(frames, every)) for job in jobs)
    root.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(root, frames_per_shard)
    sources, frame_id = [], 0
    for job in jobs:
        indices = job.indices(frames, every)
        entry = {
            "spec": job.spec,
            "kind": job.kind,
            "source": job.source.name,
            "seed": job.seed,
            "first_frame_id": frame_id,
            "frames": len(indices),
        }
        for index in indices:
            frame = job.source.frame(index)
            entry.setdefault("agents", list(frame.agent_ids))
            writer.add(frame, frame_id, job.source.name, job.seed)
            frame_id += 1
            if progress is not None:
                progress(frame_id, total)
        sources.append(entry)
    writer.close()
    call = command or (
        f"build_dataset(scenario={[str(s) for s in specs]!r}, frames={frames}, "
        f"seeds={list(seeds)}, num_cavs={num_cavs}, every={every})"
    )
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "grid_independent": True,
        "command": call,
        "scenarios": sorted({s["source"] for s in sources}),
        "seeds": sorted({s["seed"] for s in sources if s["seed"] is not None}),
        "num_frames": frame_id,
        "every": every,
        "num_cavs": num_cavs,
        "frames_per_shard": frames_per_shard,
        "sources": sources,
        "shards": writer.shards,
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"min": 0.0, "mean": 0.0, "max": 0.0}
    return {"min": float(values.min()), "mean": float(values.mean()), "max": float(values.max())}


def dataset_info(root: str | Path) -> dict[str, Any]:
    """Counts of a dataset folder: frames, agents, points per agent, objects per frame, bytes."""
    store = FrameStore(root)
    points, objects = [], []
    for shard in store.shards:
        agents_path, objects_path = shard_paths(store.root, shard)
        points.append(pq.read_table(agents_path, columns=["num_points"])["num_points"].to_numpy())
        ids = pq.read_table(objects_path, columns=["frame_id"])["frame_id"].to_numpy()
        first = store.manifest["shards"][len(objects)]["first_frame_id"]
        frames = store.manifest["shards"][len(objects)]["frames"]
        objects.append(np.bincount(ids - first, minlength=frames))
    return {
        "root": str(store.root),
        "command": store.manifest.get("command", ""),
        "scenarios": store.manifest.get("scenarios", []),
        "seeds": store.manifest.get("seeds", []),
        "frames": store.num_frames,
        "shards": len(store.shards),
        "agent_rows": int(sum(len(a) for a in store.frame_agents)),
        "points_per_agent": _stats(np.concatenate(points or [np.zeros(0)])),
        "objects_per_frame": _stats(np.concatenate(objects or [np.zeros(0)])),
        "bytes": int(sum(p.stat().st_size for p in store.root.glob("*.parquet"))),
    }


def source_lidars(store: FrameStore) -> dict[str, LidarConfig]:
    """Each synthetic source's LiDAR (from its scenario file), for the corruption context;
    sources without one (OPV2V, a moved scenario file) get the default LidarConfig."""
    out: dict[str, LidarConfig] = {}
    for entry in store.manifest.get("sources", []):
        key = entry["source"] if entry.get("seed") is None else f"{entry['source']}/{entry['seed']}"
        try:
            out[key] = (
                load_scenario(entry["spec"]).lidar
                if entry["kind"] == "synthetic"
                else (LidarConfig())
            )
        except (OSError, ValueError, KeyError):
            out[key] = LidarConfig()
    return out
