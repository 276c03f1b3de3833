"""Samplers by name: shapes, determinism with a seed, guidance, step ranges, and the two layouts agreeing."""

from __future__ import annotations

import pytest
import torch

from pops.core.prior import Condition, PopsPrior
from pops.core.sampler import SAMPLERS, get_sampler


@pytest.fixture
def model_and_cond(make_tiny_prior):
    model = PopsPrior(make_tiny_prior(dim=32, layers=2, heads=2, head_dim=8)).eval()
    cond = Condition(
        torch.randn(3, 2, 32, generator=torch.Generator().manual_seed(1)), torch.ones(3, 2, dtype=torch.bool)
    )
    return model, cond


def _run(fn, model, cond, seed=0, **kwargs):
    kwargs = {"guidance_scale": 3.0, "num_inference_steps": 4, **kwargs}
    return fn(model, cond, generator=torch.Generator().manual_seed(seed), **kwargs)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_each_sampler_is_seeded_guided_and_layout_independent(model_and_cond, name):
    model, cond = model_and_cond
    fn = get_sampler(name)
    out = _run(fn, model, cond)
    assert out.shape == (3, 32) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(out, _run(fn, model, cond))  # same seed, same samples
    assert not torch.allclose(out, _run(fn, model, cond, seed=1))  # another seed, other samples
    assert not torch.allclose(out, _run(fn, model, cond, guidance_scale=1.0))  # guidance changes the result
    assert (out - _run(fn, model, cond, layout="padded")).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["ddim", "dpmpp"])
def test_deterministic_samplers_take_one_step_and_draw_only_the_initial_noise(model_and_cond, name):
    model, cond = model_and_cond
    fn = get_sampler(name)
    one = _run(fn, model, cond, num_inference_steps=1, guidance_scale=1.0)
    # One step from t = 999 is the x0 prediction itself, un-normalised.
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(3, 32, generator=generator)
    x0 = model(noise, torch.tensor(999), cond).clamp(-10, 10)
    assert (one - model.denormalize(x0)).abs().max() < 1e-4
    generator = torch.Generator().manual_seed(0)
    fn(model, cond, guidance_scale=2.0, num_inference_steps=8, generator=generator)
    after = torch.Generator().manual_seed(0)
    torch.randn(3, 32, generator=after)
    assert torch.equal(generator.get_state(), after.get_state())  # nothing drawn after the initial noise


def test_ddim_linspace_runs_from_999_to_0_and_equals_ddim_on_those_timesteps(model_and_cond):
    from pops.core.sampler import ddim_scheduler

    model, cond = model_and_cond
    scheduler = ddim_scheduler("linspace")
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [999, 666, 333, 0]
    out = _run(get_sampler("ddim-linspace"), model, cond, guidance_scale=1.0)
    latents = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    for t in scheduler.timesteps:  # the loop written out: x0 at each timestep, a deterministic DDIM step
        with torch.no_grad():
            x0 = model(latents, t, cond).clamp(-10, 10)
        latents = scheduler.step(x0, t, latents).prev_sample
    assert (out - model.denormalize(latents)).abs().max() < 1e-5
    assert not torch.allclose(out, _run(get_sampler("ddim"), model, cond, guidance_scale=1.0))
    with pytest.raises(ValueError, match=r"\[2, 1000\]"):
        _run(get_sampler("ddim-linspace"), model, cond, num_inference_steps=1)


def test_step_ranges_and_unknown_names_are_refused(model_and_cond):
    model, cond = model_and_cond
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        get_sampler("euler")
    with pytest.raises(ValueError, match=r"\[2, 1000\]"):
        _run(get_sampler("unclip"), model, cond, num_inference_steps=1)
    with pytest.raises(ValueError, match=r"\[1, 1000\]"):
        _run(get_sampler("ddim"), model, cond, num_inference_steps=1001)
