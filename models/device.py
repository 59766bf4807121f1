"""Which torch device a command runs its models on, and the one way back to numpy.

``--device`` on ``cosim train``, ``eval``, ``run`` and ``robustness`` takes ``auto`` (CUDA when
torch sees a GPU, else the CPU), ``cpu`` or ``cuda`` (``cuda:N`` too). Voxelization always runs
on the CPU (index arithmetic, see :mod:`models.encoders.feature_net`); models, targets and
features live on the resolved device, and every tensor a model produces reaches numpy through
:func:`to_numpy`, which copies it to the CPU first (``Tensor.numpy`` refuses a CUDA tensor).
"""

from __future__ import annotations

import numpy as np
import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str, flag: str = "--device") -> torch.device:
    """``auto`` / ``cpu`` / ``cuda[:N]`` -> a torch device that exists on this machine, or a
    ValueError naming ``flag`` and the value."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        try:
            device = torch.device(text)
        except RuntimeError as err:
            raise ValueError(f"{flag} {name!r}: {err}") from None
        if not torch.cuda.is_available():
            raise ValueError(
                f"{flag} {name!r}: this machine has no CUDA device torch can use "
                f"(torch {torch.__version__} is a CPU build or no GPU is visible); "
                "use --device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{flag} {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return device
    raise ValueError(f"{flag} {name!r}: expected one of {list(DEVICE_CHOICES)} (or cuda:N)")


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A detached CPU copy of ``tensor`` as numpy (no copy when it is already on the CPU)."""
    return tensor.detach().cpu().numpy()


def cluster_device(requested: str, cluster_gpus: float, flag: str = "--device") -> str:
    """The device Ray workers load models on: ``cuda`` when asked for (the cluster must have
    GPUs) or, for ``auto``, when the cluster has any; else ``cpu``. Decided from the cluster's
    resources, not the driver's, since the driver may be a CPU-only machine."""
    text = str(requested).strip().lower()
    if text == "auto":
        return "cuda" if cluster_gpus > 0 else "cpu"
    if text == "cpu":
        return "cpu"
    if text == "cuda" or text.startswith("cuda:"):
        if cluster_gpus <= 0:
            raise ValueError(f"{flag} {requested!r}: the Ray cluster has no GPU resources")
        return "cuda"  # inside a worker, Ray's CUDA_VISIBLE_DEVICES names its own GPU(s)
    raise ValueError(f"{flag} {requested!r}: expected one of {list(DEVICE_CHOICES)} (or cuda:N)")


def check_gpu_fraction(value: float, flag: str) -> float:
    """A Ray GPU request per actor or worker: a fraction in (0, 1] or a whole number."""
    if not value > 0 or (value > 1 and value != int(value)):
        raise ValueError(f"{flag} {value!r}: must be a fraction in (0, 1] or a whole number")
    return float(value)
