"""Shared fixtures: tiny random priors and tokenizers built locally (no network), one torch thread."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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


@pytest.fixture
def make_tiny_prior():
    return tiny_prior


@pytest.fixture
def tiny_operator():
    from pops.operators.operator import Operator

    def build(kind: str = "texturing", dim: int = 32, text_width: int | None = None, seed: int = 0):
        return Operator.from_prior(tiny_prior(dim=dim, seed=seed), kind, text_width=text_width)

    return build


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny models (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`):
    a second intra-op thread buys nothing at that size and, on a busy 2-core machine, every op then waits for it
    (measured 0.7 ms vs 26 ms per conv under load; tiny priors train ~10x faster). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_byte_clip_tokenizer(folder: Path, max_length: int = 77):
    """A CLIP BPE tokenizer with one token per byte character and no merges (any word tokenizes), written in the
    real file layout; ids end with BOS, EOS as in CLIP. Returns it loaded from `folder`."""
    from transformers import CLIPTokenizer

    # CLIP's byte-level alphabet: printable Latin-1 characters stand for themselves, the other bytes for 256 + n.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in printable] + [chr(256 + n) for n in range(256 - len(printable))]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_length}))
    return CLIPTokenizer.from_pretrained(str(folder))
