"""PKD feature refiner: conditional DDIM diffusion in BEV feature space (DiffKD / Diff-KD).

A student BEV feature ``(B, C, H, W)`` (an agent's encoder on possibly corrupted points) is
refined toward the clean teacher feature of the same shape::

    z   = AE.encode(student)                       # light 1x1 autoencoder, or identity
    g   = adapter(student, z)                      # (B,) in (0, 1): how clean it already is
    x   = g * z + (1 - g) * eps                    # DiffKD's adaptive noise matching
    for t in scheduler(K).timesteps:               # K DDIM steps from the top timestep
        x = scheduler.step(denoiser(x, t, cond=z), t, x).prev_sample
    out = student + AE.decode(x) - AE.decode(z)   # residual decode (last x: pred_original_sample)

The noise schedule is diffusers' ``DDIMScheduler`` (``set_timesteps`` / ``add_noise`` /
``step``), kept apart from the networks (:mod:`models.denoiser`) so K is a runtime argument and
the schedule is testable on its own. The refiner keeps one scheduler per K, ``set_timesteps``
once and never touched again (calls are deterministic and safe to interleave); at eta = 0 it
applies each ``step`` as the multiply-add it is (:mod:`models.ddim`). ``K = 0`` returns the input
tensor itself; a sample whose ``gamma`` reaches ``skip_above`` is returned unchanged (adaptive
steps) and only the others are computed.

diffusers' DDIM ``step`` goes back ``T // K`` from ``t`` while ``trailing`` spacing rounds
``T / K``: for K = 6, 7 (T = 1000) the last step lands on t = 0 instead of "t = -1" (alpha = 1),
so the result is the last step's ``pred_original_sample``; for K = 3, 6, 7, 9 an intermediate
step is one timestep off (harmless). Epsilon prediction from the top timestep divides the first
x0 estimate by ``sqrt(abar_T)``: ``start_fraction=0.5`` or ``prediction_type="sample"`` avoids it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from configkit import Bool, Float, Int, config_dataclass, validate
from models.ddim import LinearStep, combine, linear_steps
from models.denoiser import Denoiser, LinearAutoencoder, NoiseAdapter, pointwise, widen

if TYPE_CHECKING:  # diffusers is imported when a refiner is built, not by every cosim command
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler

MAX_STEPS = 10
#: How the refined latent becomes a map (:meth:`FeatureRefiner.readout`).
Readout = Literal["transposed", "gated"]
BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2"]
PredictionType = Literal["epsilon", "sample"]
BETA_SCHEDULES: tuple[str, ...] = BetaSchedule.__args__
PREDICTION_TYPES: tuple[str, ...] = PredictionType.__args__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@config_dataclass
class RefinerConfig:
    """Sizes, schedule and sampling settings of :class:`FeatureRefiner` (validated on build)."""

    # Defaults: the CPU preset's (cpu_diffkd). The diffusion runs on 1/16 of the cells, which
    # keeps K = 2 at 23% of voxelize + encoder (bench/bench_models.py); the residual decode
    # keeps the detail.
    latent_channels: Int | None = Field(16, ge=1)  # light linear AE C -> latent; None: no AE
    ae_stride: Int = Field(4, ge=1)  # AE folds ae_stride x ae_stride cells per latent cell
    hidden: Int = Field(16, ge=1)  # denoiser width
    blocks: Int = Field(1, ge=0)  # bottleneck residual blocks with timestep FiLM
    patch: Int = Field(1, ge=1)  # denoiser works at H/(ae_stride*patch) x W/(ae_stride*patch)
    num_train_timesteps: Int = Field(1000, ge=1)
    beta_schedule: BetaSchedule = "linear"  # a diffusers DDIMScheduler beta_schedule
    # "sample" (x0) prediction: from the top timestep epsilon's x0 estimate divides by
    # sqrt(abar_T) ~ 1/158 and the first steps blow up (measured in tests/models/test_refiner.py).
    prediction_type: PredictionType = "sample"
    steps: Int = Field(2, ge=0, le=MAX_STEPS)  # default K at inference; 0 = refinement off
    noise_adapter: Bool = True  # DiffKD adaptive noise matching: gamma predicted per sample
    fixed_gamma: Float = Field(0.5, ge=0.0, le=1.0)  # start mix when noise_adapter is False
    # adaptive steps: a sample with gamma >= this is not refined
    skip_above: Float | None = Field(None, ge=0.0, le=1.0)
    eta: Float = Field(0.0, ge=0.0, le=1.0)
    seed: Int = Field(0, ge=0, lt=2**63)  # inference noise: a torch.Generator seeded with this
    # Where the K steps start, as a fraction of the schedule: 1.0 = the top timestep; 0.5 =
    # DiffKD's choice (set_timesteps(2K), run the second half), far better conditioned.
    start_fraction: Float = Field(1.0, gt=0.0, le=1.0)
    # refined = student + decode(x0) - decode(z) (True) or decode(x0) (False): the residual
    # form keeps the student's detail that a strided, narrow latent cannot hold.
    residual_decode: Bool = True
    readout: Readout = "transposed"

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> ValueError:
            return ValueError(f"refiner: {name}={getattr(self, name)!r}; {allowed}")

        if self.latent_channels is None and self.ae_stride != 1:
            raise bad("ae_stride", "must be 1 without an autoencoder (latent_channels None)")
        if self.readout == "gated" and not self.residual_decode:
            raise bad("readout", "'gated' scales the student map: needs residual_decode true")
        need = schedule_length(MAX_STEPS, self.start_fraction)
        if self.num_train_timesteps < need:
            raise bad(
                "num_train_timesteps",
                f"must be >= {need} for {MAX_STEPS} steps at start_fraction={self.start_fraction}",
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML / checkpoint friendly)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "refiner") -> RefinerConfig:
        """Build from a dict, rejecting unknown keys by name (``where`` says which section)."""
        return validate(cls, data, where)


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error of ``a`` and ``b`` ``(B, C, H, W)`` over the cells where ``mask``
    ``(B, 1, H, W)`` is 1 (None: every cell); 0 when the mask is empty."""
    if mask is None:
        return F.mse_loss(a, b)
    weight = mask.expand_as(a)
    return ((a - b) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)


def schedule_length(steps: int, start_fraction: float) -> int:
    """``set_timesteps`` count whose last ``steps`` timesteps start near ``start_fraction * T``."""
    return max(steps, round(steps / start_fraction))


def make_scheduler(config: RefinerConfig) -> DDIMScheduler:
    """diffusers' DDIM schedule configured from ``config`` (trailing spacing, no clipping)."""
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        clip_sample=False,
        set_alpha_to_one=True,
        timestep_spacing="trailing",
    )


@dataclass(frozen=True)
class RefineOutput:
    """Refined feature ``(B, C, H, W)``, start mix ``gamma`` ``(B,)``, steps run ``(B,)`` int64.

    With ``steps=0`` nothing is computed: ``feature`` is the input tensor and ``gamma`` is NaN.
    """

    feature: torch.Tensor
    gamma: torch.Tensor
    steps_run: torch.Tensor


class FeatureRefiner(nn.Module):
    """Conditional feature-space diffusion that refines a student BEV map toward the teacher's."""

    def __init__(self, channels: int, config: RefinerConfig) -> None:
        super().__init__()
        if not (_is_int(channels) and channels >= 1):
            raise ValueError(f"refiner: channels={channels!r}; must be an int >= 1")
        self.channels = channels
        self.config = config
        gated = config.readout == "gated"
        self.autoencoder = LinearAutoencoder(
            channels, config.latent_channels, config.ae_stride, block_decode=gated
        )
        latent = self.autoencoder.latent_channels
        self.pillar_gate: nn.Conv2d | None = None
        self.context_gate: nn.Conv2d | None = None
        if gated:  # both start at zero: the gate is 1 everywhere, an untrained refiner the identity
            self.pillar_gate = nn.Conv2d(channels, 1, 1)
            self.context_gate = nn.Conv2d(latent, 1, 1)
            for conv in (self.pillar_gate, self.context_gate):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)
        self.denoiser = Denoiser(latent, config.hidden, config.blocks, config.patch)
        self.adapter = NoiseAdapter(
            latent, config.hidden, config.noise_adapter, float(config.fixed_gamma), config.ae_stride
        )
        # Training schedule: add_noise only; set_timesteps is never called on it.
        self.scheduler = make_scheduler(config)
        self._samplers: dict[int, tuple[DDIMScheduler, list[LinearStep]]] = {}
        self._noise_cache: dict[tuple[Any, ...], torch.Tensor] = {}

    def sampler(self, steps: int) -> DDIMScheduler:
        """The scheduler for ``steps`` inference steps (``set_timesteps`` once, then cached)."""
        return self._schedule(steps)[0]

    def _schedule(self, steps: int) -> tuple[DDIMScheduler, list[LinearStep]]:
        """The cached scheduler for ``steps`` and its last ``steps`` steps as multiply-adds."""
        cached = self._samplers.get(steps)
        if cached is None:
            sched = make_scheduler(self.config)
            sched.set_timesteps(schedule_length(steps, self.config.start_fraction))
            cached = self._samplers[steps] = (sched, linear_steps(sched)[-steps:])
        return cached

    def _check_feature(self, x: torch.Tensor, what: str) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"refiner: {what} must be (B, {self.channels}, H, W), got {tuple(x.shape)}"
            )
        p = self.config.patch * self.config.ae_stride
        if x.shape[2] % p or x.shape[3] % p:
            raise ValueError(
                f"refiner: {what} H={x.shape[2]}, W={x.shape[3]} must be divisible by "
                f"patch * ae_stride = {p}"
            )

    def _check_steps(self, steps: Any) -> int:
        if not (_is_int(steps) and 0 <= steps <= MAX_STEPS):
            raise ValueError(f"refiner: steps={steps!r}; must be an int in 0..{MAX_STEPS}")
        return steps

    def forward(
        self,
        student: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> RefineOutput:
        """Refine ``student`` ``(B, C, H, W)`` in ``steps`` DDIM steps (None: ``config.steps``)."""
        k = self._check_steps(self.config.steps if steps is None else steps)
        self._check_feature(student, "student")
        b = student.shape[0]
        device = student.device
        if k == 0:
            gamma = torch.full((b,), float("nan"), device=device, dtype=student.dtype)
            return RefineOutput(student, gamma, torch.zeros(b, dtype=torch.int64, device=device))
        z = self.autoencoder.encode(student)
        gamma = self.adapter(student, z)
        active = torch.ones(b, dtype=torch.bool, device=device)
        if self.config.skip_above is not None:
            active = gamma < self.config.skip_above
        steps_run = active.to(torch.int64) * k
        n_active = int(active.sum())
        if n_active == 0:
            return RefineOutput(student, gamma, steps_run)
        # Noise for the whole batch, so a sample's draw does not depend on which are skipped.
        eps, generator = self._start_noise(z, generator)
        idx = active.nonzero().squeeze(1) if n_active < b else None
        if idx is not None:
            z, eps, g = z[idx], eps[idx], gamma[idx]
        else:
            g = gamma
        x = torch.lerp(eps, z, g.view(-1, 1, 1, 1))  # g * z + (1 - g) * eps, one pass
        x0 = self._sample(x, z, k, generator, idx, b)
        base = student if idx is None else student[idx]
        refined = self.readout(base, z, x0)
        if idx is None:
            return RefineOutput(refined, gamma, steps_run)
        feature = student.index_copy(0, idx, refined.to(student.dtype))
        return RefineOutput(feature, gamma, steps_run)

    def readout(self, student: torch.Tensor, z: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The refined map from the student ``(B, C, H, W)``, its latent ``z`` and the
        refined latent ``x0``. Residual decode: the student plus the decoded correction
        ``x0 - z`` (the decoder is linear, so this equals ``decode(x0)`` where the autoencoder
        is exact and keeps the student's detail where it is not). The ``gated`` readout also
        scales each pillar by ``2 sigmoid(a . pillar + b . x0(cell))`` in (0, 2): a latent
        correction shared by a block of 4 x 4 pillars cannot remove one clutter pillar, a
        per-pillar gate can (and can keep the car beside it)."""
        if not self.config.residual_decode:
            return self.autoencoder.decode(x0)
        if self.pillar_gate is None or self.context_gate is None:
            return self.autoencoder.add_decoded_delta(student, x0 - z)
        b, _, h, w = student.shape
        s = self.config.ae_stride
        logit = pointwise(self.pillar_gate, student).view(b, 1, h // s, s, w)
        logit = logit + widen(pointwise(self.context_gate, x0), s)
        scale = (2.0 * torch.sigmoid(logit)).view(b, 1, h, w)
        return self.autoencoder.add_decoded_delta(student, x0 - z, scale)

    def _start_noise(
        self, z: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Generator | None]:
        """Start noise shaped like ``z`` and the generator that later draws continue (eta > 0).

        Without a generator the draw comes from a fresh one seeded with ``config.seed``: the same
        tensor every call, so with ``eta == 0`` (nothing else drawn) it is cached per (shape,
        device, dtype) instead of redrawn (1.5 ms on the CPU preset)."""
        cached = generator is None and self.config.eta == 0
        key = (tuple(z.shape), str(z.device), z.dtype)
        if cached and key in self._noise_cache:
            return self._noise_cache[key], None
        if generator is None:
            generator = torch.Generator(device=z.device).manual_seed(self.config.seed)
        eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        if cached:
            if len(self._noise_cache) >= 8:
                self._noise_cache.clear()
            self._noise_cache[key] = eps
        return eps, generator

    def _sample(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        k: int,
        generator: torch.Generator | None,
        idx: torch.Tensor | None,
        batch: int,
    ) -> torch.Tensor:
        """Run the K-step DDIM loop from ``x`` conditioned on ``cond``; returns the clean latent.

        The last step returns the x0 estimate: equal to ``prev_sample`` when it ends at t = -1
        (alpha = 1), but diffusers' trailing spacing ends at t = 0 for some K (6, 7)."""
        sched, steps = self._schedule(k)
        eta = float(self.config.eta)
        cond_emb = self.denoiser.embed_cond(cond)
        timesteps = [step.timestep for step in steps]
        films = None
        if self.denoiser.blocks:  # every step's timestep FiLM in one pass
            films = self.denoiser.film(torch.tensor(timesteps, device=x.device))
        for i, t in enumerate(timesteps):
            film = None if films is None else films[i : i + 1]
            model_output = self._output(self.denoiser.denoise(x, t, cond_emb, film), cond)
            last = i == len(timesteps) - 1
            if eta == 0:  # the step as one multiply-add (models.ddim)
                x = combine(x, model_output, steps[i].x0 if last else steps[i].prev)
                continue
            full = (batch, *x.shape[1:])
            noise = torch.randn(full, generator=generator, device=x.device, dtype=x.dtype)
            variance_noise = noise if idx is None else noise[idx]
            out = sched.step(model_output, t, x, eta=eta, variance_noise=variance_noise)
            x = out.pred_original_sample if last else out.prev_sample
        return x

    def diffusion_loss(
        self,
        teacher: torch.Tensor,
        student: torch.Tensor,
        generator: torch.Generator | None = None,
        detach_target: bool = False,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoising loss on the teacher latent at random timesteps, conditioned on the student.

        The encoder gets this loss's gradient through the student condition and, unless
        ``detach_target`` (DiffKD detaches it), through the teacher latent too; the latter lets
        the encoder lower the loss by shrinking the latent, so pair it with
        :meth:`autoencoder_loss`. ``mask`` ``(B, 1, H, W)`` (1 = counts) limits the loss to
        the latent cells it touches (max-pooled by ``ae_stride``); None: every cell.
        """
        self._check_feature(teacher, "teacher")
        self._check_feature(student, "student")
        if teacher.shape != student.shape:
            raise ValueError(
                f"refiner: teacher {tuple(teacher.shape)} and student {tuple(student.shape)} differ"
            )
        x0 = self.autoencoder.encode(teacher)
        if detach_target:
            x0 = x0.detach()
        cond = self.autoencoder.encode(student)
        b = x0.shape[0]
        dev = x0.device
        t = torch.randint(0, self.config.num_train_timesteps, (b,), generator=generator, device=dev)
        noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
        x_t = self.scheduler.add_noise(x0, noise, t)
        target = noise if self.config.prediction_type == "epsilon" else x0
        prediction = self._output(self.denoiser(x_t, t, cond), cond)
        if mask is None:
            return masked_mse(prediction, target, None)
        if mask.shape != (b, 1, *teacher.shape[2:]):
            raise ValueError(
                f"refiner: mask {tuple(mask.shape)} must be (B, 1, H, W) of the teacher "
                f"{tuple(teacher.shape)}"
            )
        stride = self.config.ae_stride
        cells = F.max_pool2d(mask, stride) if stride > 1 else mask
        return masked_mse(prediction, target, cells)

    def _output(self, prediction: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The scheduler's ``model_output``: the noise, or with ``sample`` prediction the
        student latent plus the denoiser's correction. The denoiser's last layer starts near
        zero, so an untrained refiner returns the student map instead of the map minus its
        own latent (measured: an x0 head predicting from scratch left the shipped refiner
        changing maps by 26% and moving them away from the teacher)."""
        if self.config.prediction_type == "epsilon":
            return prediction
        return cond + prediction

    def autoencoder_loss(self, teacher: torch.Tensor) -> torch.Tensor:
        """Reconstruction MSE of the teacher through the autoencoder (0 without one)."""
        self._check_feature(teacher, "teacher")
        if not self.autoencoder.enabled:
            return teacher.new_zeros(())
        return F.mse_loss(self.autoencoder.decode(self.autoencoder.encode(teacher)), teacher)

    def adapter_loss(self, gamma: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """BCE between ``gamma`` ``(B,)`` and a per-sample cleanliness target in [0, 1]."""
        target = torch.as_tensor(target, device=gamma.device, dtype=gamma.dtype)
        if target.shape != gamma.shape:
            raise ValueError(
                f"refiner: adapter target {tuple(target.shape)} must match gamma "
                f"{tuple(gamma.shape)}"
            )
        if bool(((target < 0) | (target > 1)).any()):
            raise ValueError("refiner: adapter target must lie in [0, 1]")
        return F.binary_cross_entropy(gamma, target)
