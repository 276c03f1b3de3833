"""The condition prefix: keys and values of the condition rows computed once per sampling call give the same x0
predictions as the full compact (and padded) forward at every timestep."""

from __future__ import annotations

import pytest
import torch

from pops.core.prior import Condition, PopsPrior


@pytest.mark.parametrize("k", [1, 2, 5, 12])
def test_prefix_forward_equals_the_full_forward(make_tiny_prior, k):
    model = PopsPrior(make_tiny_prior(dim=32, layers=3, heads=4, head_dim=8)).eval()
    generator = torch.Generator().manual_seed(k)
    rows = torch.randn(3, k, 32, generator=generator)
    mask = torch.ones(3, k, dtype=torch.bool)
    mask[1, -1] = False  # a masked row inside the condition changes nothing either way
    cond = Condition(rows, mask)
    assert model.supports_prefix()
    with torch.no_grad():
        prefix = model.prefix(cond)
        for t in (999, 500, 3):  # one prefix serves every step
            x_t = torch.randn(3, 32, generator=generator)
            full = model(x_t, torch.tensor(t), cond, layout="compact")
            padded = model(x_t, torch.tensor(t), cond, layout="padded")
            reused = model(x_t, torch.tensor(t), cond, prefix=prefix)
            assert (reused - full).abs().max() < 1e-5
            assert (reused - padded).abs().max() < 1e-5


def test_prefix_is_refused_for_the_padded_layout_and_a_wrong_batch(make_tiny_prior):
    model = PopsPrior(make_tiny_prior()).eval()
    cond = Condition(torch.randn(2, 2, 32), torch.ones(2, 2, dtype=torch.bool))
    prefix = model.prefix(cond)
    with pytest.raises(ValueError, match="compact"):
        model(torch.randn(2, 32), torch.tensor(10), cond, layout="padded", prefix=prefix)
    with pytest.raises(ValueError, match="prefix holds 2"):
        model(torch.randn(3, 32), torch.tensor(10), cond, prefix=prefix)
