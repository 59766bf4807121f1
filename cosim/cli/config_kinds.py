"""The config kinds a user writes, their schemas and loaders, and which kind a file is.

One registry (``KINDS``) for ``cosim config schema`` / ``check``: each kind names the pydantic
class its files validate against (the file's own layout, e.g. a channel preset's flat keys)
and the loader the rest of the code uses, so ``check`` runs exactly what a run would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from channel import CodecConfig
from channel.presets import ChannelConfig, ChannelFile
from configkit import json_schema
from cosim.sim.run_config import RunConfig
from cosim.training.train_config import TrainConfig
from models.detector_config import DetectorConfig
from scenarios.safe_yaml import load_yaml_file, short_repr
from scenarios.scenario_file import ScenarioFile, load_scenario


@dataclass(frozen=True)
class Kind:
    """One config kind: its schema class, what it is, where its shipped files live, and the
    loader that validates a file of it (raising ValueError naming file, key path, allowed)."""

    schema: type
    about: str
    folders: tuple[str, ...]
    load: Callable[[Path], Any]


def _mapping(path: Path) -> dict[str, Any]:
    data = load_yaml_file(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must be a mapping, got {short_repr(data)}")
    return data


#: Every kind, most specific first (the order breaks ties when guessing a kind by its keys).
KINDS: dict[str, Kind] = {
    "scenario": Kind(
        ScenarioFile,
        "scenario definition (map, traffic, LiDAR)",
        ("scenarios/builtin",),
        load_scenario,
    ),
    "train": Kind(TrainConfig, "training run", ("configs/train",), TrainConfig.from_yaml),
    "model": Kind(
        DetectorConfig,
        "detector / model (grid, features, head, fusion, refiner)",
        ("models/configs",),
        DetectorConfig.from_yaml,
    ),
    "channel": Kind(
        ChannelFile,
        "channel preset (range, loss, latency, medium, pose error)",
        ("channel/presets",),
        lambda p: ChannelConfig.from_dict(_mapping(p), str(p)),
    ),
    "codec": Kind(
        CodecConfig,
        "feature codec (dtype, sparsity, zstd level)",
        (),
        lambda p: CodecConfig.from_dict(_mapping(p), str(p)),
    ),
    "run": Kind(
        RunConfig, "simulation run (cosim run --config)", ("configs/run",), RunConfig.from_yaml
    ),
}


def schema(kind: str) -> dict[str, Any]:
    """The JSON schema of ``kind`` (ValueError for an unknown kind)."""
    return json_schema(_kind(kind).schema)


def _kind(name: str) -> Kind:
    if name not in KINDS:
        raise ValueError(f"unknown config kind {name!r}; kinds are {list(KINDS)}")
    return KINDS[name]


def _keys(kind: Kind) -> set[str]:
    return {f.name for f in fields(kind.schema) if f.metadata.get("yaml", True)}


def detect_kind(path: Path) -> str:
    """The kind of the file at ``path``: by the folder it is in (the shipped layout), else by
    its keys (the kind that knows most of them; the smaller kind on a tie)."""
    text = Path(path).resolve().as_posix()
    for name, kind in KINDS.items():
        if any(f"/{folder}/" in text for folder in kind.folders):
            return name
    keys = set(_mapping(Path(path)))
    scores = {name: (len(keys & _keys(kind)), -len(_keys(kind))) for name, kind in KINDS.items()}
    best = max(scores, key=lambda name: scores[name])
    if scores[best][0] == 0:
        raise ValueError(
            f"{path}: cannot tell which config kind this is (keys "
            f"{sorted(map(str, keys))}); pass --kind, one of {list(KINDS)}"
        )
    return best


def check(path: Path, kind: str | None = None) -> str:
    """Validate the file at ``path`` as ``kind`` (detected when None); returns the kind."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    name = kind or detect_kind(p)
    _kind(name).load(p)
    return name
