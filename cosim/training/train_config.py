"""The training config: one YAML file per run, validated on load.

Every section is a frozen pydantic dataclass; unknown keys, missing required keys and bad values
fail naming the file, the key path and what is allowed (``configs/train/*.yaml`` are examples)::

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
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field
from pydantic.json_schema import SkipJsonSchema

from configkit import Float, Int, Section, Str, config_dataclass, validate
from models.augment import Augmentation
from models.detector_config import DetectorConfig, load_detector_config
from models.distill import DistillRegion, DistillWeights, ReliabilityTarget, TeacherInput
from models.pairs import PairConfig
from models.refiner import MAX_STEPS
from scenarios.safe_yaml import load_yaml_file

Scale = Annotated[Float, Field(ge=1e-6)]


class TrainConfigError(ValueError):
    """A training config that does not follow the schema; the message names key and file."""


def _off(value: Any) -> Any:
    """``null``, ``false`` or ``off`` switch an optional section off."""
    return None if value is None or value is False or value == "off" else value


def _list_or_null(value: Any) -> Any:
    """``null`` for a list means an empty one."""
    return () if value is None else value


def _model(value: Any) -> Any:
    """A preset name or a detector YAML path -> its DetectorConfig; a mapping stays inline."""
    if isinstance(value, str):
        try:
            return load_detector_config(value)
        except FileNotFoundError as err:
            raise ValueError(str(err)) from None
    return value


@config_dataclass
class DataConfig:
    """Where the shards are and how samples are cut from them (``None``: the model's value)."""

    train: Str
    val: Str | None = None
    egos: Literal["first", "all"] = "all"
    max_neighbours: Int | None = Field(None, ge=0)
    comm_range: Float | None = Field(None, ge=0.0)
    min_points: Int = Field(1, ge=0)
    val_frames: Int | None = Field(None, ge=1)  # evaluate on the first N validation frames only


@config_dataclass
class OptimizerConfig:
    """AdamW or Adam."""

    name: Literal["adamw", "adam"]
    lr: Annotated[Float, Field(gt=0.0)]
    weight_decay: Float = Field(0.01, ge=0.0)


@config_dataclass
class ScheduleConfig:
    """``onecycle`` (warmup then cosine down, torch's OneCycleLR) or ``cosine`` (linear warmup
    then cosine annealing to ``min_lr_ratio * lr``); warmup is a fraction of all steps."""

    name: Literal["onecycle", "cosine"]
    warmup_fraction: Float = Field(0.1, ge=0.0, lt=1.0)
    min_lr_ratio: Float = Field(0.01, ge=0.0)


@config_dataclass
class AugmentConfig:
    """Flip probability, rotation range +-``rotation_deg`` and scale range; see Augmentation."""

    flip_prob: Float = Field(0.5, ge=0.0, le=1.0)
    rotation_deg: Float = Field(45.0, ge=0.0)
    scale: tuple[Scale, Scale] = (0.95, 1.05)

    def __post_init__(self) -> None:
        if self.scale[0] > self.scale[1]:
            raise ValueError(f"scale: need low <= high, got {list(self.scale)}")

    def build(self) -> Augmentation:
        """The dataset hook."""
        theta = self.rotation_deg * 3.141592653589793 / 180.0
        return Augmentation(self.flip_prob, (-theta, theta), self.scale)


@config_dataclass
class DistillConfig:
    """Diff-KD: the frozen clean ``teacher`` checkpoint (an early-fusion detector; only needed
    to train), the loss ``weights`` and the DDIM ``refine_steps`` of the training forward
    (None: the model's configured K)."""

    teacher: Str | None = None
    weights: Section[DistillWeights] = field(default_factory=DistillWeights)
    refine_steps: Int | None = Field(None, ge=0, le=MAX_STEPS)
    # Cells where the feature and diffusion losses compare the student with the teacher:
    # "ego_view" (cells with the ego's own clean or corrupted points: what its map can repair)
    # or "map" (every cell, including what only a neighbour sees).
    region: DistillRegion = "ego_view"
    # What the teacher sees of the clean sample: "all_agents" (global context: merged clouds,
    # or a feature-fusion teacher's fused map) or "ego" (the ego's clean points alone: with
    # the frozen student as teacher, the refiner learns to undo the corruption).
    teacher_input: TeacherInput = "all_agents"
    # What AGF's trust (weights.reliability) learns: "cleanliness" (each neighbour's corruption
    # severity) or "harm" (the frame's AP@0.5 with the neighbour minus without it, through a
    # sigmoid of this temperature: models.harm; 1 + K extra head passes and decodes a sample).
    reliability_target: ReliabilityTarget = "cleanliness"
    harm_temperature: Float = Field(0.01, gt=0.0)


@config_dataclass
class TrainConfig:
    """One training run: model, data, optimisation, schedule and bookkeeping."""

    model: Annotated[
        DetectorConfig, BeforeValidator(_model, json_schema_input_type=DetectorConfig | str)
    ]
    data: DataConfig
    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    epochs: Annotated[Int, Field(ge=1)]
    batch_size: Annotated[Int, Field(ge=1)]
    out: Str
    grad_clip: Float | None = Field(10.0, gt=0.0)
    augment: Annotated[AugmentConfig | None, BeforeValidator(_off)] = field(
        default_factory=AugmentConfig
    )
    seed: Int = Field(0, ge=0)
    threads: Int = Field(2, ge=1)
    eval_every: Int = Field(1, ge=1)
    # cap (a partial pass over the shuffled samples)
    steps_per_epoch: Int | None = Field(None, ge=1)
    init_from: Str | None = None  # warm start: weights of a checkpoint with the same topology
    # Parameter-name prefixes NOT taken from init_from (they keep their fresh initialisation),
    # e.g. [anchor_head.] to warm-start the feature net under a new head; the rest load strictly.
    init_skip: Annotated[
        tuple[Annotated[Str, Field(min_length=1)], ...], BeforeValidator(_list_or_null)
    ] = ()
    # Parameter-name prefixes that train (None: all). The rest keep their (init_from) weights
    # and their BatchNorm statistics, e.g. [refiner.] trains a PKD refiner on a frozen student.
    train_only: (
        Annotated[tuple[Annotated[Str, Field(min_length=1)], ...], Field(min_length=1)] | None
    ) = None
    # Diff-KD pairs: corrupt the student's points per sample
    corrupt: Annotated[PairConfig | None, BeforeValidator(_off)] = None
    distill: DistillConfig | None = None  # Diff-KD teacher and loss weights
    # Not keys of a file (from_dict refuses them): the file it was read from, and its mapping.
    source: SkipJsonSchema[str] = field(default="", metadata={"yaml": False})
    raw: SkipJsonSchema[dict[str, Any]] = field(
        default_factory=dict, compare=False, metadata={"yaml": False}
    )

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
        """Validate a mapping (as read from YAML); errors name ``where``, key path and what is
        allowed."""
        if isinstance(data, dict):
            internal = sorted(
                f.name
                for f in dataclasses.fields(cls)
                if not f.metadata.get("yaml", True) and f.name in data
            )
            if internal:
                raise TrainConfigError(f"{where}: unknown key(s) {internal}")
            data = {**data, "source": where, "raw": dict(data)}
        return validate(cls, data, where, TrainConfigError)

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
        try:
            return dataclasses.replace(
                self, data=dataclasses.replace(self.data, **data_changes), raw=raw, **top
            )
        except ValueError as err:
            raise TrainConfigError(f"{self.source} (overridden): {err}") from None
