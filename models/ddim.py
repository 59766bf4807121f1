"""Deterministic (eta = 0) DDIM steps of a configured diffusers ``DDIMScheduler``, precomputed.

With eta = 0, one ``DDIMScheduler.step`` is linear in its two tensors: both the previous sample
and the x0 estimate are ``a * sample + b * model_output``, with ``a`` and ``b`` read from the
scheduler's ``alphas_cumprod`` at ``t`` and ``t - T // K``. ``step`` recomputes them with about
15 small tensor ops per call (0.06-0.1 ms each on the CPU preset, timed ad hoc);
here they are computed once per K, from the same scheduler and its own rule for the previous
timestep, and the refiner applies each step as one multiply-add. ``eta > 0`` keeps using
``step`` (it draws variance noise). tests/models/test_ddim.py checks equality with ``step``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler


@dataclass(frozen=True)
class LinearStep:
    """One eta = 0 DDIM step at ``timestep``: ``prev = a * x + b * m`` and ``x0 = c * x + d * m``
    for the sample ``x`` and the model output ``m`` (``prev``: ``prev_sample``, ``x0``:
    ``pred_original_sample``)."""

    timestep: int
    prev: tuple[float, float]
    x0: tuple[float, float]


def linear_steps(scheduler: DDIMScheduler) -> list[LinearStep]:
    """The scheduler's timesteps (after ``set_timesteps``) as :class:`LinearStep` s, in order.

    Only the settings the refiner uses: no clipping or thresholding, ``epsilon`` or ``sample``
    prediction (anything else raises ValueError, naming the setting).
    """
    config = scheduler.config
    if config.clip_sample or config.thresholding:
        raise ValueError("linear_steps: clip_sample / thresholding make the step non-linear")
    if config.prediction_type not in ("epsilon", "sample"):
        raise ValueError(f"linear_steps: prediction_type={config.prediction_type!r} unsupported")
    if scheduler.num_inference_steps is None:
        raise ValueError("linear_steps: call set_timesteps first")
    alphas = scheduler.alphas_cumprod.to(torch.float64)
    stride = config.num_train_timesteps // scheduler.num_inference_steps
    final = float(scheduler.final_alpha_cumprod)
    steps = []
    for t in (int(v) for v in scheduler.timesteps):
        a_t = float(alphas[t])
        a_prev = float(alphas[t - stride]) if t - stride >= 0 else final
        root_t, root_b = math.sqrt(a_t), math.sqrt(1.0 - a_t)
        root_prev, root_prev_b = math.sqrt(a_prev), math.sqrt(1.0 - a_prev)
        if config.prediction_type == "epsilon":  # x0 = (x - root_b m) / root_t, eps = m
            x0 = (1.0 / root_t, -root_b / root_t)
            prev = (root_prev * x0[0], root_prev * x0[1] + root_prev_b)
        else:  # x0 = m, eps = (x - root_t m) / root_b
            x0 = (0.0, 1.0)
            ratio = root_prev_b / root_b
            prev = (ratio, root_prev - ratio * root_t)
        steps.append(LinearStep(t, prev, x0))
    return steps


def combine(x: torch.Tensor, m: torch.Tensor, coefficients: tuple[float, float]) -> torch.Tensor:
    """``a * x + b * m`` for ``coefficients = (a, b)``; ``(0, 1)`` returns ``m`` itself."""
    a, b = coefficients
    if a == 0.0 and b == 1.0:
        return m
    return torch.add(x * a, m, alpha=b)
