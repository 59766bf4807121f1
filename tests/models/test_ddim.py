"""models.ddim: the precomputed eta = 0 DDIM steps equal diffusers' DDIMScheduler.step."""

from __future__ import annotations

import pytest
import torch

from models.ddim import combine, linear_steps
from models.refiner import FeatureRefiner, RefinerConfig, make_scheduler, schedule_length


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("k", [1, 2, 3, 5, 6, 7, 10])
def test_linear_steps_equal_scheduler_step(prediction: str, schedule: str, k: int) -> None:
    config = RefinerConfig(prediction_type=prediction, beta_schedule=schedule)  # type: ignore[arg-type]
    sched = make_scheduler(config)
    sched.set_timesteps(k)
    steps = linear_steps(sched)
    assert [s.timestep for s in steps] == [int(t) for t in sched.timesteps]
    gen = torch.Generator().manual_seed(k)
    x = torch.randn(2, 4, 6, 6, generator=gen)
    m = torch.randn(2, 4, 6, 6, generator=gen)
    for step in steps:  # rtol 1e-4: diffusers works in float32, x0 at t = 999 is ~50x the input
        out = sched.step(m, step.timestep, x, eta=0.0)
        torch.testing.assert_close(combine(x, m, step.prev), out.prev_sample, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            combine(x, m, step.x0), out.pred_original_sample, rtol=1e-4, atol=1e-5
        )


def test_combine_identity_shortcut_returns_the_model_output() -> None:
    m = torch.randn(3)
    assert combine(torch.randn(3), m, (0.0, 1.0)) is m
    torch.testing.assert_close(combine(torch.ones(3), m, (2.0, -1.0)), 2.0 - m)


def test_linear_steps_refuse_what_is_not_linear() -> None:
    sched = make_scheduler(RefinerConfig())
    with pytest.raises(ValueError, match="set_timesteps"):
        linear_steps(sched)
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler

    clipped = DDIMScheduler(clip_sample=True)
    clipped.set_timesteps(2)
    with pytest.raises(ValueError, match="clip_sample"):
        linear_steps(clipped)
    v_pred = DDIMScheduler(prediction_type="v_prediction", clip_sample=False)
    v_pred.set_timesteps(2)
    with pytest.raises(ValueError, match="v_prediction"):
        linear_steps(v_pred)


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize("k", [1, 2, 6])
def test_refiner_sampling_equals_a_loop_over_scheduler_step(prediction: str, k: int) -> None:
    """The refiner's eta = 0 loop gives what the plain diffusers loop gives with its denoiser."""
    torch.manual_seed(0)
    config = RefinerConfig(
        latent_channels=4,
        ae_stride=2,
        hidden=8,
        blocks=1,
        prediction_type=prediction,  # type: ignore[arg-type]
    )
    refiner = FeatureRefiner(6, config).eval()
    for p in refiner.denoiser.parameters():  # a denoiser that does something
        torch.nn.init.normal_(p, std=0.2)
    student = torch.randn(2, 6, 8, 8)
    with torch.no_grad():
        z = refiner.autoencoder.encode(student)
        x = torch.randn_like(z)
        got = refiner._sample(x.clone(), z, k, None, None, 2)
        sched = make_scheduler(config)
        sched.set_timesteps(schedule_length(k, config.start_fraction))
        want = x.clone()
        timesteps = [int(t) for t in sched.timesteps[-k:]]
        for i, t in enumerate(timesteps):
            output = refiner._output(refiner.denoiser(want, t, z), z)
            out = sched.step(output, t, want, eta=0.0)
            want = out.pred_original_sample if i == len(timesteps) - 1 else out.prev_sample
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
