"""The cooperative detector's config: grid, feature net, head and fusion, validated on load.

A config reads as the model's topology in a few lines of YAML (``models/configs/*.yaml``)::

    name: cpu_max
    grid: cpu                 # a GRID_PRESETS name, or {point_range, voxel_size, feature_stride}
    features: cpu             # a FEATURE_PRESETS name, or a FeatureConfig dict (see below)
    head: {score_threshold: 0.2, nms_iou: 0.15}
    fusion: max               # none | late | early | any key of models.fusion.FUSION_STRATEGIES
    fusion_options: {}        # the strategy's hyperparameters (agf: key_channels, hidden, kernel)
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
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

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


def _resolve_grid(grid: GridSpec | str | dict[str, Any], where: str) -> GridSpec:
    if isinstance(grid, GridSpec):
        return grid
    if isinstance(grid, str):
        if grid not in GRID_PRESETS:
            raise ValueError(f"{where}: unknown grid preset {grid!r}; known {sorted(GRID_PRESETS)}")
        return GRID_PRESETS[grid]
    if isinstance(grid, dict):
        try:
            return GridSpec.from_dict(dict(grid), where)
        except ValueError as err:
            raise ValueError(f"{where}: {err}" if where not in str(err) else str(err)) from err
    raise ValueError(f"{where}: expected a preset name or a mapping, got {type(grid).__name__}")


def _resolve_features(features: FeatureConfig | str | dict[str, Any], where: str) -> FeatureConfig:
    if isinstance(features, FeatureConfig):
        return features
    if isinstance(features, str):
        if features not in FEATURE_PRESETS:
            raise ValueError(
                f"{where}: unknown feature preset {features!r}; known {sorted(FEATURE_PRESETS)}"
            )
        return FEATURE_PRESETS[features][1]
    if isinstance(features, dict):
        data = dict(features)
        base_name = data.pop("preset", None)
        if base_name is None:
            return FeatureConfig.from_dict(data, where)
        base = _resolve_features(str(base_name), f"{where}.preset").to_dict()
        base.update(data)
        return FeatureConfig.from_dict(base, where)
    raise ValueError(f"{where}: expected a preset name or a mapping, got {type(features).__name__}")


@dataclass(frozen=True)
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

    name: str = "cpu_max"
    grid: GridSpec = CPU_GRID
    features: FeatureConfig = CPU_FEATURES
    head: HeadConfig = field(default_factory=HeadConfig)
    fusion: str = "max"
    fuse_at: str = "backbone"
    max_neighbours: int = 4
    comm_range: float = 70.0
    ego_clearance: float = 1.5
    fusion_options: dict[str, Any] = field(default_factory=dict)
    refiner: RefinerConfig | None = None
    message_range: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        where = f"detector {self.name!r}"
        object.__setattr__(self, "grid", _resolve_grid(self.grid, f"{where}: grid"))
        object.__setattr__(self, "features", _resolve_features(self.features, f"{where}: features"))
        if not isinstance(self.head, HeadConfig):
            raise ValueError(f"{where}: head must be a HeadConfig, got {type(self.head).__name__}")
        if not self.name:
            raise ValueError("detector: name must not be empty")
        if self.fusion not in fusion_names():
            raise ValueError(f"{where}: unknown fusion {self.fusion!r}; known {fusion_names()}")
        if not isinstance(self.fusion_options, dict):
            raise ValueError(f"{where}: fusion_options must be a mapping")
        if self.is_feature_fusion:
            fusion_options(self.fusion, self.fusion_options, f"{where}: fusion_options")
        elif self.fusion_options:
            raise ValueError(f"{where}: fusion {self.fusion!r} takes no fusion_options")
        if self.refiner is not None and not isinstance(self.refiner, RefinerConfig):
            raise ValueError(f"{where}: refiner must be a RefinerConfig or None")
        if self.fuse_at not in FUSE_POINTS:
            raise ValueError(f"{where}: unknown fuse_at {self.fuse_at!r}; known {FUSE_POINTS}")
        if isinstance(self.max_neighbours, bool) or int(self.max_neighbours) != self.max_neighbours:
            raise ValueError(f"{where}: max_neighbours must be an integer")
        object.__setattr__(self, "max_neighbours", int(self.max_neighbours))
        object.__setattr__(self, "comm_range", float(self.comm_range))
        if self.max_neighbours < 0 or not self.comm_range > 0:
            raise ValueError(f"{where}: need max_neighbours >= 0 and comm_range > 0")
        object.__setattr__(self, "ego_clearance", float(self.ego_clearance))
        if not 0.0 <= self.ego_clearance < 10.0:
            raise ValueError(
                f"{where}: ego_clearance must be in [0, 10) m, got {self.ego_clearance}"
            )
        backbone = self.features.backbone
        if backbone.output_stride != self.grid.feature_stride:
            raise ValueError(
                f"{where}: backbone output stride {backbone.output_stride:g} != grid "
                f"feature_stride {self.grid.feature_stride}"
            )
        m = backbone.input_multiple
        if self.grid.ny % m or self.grid.nx % m:
            raise ValueError(
                f"{where}: grid of {self.grid.ny} x {self.grid.nx} voxels does not divide by the "
                f"backbone's total stride {m}"
            )
        if self.message_range is not None:
            object.__setattr__(
                self, "message_range", _check_message_range(self, f"{where}: message_range")
            )

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
        """Build from a mapping; unknown keys (top level or in any section) raise ValueError."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}")
        kwargs: dict[str, Any] = dict(data)
        if "grid" in data:
            kwargs["grid"] = _resolve_grid(data["grid"], f"{where}:grid")
        if "features" in data:
            kwargs["features"] = _resolve_features(data["features"], f"{where}:features")
        if "head" in data:
            kwargs["head"] = HeadConfig.from_dict(dict(data["head"] or {}), f"{where}:head")
        if "fusion_options" in data:
            kwargs["fusion_options"] = dict(data["fusion_options"] or {})
        if data.get("refiner") is not None:
            refiner = data["refiner"]
            if not isinstance(refiner, dict):
                raise ValueError(f"{where}:refiner: expected a mapping or null")
            try:
                kwargs["refiner"] = RefinerConfig.from_dict(dict(refiner), f"{where}:refiner")
            except (TypeError, ValueError) as err:
                text = str(err)
                raise ValueError(text if where in text else f"{where}:{text}") from err
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from err

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


def _check_message_range(
    config: DetectorConfig, where: str
) -> tuple[float, float, float, float]:
    """``config.message_range`` as four floats, or ValueError naming what is wrong."""
    value = config.message_range
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise ValueError(f"{where}: expected [x_min, y_min, x_max, y_max], got {value!r}")
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: expected four numbers, got {value!r}") from err
    if not all(np.isfinite((x0, y0, x1, y1))):
        raise ValueError(f"{where}: numbers must be finite, got {value!r}")
    if not config.is_feature_fusion:
        raise ValueError(
            f"{where}: only feature fusion sends maps; fusion {config.fusion!r} needs null"
        )
    gx0, gy0, _, gx1, gy1, _ = config.grid.point_range
    if x0 > gx0 or y0 > gy0 or x1 < gx1 or y1 < gy1:
        raise ValueError(
            f"{where}: {[x0, y0, x1, y1]} must contain the grid's x/y range "
            f"{[gx0, gy0, gx1, gy1]}"
        )
    step = config.grid.voxel_size[0] * config.features.backbone.input_multiple
    for edge, grid_edge in zip((x0, y0, x1, y1), (gx0, gy0, gx1, gy1), strict=True):
        count = (grid_edge - edge) / step
        if abs(count - round(count)) > 1e-6:
            raise ValueError(
                f"{where}: edge {edge:g} m is not a whole number of {step:g} m backbone strides "
                f"from the grid's edge {grid_edge:g} m"
            )
    return (x0, y0, x1, y1)


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
