"""Tiny priors and operators: the Kandinsky prior's architecture at toy size, with non-trivial random weights."""

from __future__ import annotations

import torch

PICTURE_WIDTH = 1280  # the embedded EfficientNet encoder's width: an operator of this width takes pictures


def tiny_prior(dim: int = 32, layers: int = 2, heads: int = 2, head_dim: int = 8, seed: int = 0):
    """A PriorTransformer of the Kandinsky architecture at toy size, with non-trivial random weights and stats."""
    from pops.core.prior import make_prior

    torch.manual_seed(seed)
    prior = make_prior(embedding_dim=dim, num_layers=layers, num_attention_heads=heads, attention_head_dim=head_dim)
    with torch.no_grad():
        # diffusers zero-initialises the positional and prd embeddings; randomise them so tests see their effect.
        prior.positional_embedding.normal_(0, 0.5)
        prior.prd_embedding.normal_(0, 0.5)
        prior.clip_mean.copy_(torch.randn(1, dim))
        prior.clip_std.copy_(torch.rand(1, dim) + 0.5)
    return prior


def tiny_operator(kind: str = "texturing", dim: int = 32, text_width: int | None = None, seed: int = 0):
    """An operator of `kind` on a tiny prior (the `tiny_operator` fixture hands out this builder)."""
    from pops.operators.operator import Operator

    return Operator.from_prior(tiny_prior(dim=dim, seed=seed), kind, text_width=text_width)


def picture_operator(kind: str = "texturing", seed: int = 0):
    """A one-layer operator of the EfficientNet encoder's width that takes pictures (encoded at 32 px, fp32)."""
    from pops.operators.operator import Operator

    prior = tiny_prior(dim=PICTURE_WIDTH, layers=1, heads=2, head_dim=8, seed=seed)
    op = Operator.from_prior(prior, kind)
    op.encoder_configs = {"image": {"type": "efficientnet", "resolution": 32, "bf16": False}}
    return op
