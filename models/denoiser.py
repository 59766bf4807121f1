"""The PKD refiner's networks: linear autoencoder, conditional denoiser and noise adapter.

These are plain ``nn.Module`` pieces with no notion of a noise schedule; the schedule (diffusers'
``DDIMScheduler``) and the sampling loop live in :mod:`models.refiner`, which composes them.

* :class:`LinearAutoencoder` — DiffKD's light channel compressor: 1x1 conv ``C -> latent`` and
  back, so diffusion runs on fewer channels (identity when no latent size is given).
* :class:`Denoiser` — predicts the noise (or the clean latent) from ``x_t``, the timestep and the
  student's latent. It works at ``H/patch x W/patch`` (patchify conv stem, transposed-conv
  un-patchify) so its cost on the 160 x 240 CPU grid stays in the millisecond range.
* :class:`NoiseAdapter` — DiffKD's adaptive noise matching: from the student map's occupancy
  by range band and its latent's statistics over occupied cells, a per-sample ``gamma`` in
  (0, 1) that sets how much of the student is kept in the start ``gamma * z + (1 - gamma) * eps``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Gamma logits are bounded to +-_GAMMA_LOGIT_BOUND so sigmoid stays strictly inside (0, 1) in
# float32 whatever the input scale (sigmoid(8) = 0.99966, not rounded to 1).
_GAMMA_LOGIT_BOUND = 8.0


def unpatchify(deconv: nn.ConvTranspose2d, h: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """``deconv(h)`` for a kernel == stride transposed conv, as one matmul + a pixel shuffle
    (``bias=False``: its linear part only).

    Same result; oneDNN's transposed convolution is 4-10x slower on CPU for these shapes.
    """
    k = deconv.stride[0]
    b, c, hh, ww = h.shape
    out = deconv.out_channels
    weight = deconv.weight.reshape(c, out * k * k).t().unsqueeze(0).expand(b, -1, -1)
    flat = h.reshape(b, c, hh * ww)
    if deconv.bias is None or not bias:
        y = torch.bmm(weight, flat)
    else:
        bias = deconv.bias.repeat_interleave(k * k).view(1, -1, 1)
        y = torch.baddbmm(bias, weight, flat)
    if k == 1:
        return y.view(b, out, hh, ww)
    # pixel_shuffle, written as a permute: 3x faster than F.pixel_shuffle on CPU here.
    y = y.view(b, out, k, k, hh, ww).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(b, out, hh * k, ww * k)


class LinearAutoencoder(nn.Module):
    """Linear encode ``C -> latent`` and decode ``latent -> C``; identity when latent is None.

    ``stride`` 1 is DiffKD's 1x1-conv channel compressor. ``stride`` s > 1 also folds each
    s x s cell block into one latent vector (stride-s conv), so every diffusion step runs on
    s*s times fewer latent cells: the full-resolution latent dominates the refiner's CPU cost.
    The way back is a transposed conv (``block_decode=False``: one vector per cell of the
    block) or, with ``block_decode``, a 1x1 conv at the latent's resolution whose vector is
    broadcast over the block: the full-size map is then written once, by a broadcast add,
    instead of through a pixel shuffle (a strided copy, the largest single op in a profile
    of the refiner at K = 2).
    """

    def __init__(
        self,
        channels: int,
        latent_channels: int | None,
        stride: int = 1,
        block_decode: bool = False,
    ) -> None:
        super().__init__()
        if latent_channels is None and stride != 1:
            raise ValueError(f"autoencoder: stride={stride} needs latent_channels")
        self.channels = channels
        self.stride = stride
        self.block_decode = block_decode and stride > 1
        self.latent_channels = channels if latent_channels is None else latent_channels
        self.enabled = latent_channels is not None
        self.encoder: nn.Module = nn.Identity()
        self.decoder: nn.Module = nn.Identity()
        if latent_channels is not None:
            self.encoder = nn.Conv2d(channels, latent_channels, stride, stride=stride)
            self.decoder = (
                nn.Conv2d(latent_channels, channels, 1)
                if stride == 1 or self.block_decode
                else nn.ConvTranspose2d(latent_channels, channels, stride, stride=stride)
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature ``(B, C, H, W)`` -> latent ``(B, L, H/stride, W/stride)``."""
        return pointwise(self.encoder, x) if self.stride == 1 else self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``(B, L, H/stride, W/stride)`` -> feature ``(B, C, H, W)``."""
        if self.stride == 1:
            return pointwise(self.decoder, z)
        if self.block_decode:
            b, _, h, w = z.shape
            s = self.stride
            rows = widen(pointwise(self.decoder, z), s).expand(-1, -1, -1, s, -1)
            return rows.reshape(b, self.channels, h * s, w * s)
        return unpatchify(self.decoder, z)  # type: ignore[arg-type]

    def add_decoded_delta(
        self, base: torch.Tensor, dz: torch.Tensor, scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``base * scale + decode(a) - decode(b)`` for a latent difference ``dz = a - b``
        (``scale`` ``(B, 1, H, W)``, None: 1): the decoder's linear part only (the bias
        cancels). The transposed decode adds into the fresh decode in place (the map written
        twice instead of four times); the block decode is one broadcast pass."""
        if not self.enabled:
            return base + dz if scale is None else torch.addcmul(dz, base, scale)
        if self.stride == 1:
            delta = pointwise(self.decoder, dz, bias=False)
        elif self.block_decode:
            b, c, h, w = base.shape
            small = widen(pointwise(self.decoder, dz, bias=False), self.stride)
            rows = base.view(b, c, h // self.stride, self.stride, w)
            if scale is None:
                return (rows + small).view(b, c, h, w)
            scale_rows = scale.view(b, 1, h // self.stride, self.stride, w)
            return torch.addcmul(small, rows, scale_rows).view(b, c, h, w)
        else:
            delta = unpatchify(self.decoder, dz, bias=False)  # type: ignore[arg-type]
        return delta.add_(base) if scale is None else torch.addcmul(delta, base, scale)


def widen(x: torch.Tensor, stride: int) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, C, h, 1, w * stride)``, each value repeated ``stride`` times
    along the row: broadcast against a ``(B, C, h, stride, w * stride)`` view of the
    full-size map it upsamples a ``stride`` x ``stride`` block at a time, with the rows
    contiguous (a broadcast over a 6-d block view runs 4-wide inner loops)."""
    return x.repeat_interleave(stride, dim=3).unsqueeze(3)


def pointwise(conv: nn.Module, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """A 1x1 ``nn.Conv2d`` applied as one batched matmul (any other module, or a conv with a
    larger kernel or stride, is simply called; ``bias=False``: its linear part only).

    Same result as ``conv(x)``; on CPU oneDNN's 1x1 convolution is up to 20x slower than the
    plain GEMM for the refiner's shapes (16 -> 32 channels on 160 x 240), so the AE uses this.
    """
    if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (1, 1) or conv.stride != (1, 1):
        return conv(x)
    b, c, h, w = x.shape
    weight = conv.weight.view(1, conv.out_channels, c).expand(b, -1, -1)
    flat = x.reshape(b, c, h * w)
    if conv.bias is None or not bias:
        y = torch.bmm(weight, flat)
    else:
        y = torch.baddbmm(conv.bias.view(1, -1, 1), weight, flat)
    return y.view(b, conv.out_channels, h, w)


def fast_asinh(x: torch.Tensor) -> torch.Tensor:
    """``asinh(x)`` as ``sign(x) * log1p(|x| + x^2 / (1 + sqrt(x^2 + 1)))``: the same values
    (float32 rounding), but vectorised; on the CPU preset's 38,400-value latent (one thread)
    0.10 ms against ``torch.asinh``'s 0.28 ms."""
    a = x.abs()
    return torch.copysign(torch.log1p(a + a * a / (1.0 + torch.sqrt(a * a + 1.0))), x)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(B, dim)`` of integer timesteps ``(B,)`` (DDPM style)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class FiLMBottleneck(nn.Module):
    """Residual bottleneck (1x1 reduce, 3x3, 1x1 expand) with a timestep FiLM after the reduce."""

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.mid = mid
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.conv = nn.Conv2d(mid, mid, 3, padding=1)
        self.expand = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C, h, w)``; ``scale``/``shift`` ``(B, mid)`` from the timestep MLP."""
        y = F.silu(pointwise(self.reduce, x))
        y = torch.addcmul(shift[:, :, None, None], y, 1.0 + scale[:, :, None, None])
        y = F.silu(self.conv(y))
        return x + pointwise(self.expand, y)


class Denoiser(nn.Module):
    """Conditional denoiser ``(x_t, t, cond) -> model_output``, all ``(B, latent, H, W)``.

    The input is ``concat(x_t, cond)`` through a stride-``patch`` conv; that conv is split into
    an ``x_t`` part and a ``cond`` part (the same linear map) so the sampler can embed the
    condition once per refinement and reuse it at every step (:meth:`embed_cond`,
    :meth:`denoise`).
    """

    def __init__(self, latent: int, hidden: int, blocks: int, patch: int) -> None:
        super().__init__()
        self.latent = latent
        self.hidden = hidden
        self.patch = patch
        self.mid = max(1, hidden // 2)
        self.stem_x = nn.Conv2d(latent, hidden, patch, stride=patch)
        self.stem_cond = nn.Conv2d(latent, hidden, patch, stride=patch, bias=False)
        self.time_dim = max(2, hidden)
        self.time_mlp = nn.Sequential(
            nn.Linear(self.time_dim, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 2 * self.mid * blocks) if blocks else nn.Identity(),
        )
        self.blocks = nn.ModuleList(FiLMBottleneck(hidden, self.mid) for _ in range(blocks))
        self.head = nn.ConvTranspose2d(hidden, latent, patch, stride=patch)
        # Small (not zero) last layer: the start is close to "predict 0" while every earlier
        # layer still receives a gradient from the first step.
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def check_size(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is ``(B, latent, H, W)`` with H, W divisible by patch."""
        if x.dim() != 4 or x.shape[1] != self.latent:
            raise ValueError(f"denoiser: expected (B, {self.latent}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.patch or w % self.patch:
            raise ValueError(f"denoiser: H={h} and W={w} must be divisible by patch={self.patch}")

    def embed_cond(self, cond: torch.Tensor) -> torch.Tensor:
        """The condition's share of the stem, ``(B, hidden, H/patch, W/patch)``."""
        self.check_size(cond)
        return pointwise(self.stem_cond, cond)

    def film(self, t: torch.Tensor) -> torch.Tensor:
        """Per-block FiLM ``(n, blocks, 2, mid)`` (scale, shift) of timesteps ``t`` ``(n,)``:
        the sampler computes its K timesteps' in one pass instead of one per step."""
        film = self.time_mlp(timestep_embedding(t, self.time_dim))
        return film.view(t.shape[0], len(self.blocks), 2, self.mid)

    def denoise(
        self,
        x: torch.Tensor,
        t: torch.Tensor | int,
        cond_emb: torch.Tensor,
        film: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One prediction from ``x_t`` and an already embedded condition (:meth:`embed_cond`);
        ``film`` ``(1 or B, blocks, 2, mid)``: :meth:`film` of ``t``, when already computed."""
        self.check_size(x)
        b = x.shape[0]
        h = pointwise(self.stem_x, x) + cond_emb
        if self.blocks:
            if film is None:
                t = torch.as_tensor(t, device=x.device)
                film = self.film(t.reshape(-1).expand(b) if t.numel() == 1 else t.reshape(b))
            film = film.to(h.dtype).expand(b, -1, -1, -1)
            for i, block in enumerate(self.blocks):
                h = block(h, film[:, i, 0], film[:, i, 1])
        return unpatchify(self.head, F.silu(h))

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor) -> torch.Tensor:
        """``model_output`` for ``x_t`` ``(B, L, H, W)`` at timesteps ``t`` (scalar or ``(B,)``)."""
        if cond.shape != x.shape:
            raise ValueError(f"denoiser: cond {tuple(cond.shape)} must match x {tuple(x.shape)}")
        return self.denoise(x, t, self.embed_cond(cond))


class NoiseAdapter(nn.Module):
    """Per-sample start mix ``gamma`` ``(B,)`` strictly in (0, 1): how clean the student map is.

    Reads what a sensor corruption changes, not the map's global average (a global mean/max
    pool gave one gamma for every severity, the training set's prior: measured in
    ``scripts/refiner_diagnostics.py``): the share of occupied pillars in ``rings`` radial
    bands around the map centre, where the ego sits (fog empties the far bands and clutters
    the near one, beam loss thins them, crosstalk fills them), and the mean, spread and peak
    of each latent channel over the occupied latent cells (``asinh``-compressed: pillar
    features are unbounded). A tiny MLP maps them to a bounded logit, so gamma never rounds
    to 0 or 1. With ``learned=False`` it returns ``fixed_gamma``.
    """

    def __init__(
        self,
        latent: int,
        hidden: int,
        learned: bool,
        fixed_gamma: float,
        stride: int = 1,
        rings: int = 4,
    ) -> None:
        super().__init__()
        self.learned = learned
        self.fixed_gamma = fixed_gamma
        self.stride = stride
        self.rings = rings
        self._ring_cache: dict[tuple[int, int, str], torch.Tensor] = {}
        self.mlp = (
            nn.Sequential(nn.Linear(rings + 3 * latent, hidden), nn.SiLU(), nn.Linear(hidden, 1))
            if learned
            else None
        )

    def ring_masks(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """``(rings, h*w)`` one-hot radial band of each latent cell (distance from the map
        centre over the half-diagonal, split evenly), cached per size and device."""
        key = (h, w, str(device))
        masks = self._ring_cache.get(key)
        if masks is None:
            ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h - 0.5
            xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w - 0.5
            r = torch.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2).reshape(-1) / (0.5 * 2**0.5)
            band = (r * self.rings).long().clamp_(max=self.rings - 1)
            masks = F.one_hot(band, self.rings).t().to(torch.float32)
            self._ring_cache[key] = masks
        return masks

    def statistics(self, student: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The MLP's input ``(B, rings + 3 L)`` from the student map ``(B, C, H, W)`` and its
        latent ``z`` ``(B, L, H/stride, W/stride)``."""
        # Occupied: the channels sum to non-zero. For ReLU features (PointPillars) that is
        # exactly "any channel non-zero"; signed features differ only where they cancel exactly.
        # On the CPU preset's map the sum takes 0.07 ms, a max and a min 0.17-0.3 ms.
        occupied = (student.sum(dim=1, keepdim=True) != 0).to(z.dtype)
        if self.stride > 1:
            occupied = F.avg_pool2d(occupied, self.stride)  # share of occupied pillars per cell
        b, latent, h, w = z.shape
        share = occupied.reshape(b, h * w)
        masks = self.ring_masks(h, w, z.device).to(z.dtype)
        ring_share = share @ masks.t() / masks.sum(dim=1)
        weight = (share > 0).to(z.dtype).unsqueeze(1)  # (B, 1, h*w)
        count = weight.sum(dim=2).clamp_min(1.0)
        values = fast_asinh(z.reshape(b, latent, h * w))
        mean = (values * weight).sum(dim=2) / count
        spread = (((values - mean.unsqueeze(2)) ** 2 * weight).sum(dim=2) / count).sqrt()
        peak = values.amax(dim=2)
        return torch.cat([ring_share, mean, spread, peak], dim=1)

    def forward(self, student: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Student map ``(B, C, H, W)`` and its latent ``z`` -> gamma ``(B,)``."""
        if self.mlp is None:
            return torch.full((z.shape[0],), self.fixed_gamma, device=z.device, dtype=z.dtype)
        logit = self.mlp(self.statistics(student, z)).squeeze(1)
        logit = _GAMMA_LOGIT_BOUND * torch.tanh(logit / _GAMMA_LOGIT_BOUND)
        return torch.sigmoid(logit)
