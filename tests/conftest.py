"""Shared fixtures: tiny random priors built locally (no network)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def tiny_prior(dim: int = 32, layers: int = 2, heads: int = 2, head_dim: int = 8, seed: int = 0):
    """A PriorTransformer of the Kandinsky architecture at toy size, with non-trivial random weights and stats."""
    from pops.prior import make_prior

    torch.manual_seed(seed)
    prior = make_prior(embedding_dim=dim, num_layers=layers, num_attention_heads=heads, attention_head_dim=head_dim)
    with torch.no_grad():
        # diffusers zero-initialises the positional and prd embeddings; randomise them so tests see their effect.
        prior.positional_embedding.normal_(0, 0.5)
        prior.prd_embedding.normal_(0, 0.5)
        prior.clip_mean.copy_(torch.randn(1, dim))
        prior.clip_std.copy_(torch.rand(1, dim) + 0.5)
    return prior


@pytest.fixture
def make_tiny_prior():
    return tiny_prior


@pytest.fixture
def tiny_operator():
    from pops.operator import Operator

    def build(kind: str = "texturing", dim: int = 32, text_width: int | None = None, seed: int = 0):
        return Operator.from_prior(tiny_prior(dim=dim, seed=seed), kind, text_width=text_width)

    return build
