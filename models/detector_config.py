"""The cooperative detector's config: grid, feature net, head and fusion, validated on load.

A config reads as the model's topology in a few lines of YAML (``models/configs/*.yaml``)::

    name: cpu_max
    grid: cpu                 # a GRID_PRESETS name, or {point_range, voxel_size, feature_stride}
    features: cpu             # a FEATURE_PRESETS name, or a FeatureConfig dict (see below)
    head: {score_threshold: 0.2, nms_iou: 0.15}
    fusion: max               # none | late | early | any key of models.fusion.FUSION_STRATEGIES
    fusion_options: {}        # the strategy's hyperparameters (agf: models.fusion.AGFOptions)
    refiner: null             # PKD diffusion refiner (models.refiner.RefinerConfig), or null
    fuse_at: encoder          # encoder (BEV pseudo-image, before the 2D backbone) | backbone
    message_range: null       # [x_min, y_min, x_max, y_max] m a sender encodes and sends
                              # (its own frame; null: the grid's own x/y range)
    max_neighbours: 4
    comm_range: 70.0
    ego_clearance: 1.5        # m: detections centred this close to the ego LiDAR are the ego

``features`` as a dict may name a ``preset`` to start from; any section it also gives
(``encoder``, ``voxelize``, ``pillar``, ``sparse_voxel``, ``backbone``) replaces that preset's
section whole (no deep merge), so ``{preset: cpu, encoder: sparse_voxel}`` is the CPU sizes with
the sparse-voxel encoder. Unknown keys anywhere fail with the key, the section and the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BeforeValidator, Field

from configkit import Float, Int, Section, Str, config_dataclass, validate
from models.encoders.feature_net import CPU_FEATURES, FEATURE_PRESETS, FeatureConfig
from models.fusion import FUSION_STRATEGIES, fusion_options
from models.grid import CPU_GRID, GRID_PRESETS, GridSpec
from models.head import HeadConfig
from models.refiner import RefinerConfig
from scenarios.safe_yaml import load_yaml_file

# Fusions that are not feature-fusion strategies: boxes merged by NMS, points merged first.
NON_FEATURE_FUSIONS = ("late", "early")
# Where intermediate fusion happens: on the encoder's BEV pseudo-image (pillar / height-compressed
# voxel features at voxel resolution, F-Cooper's voxel-feature fusion) so the 2D backbone and head
# run once on the fused map, or on the backbone's output (F-Cooper's spatial-feature fusion,
# AttFuse-style), so only the head sees the fused map.
FUSE_POINTS = ("encoder", "backbone")


GridPresetName = Literal[tuple(GRID_PRESETS)]  # type: ignore[valid-type]
FeaturePresetName = Literal[tuple(FEATURE_PRESETS)]  # type: ignore[valid-type]


def fusion_names() -> list[str]:
    """Every accepted ``fusion`` value; new strategies (AGF) join through FUSION_STRATEGIES."""
    return sorted({*NON_FEATURE_FUSIONS, *FUSION_STRATEGIES})


def _plain(value: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python numbers, recursively: YAML- and
    ``torch.load(weights_only=True)``-safe."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _grid_preset(value: Any) -> Any:
    """A ``GRID_PRESETS`` name -> its GridSpec; anything else is validated as a GridSpec."""
    if isinstance(value, str):
        if value not in GRID_PRESETS:
            raise ValueError(f"unknown grid preset {value!r}; known {sorted(GRID_PRESETS)}")
        return GRID_PRESETS[value]
    return value


def _feature_preset(value: Any) -> Any:
    """A ``FEATURE_PRESETS`` name -> its FeatureConfig; a mapping naming a ``preset`` -> that
    preset's sections with the mapping's sections replacing them whole (no deep merge)."""
    if isinstance(value, str):
        if value not in FEATURE_PRESETS:
            raise ValueError(f"unknown feature preset {value!r}; known {sorted(FEATURE_PRESETS)}")
        return FEATURE_PRESETS[value][1]
    if isinstance(value, dict) and "preset" in value:
        data = dict(value)
        base = _feature_preset(str(data.pop("preset")))
        return {**base.to_dict(), **data}
    return value


#: Every accepted ``fusion`` value; new strategies (AGF) join through FUSION_STRATEGIES.
FusionName = Literal[tuple(fusion_names())]  # type: ignore[valid-type]
FusePoint = Literal[FUSE_POINTS]  # type: ignore[valid-type]
GridField = Annotated[
    GridSpec, BeforeValidator(_grid_preset, json_schema_input_type=GridSpec | GridPresetName)
]
FeaturesField = Annotated[
    FeatureConfig,
    BeforeValidator(_feature_preset, json_schema_input_type=FeatureConfig | FeaturePresetName),
]


@config_dataclass
class DetectorConfig:
    """What :class:`~models.detector.CooperativeDetector` is built from.

    ``grid`` and ``features`` also accept a preset name (resolved on construction);
    ``max_neighbours`` (K) caps the neighbours fused per ego, nearest first; neighbours farther
    than ``comm_range`` metres (planar) from the ego are ignored. ``fuse_at`` (one of
    ``FUSE_POINTS``) is where the map a vehicle sends is taken and fused; every other stage is
    the same. ``ego_clearance`` (metres, 0 disables): a detection whose centre is that close
    (planar) to the ego LiDAR is the ego vehicle itself, seen by its neighbours, and is dropped;
    no other car's centre can be there without overlapping the ego. ``message_range``
    ``[x_min, y_min, x_max, y_max]`` (metres, the sender's LiDAR frame) is the window a vehicle
    encodes and sends, so a neighbour's map reaches the part of the ego's grid its LiDAR sees
    (None: the grid's own x/y range, as before); it contains the grid, each edge a whole number
    of backbone strides from the grid's, and only feature fusion sends maps.
    """

    name: Str = Field("cpu_max", min_length=1)
    grid: GridField = CPU_GRID
    features: FeaturesField = Field(
        CPU_FEATURES,
        description=(
            "a FEATURE_PRESETS name, a FeatureConfig mapping, or a mapping with 'preset' whose "
            "other sections replace that preset's whole"
        ),
    )
    head: Section[HeadConfig] = field(default_factory=HeadConfig)
    fusion: FusionName = "max"
    fuse_at: FusePoint = "backbone"
    max_neighbours: Int = Field(4, ge=0)
    comm_range: Float = Field(70.0, gt=0.0)
    ego_clearance: Float = Field(1.5, ge=0.0, lt=10.0)
    fusion_options: Section[dict[Str, Any]] = field(default_factory=dict)
    refiner: RefinerConfig | None = None
    message_range: tuple[Float, Float, Float, Float] | None = None

    def __post_init__(self) -> None:
        if self.is_feature_fusion:
            fusion_options(self.fusion, self.fusion_options, "fusion_options")
        elif self.fusion_options:
            raise ValueError(f"fusion {self.fusion!r} takes no fusion_options")
        backbone = self.features.backbone
        if backbone.output_stride != self.grid.feature_stride:
            raise ValueError(
                f"backbone output stride {backbone.output_stride:g} != grid "
                f"feature_stride {self.grid.feature_stride}"
            )
        m = backbone.input_multiple
        if self.grid.ny % m or self.grid.nx % m:
            raise ValueError(
                f"grid of {self.grid.ny} x {self.grid.nx} voxels does not divide by the "
                f"backbone's total stride {m}"
            )
        if self.message_range is not None:
            _check_message_range(self, "message_range")

    @property
    def message_window(self) -> GridSpec:
        """The grid a vehicle encodes its points on: ``grid`` over ``message_range``."""
        if self.message_range is None:
            return self.grid
        x0, y0, x1, y1 = self.message_range
        z0, z1 = self.grid.point_range[2], self.grid.point_range[5]
        return dataclasses.replace(self.grid, point_range=(x0, y0, z0, x1, y1, z1))

    @property
    def is_feature_fusion(self) -> bool:
        """True for intermediate fusion (max, attention, AGF...): neighbours send features."""
        return self.fusion not in NON_FEATURE_FUSIONS and self.fusion != "none"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, numbers, strings); ``from_dict`` of it gives an equal config."""
        return _plain(
            {
                "name": self.name,
                "grid": self.grid.to_dict(),
                "features": self.features.to_dict(),
                "head": self.head.to_dict(),
                "fusion": self.fusion,
                "fuse_at": self.fuse_at,
                "max_neighbours": self.max_neighbours,
                "comm_range": self.comm_range,
                "ego_clearance": self.ego_clearance,
                "fusion_options": dict(self.fusion_options),
                "refiner": None if self.refiner is None else self.refiner.to_dict(),
                "message_range": self.message_range,
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "detector") -> DetectorConfig:
        """Validate a mapping; a bad key or value raises ValueError naming ``where`` (the file),
        the key path and what is allowed."""
        return validate(cls, data, where)

    @classmethod
    def from_yaml(cls, path: str | Path) -> DetectorConfig:
        """Read and validate one YAML file; every error names the file."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"detector config not found: {p}")
        return cls.from_dict(load_yaml_file(p), str(p))  # aliases refused: no alias bombs

    def to_yaml(self, path: str | Path) -> None:
        """Write the config as YAML (what :meth:`from_yaml` reads back)."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def parse_message_range(text: str) -> tuple[float, float, float, float]:
    """``"x_min,y_min,x_max,y_max"`` (metres) -> a ``message_range`` (checked by the config)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError as err:
        raise ValueError(f"message_range {text!r}: expected x_min,y_min,x_max,y_max") from err
    if len(values) != 4:
        raise ValueError(f"message_range {text!r}: expected x_min,y_min,x_max,y_max")
    return values  # type: ignore[return-value]


def _check_message_range(config: DetectorConfig, where: str) -> None:
    """Raise ValueError unless ``config.message_range`` contains the grid's x/y range, each
    edge a whole number of backbone strides from the grid's, and the fusion sends maps."""
    x0, y0, x1, y1 = config.message_range or (0.0, 0.0, 0.0, 0.0)
    if not config.is_feature_fusion:
        raise ValueError(
            f"{where}: only feature fusion sends maps; fusion {config.fusion!r} needs null"
        )
    gx0, gy0, _, gx1, gy1, _ = config.grid.point_range
    if x0 > gx0 or y0 > gy0 or x1 < gx1 or y1 < gy1:
        raise ValueError(
            f"{where}: {[x0, y0, x1, y1]} must contain the grid's x/y range {[gx0, gy0, gx1, gy1]}"
        )
    step = config.grid.voxel_size[0] * config.features.backbone.input_multiple
    for edge, grid_edge in zip((x0, y0, x1, y1), (gx0, gy0, gx1, gy1), strict=True):
        count = (grid_edge - edge) / step
        if abs(count - round(count)) > 1e-6:
            raise ValueError(
                f"{where}: edge {edge:g} m is not a whole number of {step:g} m backbone strides "
                f"from the grid's edge {grid_edge:g} m"
            )


def _preset_dir() -> Any:
    return resources.files("models") / "configs"


def detector_presets() -> list[str]:
    """Names of the packaged presets (``models/configs/<name>.yaml``)."""
    return sorted(
        p.name.removesuffix(".yaml") for p in _preset_dir().iterdir() if p.name.endswith(".yaml")
    )


def load_detector_config(name_or_path: str | Path) -> DetectorConfig:
    """A packaged preset by name (``"cpu_max"``) or a YAML file by path.

    Anything that looks like a path (a ``Path``, a separator or a ``.yaml``/``.yml`` suffix)
    is read as a file; a missing file raises FileNotFoundError, an unknown preset ValueError.
    """
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml")):
        return DetectorConfig.from_yaml(text)
    preset = _preset_dir() / f"{text}.yaml"
    if not preset.is_file():
        raise ValueError(f"unknown detector preset {text!r}; known {detector_presets()}")
    with resources.as_file(preset) as path:
        return DetectorConfig.from_yaml(path)
