"""Tests of the PKD feature refiner: the DDIM schedule on its own, then the refiner module."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from models.refiner import FeatureRefiner, RefineOutput, RefinerConfig, make_scheduler

SMALL = RefinerConfig(
    latent_channels=4, ae_stride=1, hidden=8, blocks=1, patch=2, prediction_type="epsilon"
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread is faster and spares the shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _feature(b: int = 2, c: int = 8, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    """Sparse non-negative BEV-like feature."""
    g = torch.Generator().manual_seed(seed)
    dense = torch.relu(torch.randn(b, c, h, w, generator=g))
    return dense * (torch.rand(b, 1, h, w, generator=g) < 0.3)


# --- the schedule on its own -------------------------------------------------------------------


def test_add_noise_then_true_noise_recovers_x0_at_every_timestep() -> None:
    sched = make_scheduler(RefinerConfig(prediction_type="epsilon"))
    t_count = sched.config.num_train_timesteps
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(t_count, 6, generator=g)
    noise = torch.randn(t_count, 6, generator=g)
    t = torch.arange(t_count)
    x_t = sched.add_noise(x0, noise, t)
    abar = sched.alphas_cumprod[t].unsqueeze(1)
    x0_hat = (x_t - (1 - abar).sqrt() * noise) / abar.sqrt()
    torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=0)
    # The scheduler's own step agrees at a few timesteps.
    sched.set_timesteps(t_count)
    for ti in (0, 1, 250, 998, 999):
        out = sched.step(noise[ti : ti + 1], ti, x_t[ti : ti + 1])
        torch.testing.assert_close(out.pred_original_sample, x0[ti : ti + 1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_ddim_eta1_every_timestep_mean_is_ddpm_posterior_mean(schedule: str) -> None:
    sched = make_scheduler(RefinerConfig(beta_schedule=schedule, prediction_type="epsilon"))
    t_count = sched.config.num_train_timesteps
    sched.set_timesteps(t_count)  # K = T: every timestep, prev = t - 1
    abar = sched.alphas_cumprod.double()
    # DDPM's per-step beta as the schedule's own cumulative product implies it (float32 cumprod
    # rounding makes 1 - abar_t / abar_{t-1} differ from sched.betas[t] by ~1e-7 absolute).
    betas = 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
    torch.testing.assert_close(betas, sched.betas.double(), atol=1e-6, rtol=0)
    g = torch.Generator().manual_seed(2)
    for t in (1, 10, 500, 999):
        x0 = torch.randn(3, 5, generator=g).double()
        eps = torch.randn(3, 5, generator=g).double()
        v = torch.randn(3, 5, generator=g).double()
        x_t = sched.add_noise(x0, eps, torch.tensor([t]))
        out = sched.step(eps, t, x_t, eta=1.0, variance_noise=v).prev_sample
        a_t, a_prev, beta = abar[t], abar[t - 1], betas[t]
        mu = (a_prev.sqrt() * beta / (1 - a_t)) * x0 + (
            (1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)
        ) * x_t
        sigma = ((1 - a_prev) / (1 - a_t) * beta).sqrt()  # DDPM posterior std (beta tilde)
        torch.testing.assert_close(out - sigma * v, mu, atol=1e-5, rtol=1e-5)


# --- config --------------------------------------------------------------------------------------


def test_config_round_trip_and_unknown_key() -> None:
    cfg = RefinerConfig(
        latent_channels=None, ae_stride=1, steps=5, skip_above=0.9, prediction_type="epsilon"
    )
    assert RefinerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"diffkd\.refiner.*'stpes'"):
        RefinerConfig.from_dict({"stpes": 2}, where="diffkd.refiner")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 11),
        ("steps", -1),
        ("hidden", 0),
        ("latent_channels", 0),
        ("prediction_type", "v_prediction"),
        ("beta_schedule", "cosine"),
        ("fixed_gamma", 1.5),
        ("skip_above", -0.1),
        ("eta", 2.0),
    ],
)
def test_config_rejects_bad_values_naming_them(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"RefinerConfig\.{field}: must be .*got {value!r}"):
        RefinerConfig(**{field: value})


# --- the refiner ------------------------------------------------------------------------------


def test_steps_zero_returns_input_bit_identically() -> None:
    refiner = FeatureRefiner(8, SMALL)
    x = _feature()
    out = refiner(x, steps=0)
    assert out.feature is x
    assert out.steps_run.tolist() == [0, 0] and out.steps_run.dtype == torch.int64


@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_each_k_runs_with_right_shape(k: int) -> None:
    refiner = FeatureRefiner(8, SMALL).eval()
    x = _feature()
    with torch.no_grad():
        out = refiner(x, steps=k)
    assert isinstance(out, RefineOutput)
    assert out.feature.shape == x.shape and out.gamma.shape == (2,)
    assert out.steps_run.tolist() == [k, k]
    assert torch.isfinite(out.feature).all()


@pytest.mark.parametrize("k", [11, -1, 2.0, True])
def test_steps_out_of_range_raise(k: object) -> None:
    with pytest.raises(ValueError, match=f"steps={k!r}"):
        FeatureRefiner(8, SMALL)(_feature(), steps=k)


def test_bad_inputs_raise() -> None:
    refiner = FeatureRefiner(8, SMALL)
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        refiner(torch.zeros(8, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        refiner(torch.zeros(1, 7, 16, 16))
    with pytest.raises(ValueError, match="divisible by patch \\* ae_stride = 2"):
        refiner(torch.zeros(1, 8, 15, 16))


def test_same_seed_same_output_across_instances_and_calls() -> None:
    a = FeatureRefiner(8, RefinerConfig(**{**SMALL.to_dict(), "seed": 7})).eval()
    b = copy.deepcopy(a)
    x = _feature()
    with torch.no_grad():
        fa, fb = a(x).feature, b(x).feature
        again = a(x).feature
        explicit = a(x, generator=torch.Generator().manual_seed(7)).feature
        other = a(x, generator=torch.Generator().manual_seed(8)).feature
    assert torch.equal(fa, fb) and torch.equal(fa, again) and torch.equal(fa, explicit)
    assert not torch.equal(fa, other)


def test_stochastic_eta_is_seeded_too() -> None:
    cfg = RefinerConfig(**{**SMALL.to_dict(), "eta": 1.0})
    a = FeatureRefiner(8, cfg).eval()
    x = _feature()
    with torch.no_grad():
        assert torch.equal(a(x, steps=5).feature, copy.deepcopy(a)(x, steps=5).feature)


@pytest.mark.parametrize("scale", ["random", "zero", "huge"])
def test_gamma_strictly_inside_unit_interval(scale: str) -> None:
    refiner = FeatureRefiner(8, SMALL)
    x = {"random": _feature(4), "zero": torch.zeros(4, 8, 16, 16), "huge": 1e3 * _feature(4)}[scale]
    with torch.no_grad():
        # Push the adapter's logit far out too: gamma must still not round to 0 or 1.
        for bias in (-1e4, 0.0, 1e4):
            refiner.adapter.mlp[-1].bias.fill_(bias)
            gamma = refiner(x, steps=1).gamma
            assert gamma.shape == (4,)
            assert bool(((gamma > 0) & (gamma < 1)).all()), (scale, bias, gamma)


def test_adapter_reads_occupancy_by_range_band() -> None:
    """Ring shares on a hand-built map: pillars only near the centre fill the inner band."""
    cfg = RefinerConfig(**{**SMALL.to_dict(), "latent_channels": 4, "ae_stride": 2, "patch": 1})
    refiner = FeatureRefiner(8, cfg)
    x = torch.zeros(2, 8, 16, 16)
    x[0, :, 7:9, 7:9] = 1.0  # the 2 x 2 pillars around the centre
    x[1] = 1.0  # every pillar
    with torch.no_grad():
        stats = refiner.adapter.statistics(x, refiner.autoencoder.encode(x))
    rings = refiner.adapter.rings
    masks = refiner.adapter.ring_masks(8, 8, x.device)
    assert masks.sum().item() == 64 and bool((masks.sum(dim=0) == 1).all())
    inner = masks[0].sum().item()  # four latent cells hold a quarter occupied pillar each
    assert stats[0, :rings].tolist() == pytest.approx([1 / inner, 0.0, 0.0, 0.0])
    assert stats[1, :rings].tolist() == pytest.approx([1.0] * rings)


def test_adapter_learns_to_tell_a_thinned_map_from_a_full_one() -> None:
    """Trained on its loss alone, gamma separates full maps (target 1) from maps whose outer
    bands lost their pillars, as fog does (target 0.25)."""
    torch.manual_seed(0)
    refiner = FeatureRefiner(8, SMALL)
    full = _feature(8, seed=1)
    thinned = full.clone()
    thinned[:, :, :3] = 0
    thinned[:, :, -3:] = 0
    thinned[:, :, :, :3] = 0
    thinned[:, :, :, -3:] = 0
    x = torch.cat([full, thinned])
    target = torch.tensor([1.0] * 8 + [0.25] * 8)
    optimizer = torch.optim.Adam(refiner.adapter.parameters(), lr=0.01)
    for _ in range(150):
        gamma = refiner.adapter(x, refiner.autoencoder.encode(x).detach())
        loss = refiner.adapter_loss(gamma, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        gamma = refiner(x, steps=1).gamma
    assert float(gamma[8:].max()) < 0.5 < float(gamma[:8].min()), gamma


def test_fixed_gamma_without_adapter() -> None:
    cfg = RefinerConfig(**{**SMALL.to_dict(), "noise_adapter": False, "fixed_gamma": 0.3})
    refiner = FeatureRefiner(8, cfg)
    assert refiner.adapter.mlp is None
    assert refiner(_feature(), steps=1).gamma.tolist() == pytest.approx([0.3, 0.3])


def _with(refiner: FeatureRefiner, **changes: object) -> FeatureRefiner:
    """The same weights under a changed config."""
    other = FeatureRefiner(
        refiner.channels, RefinerConfig(**{**refiner.config.to_dict(), **changes})
    )
    other.load_state_dict(refiner.state_dict())
    return other


def test_skip_above() -> None:
    x = _feature(3)
    none_skipped = _with(FeatureRefiner(8, SMALL), skip_above=1.0)
    with torch.no_grad():
        out = _with(none_skipped, skip_above=0.0)(x, steps=2)
        assert torch.equal(out.feature, x) and out.steps_run.tolist() == [0, 0, 0]
        full = none_skipped(x, steps=2)
        assert full.steps_run.tolist() == [2, 2, 2] and not torch.equal(full.feature, x)
        # A partial skip: skipped samples are their input, the others what a full run gives.
        threshold = float(full.gamma.sort().values[1:].mean())  # between 2nd and 3rd gamma
        out = _with(none_skipped, skip_above=threshold)(x, steps=2)
    skipped = full.gamma >= threshold
    assert out.steps_run.tolist() == [0 if s else 2 for s in skipped.tolist()]
    assert torch.equal(out.feature[skipped], x[skipped])
    torch.testing.assert_close(out.feature[~skipped], full.feature[~skipped])


def _has_grad(module: torch.nn.Module) -> bool:
    return all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_gradients_reach_every_part() -> None:
    refiner = FeatureRefiner(8, SMALL).train()
    student, teacher = _feature(seed=1), _feature(seed=2)
    refiner(student, steps=2).feature.sum().backward()
    assert _has_grad(refiner.denoiser) and _has_grad(refiner.autoencoder.encoder)
    assert _has_grad(refiner.adapter)
    # Residual decode: the decoder's bias cancels (student + D(x0) - D(z)), its weights learn.
    decoder = refiner.autoencoder.decoder
    assert decoder.weight.grad.abs().sum() > 0 and decoder.bias.grad is None  # not in the graph
    refiner.zero_grad(set_to_none=True)
    refiner.diffusion_loss(teacher, student, torch.Generator().manual_seed(0)).backward()
    assert _has_grad(refiner.denoiser) and _has_grad(refiner.autoencoder.encoder)
    assert refiner.autoencoder.decoder.weight.grad is None  # the loss lives in latent space
    refiner.zero_grad(set_to_none=True)
    refiner.autoencoder_loss(teacher).backward()
    assert _has_grad(refiner.autoencoder)
    out = refiner(student, steps=1)
    loss = refiner.adapter_loss(out.gamma, torch.tensor([1.0, 0.25]))
    assert loss.item() > 0
    loss.backward()
    assert _has_grad(refiner.adapter)


def test_losses_without_autoencoder_and_with_sample_prediction() -> None:
    cfg = RefinerConfig(**{**SMALL.to_dict(), "latent_channels": None, "prediction_type": "sample"})
    refiner = FeatureRefiner(8, cfg)
    teacher = _feature(seed=3)
    assert refiner.autoencoder_loss(teacher).item() == 0.0
    assert torch.isfinite(refiner.diffusion_loss(teacher, _feature(seed=4)))
    assert refiner(teacher, steps=2).feature.shape == teacher.shape
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        refiner.adapter_loss(torch.tensor([0.5]), torch.tensor([1.5]))


@pytest.mark.parametrize(
    ("prediction_type", "start_fraction", "residual"),
    [("sample", 1.0, False), ("epsilon", 0.5, False), ("sample", 1.0, True)],
)
def test_tiny_overfit_lowers_feature_error(
    prediction_type: str, start_fraction: float, residual: bool
) -> None:
    torch.manual_seed(0)
    cfg = RefinerConfig(
        latent_channels=8,
        ae_stride=1,
        hidden=32,
        blocks=1,
        patch=2,
        prediction_type=prediction_type,
        start_fraction=start_fraction,
        residual_decode=residual,
    )
    refiner = FeatureRefiner(8, cfg).train()
    teacher, student = _feature(seed=5), _feature(seed=6)
    student = 0.5 * student + 0.5 * teacher  # a corrupted view of the teacher
    opt = torch.optim.Adam(refiner.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)

    def feature_mse() -> float:
        with torch.no_grad():
            return F.mse_loss(refiner(student, steps=2).feature, teacher).item()

    before = feature_mse()
    for _ in range(150):
        opt.zero_grad(set_to_none=True)
        mse = F.mse_loss(refiner(student, steps=2).feature, teacher)
        (refiner.diffusion_loss(teacher, student, gen) + mse).backward()
        opt.step()
    after = feature_mse()
    unrefined = F.mse_loss(student, teacher).item()
    if residual:  # starts at about the student's error (it never adds noise to the map)
        assert before < 1.5 * unrefined and after < unrefined / 2, (before, after, unrefined)
    else:
        assert after * 5 <= before, (before, after)
    if prediction_type == "sample" and not residual:  # better than not refining at all
        assert after < unrefined / 5, after


def test_start_fraction_runs_the_tail_of_a_longer_schedule() -> None:
    half = FeatureRefiner(8, RefinerConfig(**{**SMALL.to_dict(), "start_fraction": 0.5}))
    top = FeatureRefiner(8, SMALL)
    assert half.sampler(2).timesteps.tolist()[-2:] == [499, 249]
    assert top.sampler(2).timesteps.tolist() == [999, 499]
    assert top.sampler(5).timesteps.tolist() == [999, 799, 599, 399, 199]
    assert half(_feature(), steps=10).steps_run.tolist() == [10, 10]


def test_detached_target_keeps_encoder_gradient_from_the_condition_only() -> None:
    refiner = FeatureRefiner(8, SMALL)
    teacher, student = _feature(seed=1), _feature(seed=2)
    gen = torch.Generator().manual_seed(0)
    refiner.diffusion_loss(teacher, student, gen, detach_target=True).backward()
    assert _has_grad(refiner.autoencoder.encoder)
    refiner.zero_grad(set_to_none=True)
    refiner.diffusion_loss(teacher, student, gen, detach_target=False).backward()
    grad_both = refiner.autoencoder.encoder.weight.grad.clone()
    refiner.zero_grad(set_to_none=True)
    refiner.diffusion_loss(teacher, student, gen.manual_seed(0), detach_target=True).backward()
    assert not torch.equal(grad_both, refiner.autoencoder.encoder.weight.grad)


def test_strided_autoencoder_refines_at_lower_resolution() -> None:
    cfg = RefinerConfig(**{**SMALL.to_dict(), "ae_stride": 2, "patch": 2})
    refiner = FeatureRefiner(8, cfg).train()
    x = _feature()
    assert refiner.autoencoder.encode(x).shape == (2, 4, 8, 8)
    out = refiner(x, steps=2)
    assert out.feature.shape == x.shape
    out.feature.sum().backward()
    assert _has_grad(refiner.denoiser) and _has_grad(refiner.autoencoder.encoder)
    assert refiner.autoencoder.decoder.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="patch \\* ae_stride = 4"):
        refiner(torch.zeros(1, 8, 18, 16))
    with pytest.raises(ValueError, match="ae_stride=2"):
        RefinerConfig(latent_channels=None, ae_stride=2)


def test_residual_decode_keeps_the_student_where_the_latent_is_unchanged() -> None:
    """A denoiser that predicts no correction (x0 = z) leaves the student map untouched, even
    through a strided, narrow autoencoder that cannot reconstruct it."""
    cfg = RefinerConfig(
        **{**SMALL.to_dict(), "ae_stride": 2, "patch": 2, "prediction_type": "sample"}
    )
    refiner = FeatureRefiner(8, cfg).eval()
    refiner.denoiser.denoise = lambda x, t, cond_emb, film=None: torch.zeros_like(x)  # type: ignore[method-assign]
    x = _feature(seed=4)
    with torch.no_grad():
        out = refiner(x, steps=2)
        lossy = refiner.autoencoder.decode(refiner.autoencoder.encode(x))
    assert (lossy - x).abs().max() > 0.1  # the autoencoder alone would lose detail
    torch.testing.assert_close(out.feature, x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 4])
def test_decoded_delta_is_the_difference_of_two_decodes(stride: int) -> None:
    from models.denoiser import LinearAutoencoder

    torch.manual_seed(stride)
    ae = LinearAutoencoder(8, 4, stride)
    torch.nn.init.normal_(ae.decoder.bias)
    a, b = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    base = torch.randn(2, 8, 3 * stride, 5 * stride, requires_grad=True)
    out = ae.add_decoded_delta(base, a - b)
    torch.testing.assert_close(out, base + ae.decode(a) - ae.decode(b))
    out.sum().backward()  # the in-place add keeps the graph: d out / d base = 1
    assert base.grad is not None
    torch.testing.assert_close(base.grad, torch.ones_like(base))


@pytest.mark.parametrize("k", [1, 2, 5])
def test_untrained_sample_refiner_starts_near_identity(k: int) -> None:
    """x0 is the student latent plus the denoiser's correction, whose last layer starts near 0:
    a fresh refiner barely moves the map (an x0 head from scratch moved it by ~100%)."""
    torch.manual_seed(0)
    cfg = RefinerConfig(
        **{**SMALL.to_dict(), "ae_stride": 2, "patch": 2, "prediction_type": "sample"}
    )
    refiner = FeatureRefiner(8, cfg).eval()
    x = _feature(seed=7)
    with torch.no_grad():
        out = refiner(x, steps=k).feature
    assert float((out - x).norm() / x.norm()) < 0.02


def test_masked_diffusion_loss_ignores_teacher_outside_the_mask() -> None:
    cfg = RefinerConfig(
        **{**SMALL.to_dict(), "ae_stride": 2, "patch": 2, "prediction_type": "sample"}
    )
    refiner = FeatureRefiner(8, cfg)
    student, teacher = _feature(seed=8), _feature(seed=9)
    mask = torch.zeros(student.shape[0], 1, *student.shape[2:])
    mask[:, :, :8] = 1.0  # the top half counts
    changed = teacher.clone()
    changed[:, :, 8:] += 5.0  # only outside the mask
    loss = [
        refiner.diffusion_loss(t, student, torch.Generator().manual_seed(3), mask=mask)
        for t in (teacher, changed)
    ]
    torch.testing.assert_close(loss[0], loss[1])
    unmasked = refiner.diffusion_loss(changed, student, torch.Generator().manual_seed(3))
    assert unmasked > 2 * loss[1]
    with pytest.raises(ValueError, match="mask"):
        refiner.diffusion_loss(teacher, student, mask=mask[:, :, :4])


def _gated(stride: int = 4) -> FeatureRefiner:
    cfg = RefinerConfig(
        latent_channels=4, ae_stride=stride, hidden=8, blocks=1, patch=1, readout="gated"
    )
    return FeatureRefiner(8, cfg).eval()


def test_gated_readout_starts_as_the_identity_and_k0_is_the_input() -> None:
    """Both gates start at zero (scale 1) and the correction near zero: a fresh gated refiner
    barely moves the map; K = 0 returns the input tensor itself."""
    torch.manual_seed(1)
    refiner = _gated()
    x = _feature(h=16, w=24, seed=7)
    with torch.no_grad():
        out = refiner(x, steps=2).feature
    assert (out - x).norm() / x.norm() < 0.01
    assert refiner(x, steps=0).feature is x
    refiner.train()(x, steps=2).feature.sum().backward()  # no in-place op breaks the graph
    assert refiner.pillar_gate.weight.grad.abs().sum() > 0
    assert refiner.context_gate.weight.grad.abs().sum() > 0


def test_gated_readout_is_gate_times_pillar_plus_the_block_correction() -> None:
    """readout = student * 2 sigmoid(a . pillar + b . x0(cell)) + decode(x0) - decode(z), the
    decode broadcast over each 4 x 4 block: checked against conv2d + nearest upsampling."""
    torch.manual_seed(2)
    refiner = _gated()
    with torch.no_grad():
        for p in refiner.parameters():
            p.normal_(0.0, 0.3)
        x = _feature(h=16, w=24, seed=8)
        z = refiner.autoencoder.encode(x)
        x0 = z + torch.randn_like(z)
        up = lambda t: F.interpolate(t, scale_factor=4, mode="nearest")  # noqa: E731
        gate, context = refiner.pillar_gate, refiner.context_gate
        scale = 2 * torch.sigmoid(
            F.conv2d(x, gate.weight, gate.bias) + up(F.conv2d(x0, context.weight, context.bias))
        )
        delta = up(F.conv2d(x0 - z, refiner.autoencoder.decoder.weight))
        torch.testing.assert_close(refiner.readout(x, z, x0), x * scale + delta)
        # A strongly negative pillar gate removes that pillar whatever the latent says.
        gate.weight.zero_()
        gate.bias.fill_(-50.0)
        context.weight.zero_()
        assert refiner.readout(x, z, z).abs().max() < 1e-12


def test_block_decode_round_trip_and_config_checks() -> None:
    from models.denoiser import LinearAutoencoder

    torch.manual_seed(3)
    ae = LinearAutoencoder(8, 4, 4, block_decode=True)
    a, b = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    base = torch.randn(2, 8, 12, 20)
    torch.testing.assert_close(
        ae.add_decoded_delta(base, a - b), base + ae.decode(a) - ae.decode(b)
    )
    assert torch.equal(ae.decode(a)[:, :, :4, :4], ae.decode(a)[:, :, :1, :1].expand(-1, -1, 4, 4))
    with pytest.raises(ValueError, match="readout"):
        RefinerConfig(readout="gated", residual_decode=False)
    with pytest.raises(ValueError, match="readout"):
        RefinerConfig.from_dict({"readout": "pixel"})
