"""Save and load a :class:`~models.detector.CooperativeDetector` with its config and metrics.

One torch file holds a plain dict: format tag and version, the config as a plain dict, the
weights, metrics, the epoch, and optionally the optimizer state and an ``extra`` dict. Loading
uses ``torch.load(weights_only=True)``, which rebuilds only tensors and plain containers and
never runs arbitrary pickled code, so every stored value must be plain (numbers, strings,
lists, dicts, tensors); numpy scalars and arrays in ``metrics``/``extra`` are converted on save.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.detector import CooperativeDetector
from models.detector_config import DetectorConfig

FORMAT = "v2x-cosim/detector-checkpoint"
FORMAT_VERSION = 1


def _plain(value: Any, where: str) -> Any:
    """Recursively convert to values ``weights_only`` loading accepts; reject the rest."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str | torch.Tensor):
        return value
    raise TypeError(f"checkpoint: {where} is a {type(value).__name__}, not a plain value")


def _on_cpu(value: Any) -> Any:
    """``value`` with every tensor inside it copied to the CPU (a device-free file)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_on_cpu(v) for v in value)
    return value


def save_checkpoint(
    path: str | Path,
    model: CooperativeDetector,
    config: DetectorConfig,
    metrics: dict[str, Any],
    optimizer_state: dict[str, Any] | None = None,
    epoch: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint atomically (temp file + rename); returns the path written. Every
    tensor is stored on the CPU, so a checkpoint saved on a GPU loads anywhere.

    ``config`` must be the model's own config (a mismatch would load into the wrong model).
    """
    if config != model.config:
        raise ValueError(f"checkpoint {path}: config {config.name!r} is not the model's config")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": _plain(dict(metrics), "metrics"),
        "optimizer_state": _on_cpu(optimizer_state),
        "epoch": int(epoch),
        "extra": _plain(dict(extra or {}), "extra"),
    }
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The validated payload dict, without building a model."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError) as err:
        raise ValueError(f"{p} is not a detector checkpoint: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{p} is not a detector checkpoint (no {FORMAT!r} format tag)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{p}: checkpoint format version {version!r}, this code reads <= 1")
    return payload


def checkpoint_bytes(path: str | Path, overrides: dict[str, Any] | None = None) -> bytes:
    """The checkpoint file's bytes, or, with ``overrides``, a checkpoint of the same weights
    whose config has them (validated by loading it first): what ``cosim run`` ships to the
    vehicles."""
    if not overrides:
        return Path(path).read_bytes()
    _, _, payload = load_checkpoint(path, overrides=overrides)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    overrides: dict[str, Any] | None = None,
) -> tuple[CooperativeDetector, DetectorConfig, dict[str, Any]]:
    """``(model, config, payload)``: the model rebuilt from the stored config, weights loaded
    strictly, on ``map_location``, in eval mode; ``payload`` holds metrics, epoch,
    optimizer_state and extra. ``overrides`` replace top-level config keys first (e.g.
    ``message_range``, which changes no weight); ``payload["config"]`` is the config used."""
    payload = read_checkpoint(path, map_location)
    try:
        payload["config"] = {**payload["config"], **(overrides or {})}
        config = DetectorConfig.from_dict(payload["config"], f"{path}:config")
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: checkpoint config is unreadable: {err}") from err
    model = CooperativeDetector(config)
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: checkpoint has no 'state_dict' of tensors")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # missing/unexpected keys or wrong shapes: say which, briefly
        lines = [line.strip() for line in str(err).splitlines() if line.strip()][1:4]
        raise ValueError(
            f"{path}: weights do not fit config {config.name!r}: {' '.join(lines)[:400]}"
        ) from None
    model.to(map_location)
    model.eval()
    return model, config, payload
