"""The one-pass objective (ECLIPSE): `objective: one-pass` trains noise + condition -> target at t = 999, and the
operator it saves is called in that one pass (ddim, 1 step) by default."""

from __future__ import annotations

import pytest
import torch

from pops.core.objective import make_training_scheduler, prior_input
from pops.operators.operator import Operator
from tests.helpers.pairs import make_pairs
from tests.helpers.training import DIM, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_one_pass_input_is_pure_noise_at_the_last_timestep():
    scheduler = make_training_scheduler()
    target = torch.randn(6, DIM)
    x_t, t = prior_input("one-pass", target, scheduler, torch.Generator().manual_seed(0))
    other, _ = prior_input("one-pass", target + 5, scheduler, torch.Generator().manual_seed(0))
    assert torch.equal(t, torch.full((6,), 999))
    assert torch.equal(x_t, other)  # the target never leaks into the input
    assert torch.equal(x_t, torch.randn(6, DIM, generator=torch.Generator().manual_seed(0)))
    # The diffusion input depends on the target and draws its timesteps.
    noised, steps = prior_input("diffusion", target, scheduler, torch.Generator().manual_seed(0))
    assert not torch.equal(noised, prior_input("diffusion", target + 5, scheduler, torch.Generator().manual_seed(0))[0])
    assert steps.unique().numel() > 1
    with pytest.raises(ValueError, match="objective: one of diffusion, one-pass"):
        prior_input("consistency", target, scheduler)


def test_one_pass_training_saves_a_one_pass_operator(tmp_path):
    from pops.train import train

    pairs = make_pairs(n=64)
    config = tiny_config(
        tmp_path,
        objective="one-pass",
        max_steps=80,
        batch_size=16,
        validation={"every": 40, "num_samples": 8},
    )
    train(config, pairs=pairs)
    op = Operator.from_pretrained(tmp_path / "run")
    assert (op.sampler, op.num_inference_steps) == ("ddim", 1) and op.training["summary"]["objective"] == "one-pass"
    card = (tmp_path / "run" / "README.md").read_text()
    assert "one-pass prior" in card and "ECLIPSE" in card and "| default sampling | ddim, 1 step |" in card
    # It learned the map in one pass: far closer to the targets than the same prior untrained.
    fresh = Operator(train(tiny_config(tmp_path / "fresh", max_steps=1, optim={"lr": 1e-12}), pairs=pairs), "texturing")
    kwargs = dict(guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
    trained_error = (op.sample_batch(pairs, **kwargs) - pairs.target).pow(2).mean()
    kwargs["generator"] = torch.Generator().manual_seed(0)
    fresh_error = (fresh.sample_batch(pairs, sampler="ddim", num_inference_steps=1, **kwargs) - pairs.target).pow(2)
    assert trained_error < 0.5 * fresh_error.mean(), (trained_error, fresh_error.mean())


def test_unknown_objective_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="objective: one of diffusion, one-pass, got 'flow'"):
        tiny_config(tmp_path, objective="flow")
