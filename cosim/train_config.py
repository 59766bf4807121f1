"""The training config: one YAML file per run, validated on load.

Every section is a frozen dataclass; unknown keys, missing required keys and bad values fail
with the key and the file named (``configs/train/*.yaml`` are the examples)::

    model: cpu_max                 # preset name, detector YAML path, or an inline dict
    data: {train: data/train, val: data/val, egos: all}
    optimizer: {name: adamw, lr: 0.002, weight_decay: 0.01}
    schedule: {name: onecycle, warmup_fraction: 0.1}
    epochs: 4
    batch_size: 4
    out: runs/cpu_max

Relative data and output paths are relative to the current directory (where ``cosim train``
runs), so the same file works in any checkout next to its ``data/`` folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.augment import Augmentation
from models.detector_config import DetectorConfig, load_detector_config
from models.distill import DistillWeights
from models.pairs import PairConfig
from models.refiner import MAX_STEPS
from scenarios.safe_yaml import load_yaml_file


class TrainConfigError(ValueError):
    """A training config that does not follow the schema; the message names key and file."""


def _check_keys(cls: type, data: Any, where: str, required: tuple[str, ...] = ()) -> None:
    """Mapping with only ``cls``'s YAML keys (fields not marked ``yaml=False``), all required."""
    if not isinstance(data, dict):
        raise TrainConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls) if f.metadata.get("yaml", True)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TrainConfigError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise TrainConfigError(f"{where}: missing required key(s) {missing}")


def _number(value: Any, where: str, kind: type = float, low: float | None = None) -> Any:
    """``value`` as ``kind`` (int or float), >= ``low`` when given; bools are rejected."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TrainConfigError(f"{where}: expected a number, got {value!r}")
    if kind is int and int(value) != value:
        raise TrainConfigError(f"{where}: expected an integer, got {value!r}")
    out = kind(value)
    if low is not None and out < low:
        raise TrainConfigError(f"{where}: must be >= {low}, got {value!r}")
    return out


def _choice(value: Any, options: tuple[str, ...], where: str) -> str:
    if value not in options:
        raise TrainConfigError(f"{where}: {value!r} is not one of {list(options)}")
    return str(value)


@dataclass(frozen=True)
class DataConfig:
    """Where the shards are and how samples are cut from them (``None``: the model's value)."""

    train: str
    val: str | None = None
    egos: str = "all"
    max_neighbours: int | None = None
    comm_range: float | None = None
    min_points: int = 1
    val_frames: int | None = None  # evaluate on the first N validation frames only

    @classmethod
    def parse(cls, data: Any, where: str) -> DataConfig:
        _check_keys(cls, data, where, ("train",))
        out: dict[str, Any] = {"train": str(data["train"])}
        if data.get("val") is not None:
            out["val"] = str(data["val"])
        if "egos" in data:
            out["egos"] = _choice(data["egos"], ("first", "all"), f"{where}.egos")
        for key, kind, low in (
            ("max_neighbours", int, 0),
            ("comm_range", float, 0.0),
            ("min_points", int, 0),
            ("val_frames", int, 1),
        ):
            if data.get(key) is not None:
                out[key] = _number(data[key], f"{where}.{key}", kind, low)
        return cls(**out)


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW or Adam."""

    name: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.01

    @classmethod
    def parse(cls, data: Any, where: str) -> OptimizerConfig:
        _check_keys(cls, data, where, ("name", "lr"))
        return cls(
            _choice(data["name"], ("adamw", "adam"), f"{where}.name"),
            _number(data["lr"], f"{where}.lr", float, 1e-12),
            _number(data.get("weight_decay", 0.01), f"{where}.weight_decay", float, 0.0),
        )


@dataclass(frozen=True)
class ScheduleConfig:
    """``onecycle`` (warmup then cosine down, torch's OneCycleLR) or ``cosine`` (linear warmup
    then cosine annealing to ``min_lr_ratio * lr``); warmup is a fraction of all steps."""

    name: str = "onecycle"
    warmup_fraction: float = 0.1
    min_lr_ratio: float = 0.01

    @classmethod
    def parse(cls, data: Any, where: str) -> ScheduleConfig:
        _check_keys(cls, data, where, ("name",))
        warmup = _number(data.get("warmup_fraction", 0.1), f"{where}.warmup_fraction", float, 0.0)
        if warmup >= 1.0:
            raise TrainConfigError(f"{where}.warmup_fraction: must be < 1, got {warmup}")
        ratio = _number(data.get("min_lr_ratio", 0.01), f"{where}.min_lr_ratio", float, 0.0)
        return cls(_choice(data["name"], ("onecycle", "cosine"), f"{where}.name"), warmup, ratio)


@dataclass(frozen=True)
class AugmentConfig:
    """Flip probability, rotation range +-``rotation_deg`` and scale range; see Augmentation."""

    flip_prob: float = 0.5
    rotation_deg: float = 45.0
    scale: tuple[float, float] = (0.95, 1.05)

    @classmethod
    def parse(cls, data: Any, where: str) -> AugmentConfig | None:
        if data in (None, False, "off"):
            return None
        _check_keys(cls, data, where)
        flip = _number(data.get("flip_prob", 0.5), f"{where}.flip_prob", float, 0.0)
        rotation = _number(data.get("rotation_deg", 45.0), f"{where}.rotation_deg", float, 0.0)
        scale = data.get("scale", [0.95, 1.05])
        if not isinstance(scale, list | tuple) or len(scale) != 2:
            raise TrainConfigError(f"{where}.scale: expected [low, high], got {scale!r}")
        low, high = (_number(v, f"{where}.scale", float, 1e-6) for v in scale)
        if flip > 1.0 or low > high:
            raise TrainConfigError(f"{where}: need flip_prob <= 1 and scale low <= high")
        return cls(flip, rotation, (low, high))

    def build(self) -> Augmentation:
        """The dataset hook."""
        theta = self.rotation_deg * 3.141592653589793 / 180.0
        return Augmentation(self.flip_prob, (-theta, theta), self.scale)


@dataclass(frozen=True)
class DistillConfig:
    """Diff-KD: the frozen clean ``teacher`` checkpoint (an early-fusion detector; only needed
    to train), the loss ``weights`` and the DDIM ``refine_steps`` of the training forward
    (None: the model's configured K)."""

    teacher: str | None = None
    weights: DistillWeights = field(default_factory=DistillWeights)
    refine_steps: int | None = None

    @classmethod
    def parse(cls, data: Any, where: str) -> DistillConfig:
        _check_keys(cls, data, where)
        weights = data.get("weights") or {}
        _check_keys(DistillWeights, weights, f"{where}.weights")
        try:
            parsed = DistillWeights(**weights)
        except ValueError as err:
            raise TrainConfigError(f"{where}: {err}") from err
        steps = data.get("refine_steps")
        if steps is not None:
            steps = _number(steps, f"{where}.refine_steps", int, 0)
            if steps > MAX_STEPS:
                raise TrainConfigError(f"{where}.refine_steps: must be <= {MAX_STEPS}, got {steps}")
        teacher = data.get("teacher")
        return cls(None if teacher is None else str(teacher), parsed, steps)


def _pairs(data: Any, where: str) -> PairConfig | None:
    if data in (None, False, "off"):
        return None
    try:
        return PairConfig.from_dict(data, where)
    except ValueError as err:
        raise TrainConfigError(str(err)) from err


@dataclass(frozen=True)
class TrainConfig:
    """One training run: model, data, optimisation, schedule and bookkeeping."""

    model: DetectorConfig
    data: DataConfig
    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    epochs: int
    batch_size: int
    out: str
    grad_clip: float | None = 10.0
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    seed: int = 0
    threads: int = 2
    eval_every: int = 1
    steps_per_epoch: int | None = None  # cap (a partial pass over the shuffled samples)
    init_from: str | None = None  # warm start: weights of a checkpoint with the same topology
    # Parameter-name prefixes NOT taken from init_from (they keep their fresh initialisation),
    # e.g. [anchor_head.] to warm-start the feature net under a new head; the rest load strictly.
    init_skip: tuple[str, ...] = ()
    corrupt: PairConfig | None = None  # Diff-KD pairs: corrupt the student's points per sample
    distill: DistillConfig | None = None  # Diff-KD teacher and loss weights
    source: str = field(default="", metadata={"yaml": False})  # the file it was read from
    raw: dict[str, Any] = field(default_factory=dict, compare=False, metadata={"yaml": False})

    @property
    def max_neighbours(self) -> int:
        """Neighbours per training sample: the data section's, else the model's."""
        if self.data.max_neighbours is not None:
            return self.data.max_neighbours
        return self.model.max_neighbours

    @property
    def comm_range(self) -> float:
        return self.data.comm_range if self.data.comm_range is not None else self.model.comm_range

    @classmethod
    def from_dict(cls, data: Any, where: str = "train config") -> TrainConfig:
        """Validate a mapping (as read from YAML)."""
        required = ("model", "data", "optimizer", "schedule", "epochs", "batch_size", "out")
        _check_keys(cls, data, where, required)
        try:
            model = _model(data["model"], f"{where}: model")
        except (ValueError, FileNotFoundError) as err:
            raise TrainConfigError(str(err) if where in str(err) else f"{where}: {err}") from err
        clip = data.get("grad_clip", 10.0)
        return cls(
            model=model,
            data=DataConfig.parse(data["data"], f"{where}: data"),
            optimizer=OptimizerConfig.parse(data["optimizer"], f"{where}: optimizer"),
            schedule=ScheduleConfig.parse(data["schedule"], f"{where}: schedule"),
            epochs=_number(data["epochs"], f"{where}: epochs", int, 1),
            batch_size=_number(data["batch_size"], f"{where}: batch_size", int, 1),
            out=str(data["out"]),
            grad_clip=None if clip is None else _number(clip, f"{where}: grad_clip", float, 1e-9),
            augment=AugmentConfig.parse(data.get("augment", {}), f"{where}: augment"),
            seed=_number(data.get("seed", 0), f"{where}: seed", int, 0),
            threads=_number(data.get("threads", 2), f"{where}: threads", int, 1),
            eval_every=_number(data.get("eval_every", 1), f"{where}: eval_every", int, 1),
            steps_per_epoch=None
            if data.get("steps_per_epoch") is None
            else _number(data["steps_per_epoch"], f"{where}: steps_per_epoch", int, 1),
            init_from=None if data.get("init_from") is None else str(data["init_from"]),
            init_skip=_prefixes(data.get("init_skip"), f"{where}: init_skip"),
            corrupt=_pairs(data.get("corrupt"), f"{where}: corrupt"),
            distill=None
            if data.get("distill") is None
            else DistillConfig.parse(data["distill"], f"{where}: distill"),
            source=where,
            raw=dict(data),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read and validate a YAML file; every error names the file."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"training config not found: {p}")
        try:
            data = load_yaml_file(p)  # aliases refused: no alias bombs
        except ValueError as err:
            raise TrainConfigError(str(err)) from err
        return cls.from_dict(data, str(p))

    def with_overrides(self, **changes: Any) -> TrainConfig:
        """A copy with some fields replaced (CLI flags); ``data_*`` keys go to the data section."""
        data_changes = {k[5:]: v for k, v in changes.items() if k.startswith("data_")}
        top = {k: v for k, v in changes.items() if not k.startswith("data_")}
        raw = dict(self.raw)
        if data_changes:
            raw["data"] = {**dict(raw.get("data", {})), **data_changes}
        raw.update(top)
        return dataclasses.replace(
            self, data=dataclasses.replace(self.data, **data_changes), raw=raw, **top
        )


def _prefixes(value: Any, where: str) -> tuple[str, ...]:
    """A list of non-empty strings (or nothing) as a tuple."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise TrainConfigError(f"{where}: expected a list of parameter-name prefixes, got {value}")
    return tuple(value)


def _model(value: Any, where: str) -> DetectorConfig:
    """A preset name, a detector YAML path or an inline detector dict."""
    if isinstance(value, str):
        return load_detector_config(value)
    if isinstance(value, dict):
        return DetectorConfig.from_dict(value, where)
    raise TrainConfigError(f"{where}: expected a preset name, a path or a mapping, got {value!r}")
