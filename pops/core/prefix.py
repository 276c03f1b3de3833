"""The condition prefix: what a sampling call computes once (pops.core.prior.PopsPrior.prefix) and every step reuses.

Under the prior's causal mask the condition rows and the proj token attend only to each other, so their keys and
values are the same at every step; `attend` runs one pre-norm transformer block (self-attention and feed-forward, as
diffusers' BasicTransformerBlock computes it) whose queries also see those earlier keys and values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Prefix:
    """Per transformer block, the keys and values (B, rows, inner) of the condition tokens (the condition rows and
    the proj token); the condition mask (B, k) and the tokens' positions."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
    positions: torch.Tensor

    def cat(self, other: Prefix) -> Prefix:
        return Prefix(
            [torch.cat(p) for p in zip(self.keys, other.keys)],
            [torch.cat(p) for p in zip(self.values, other.values)],
            torch.cat([self.mask, other.mask]),
            self.positions,
        )


def plain_block(block) -> bool:
    attn = block.attn1
    return (
        block.norm_type == "layer_norm"
        and block.attn2 is None
        and block.pos_embed is None
        and block._chunk_size is None
        and not attn.residual_connection
        and attn.rescale_output_factor == 1.0
        and attn.norm_q is None
        and attn.norm_k is None
        and attn.group_norm is None
        and attn.spatial_norm is None
    )


def attend(block, hidden, past_keys, past_values, bias):
    """One pre-norm transformer block (self-attention + feed-forward, as diffusers' BasicTransformerBlock computes
    it) whose queries also see earlier keys/values. Returns (hidden, this block's new keys, new values)."""
    attn = block.attn1
    normed = block.norm1(hidden)
    new_keys, new_values = attn.to_k(normed), attn.to_v(normed)
    keys = new_keys if past_keys is None else torch.cat([past_keys, new_keys], 1)
    values = new_values if past_values is None else torch.cat([past_values, new_values], 1)
    batch, heads = hidden.shape[0], attn.heads

    def split(x):
        return x.view(batch, -1, heads, x.shape[-1] // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(attn.to_q(normed)), split(keys), split(values), attn_mask=bias)
    out = attn.to_out[0](out.transpose(1, 2).reshape(batch, -1, attn.inner_dim))
    hidden = hidden + out
    hidden = hidden + block.ff(block.norm3(hidden))
    return hidden, new_keys, new_values
