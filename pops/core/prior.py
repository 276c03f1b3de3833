"""The operator network: a `diffusers.PriorTransformer` conditioned on a few embedding rows, in two layouts.

* `padded` — the reference layout: `encoder_hidden_states` is (B, 77, D) zeros whose first k rows hold the
  condition, `attention_mask` is 1 on rows [0, k), `proj_embedding` is zeros. This is diffusers' own forward.
* `compact` — the same function on a k + 4 token sequence. Masked keys receive -10000 before the softmax, which
  underflows to exactly 0, so the 77 - k padding rows never influence the output token; dropping them and keeping
  the positional embeddings (and causal mask) of the kept positions computes the same thing with ~(81 / (k + 4))×
  fewer FLOPs.

A joint prior (`operators` given: one prior for several operators, pops.operators.joint) holds a learned (num_operators,
D) table of operator rows; each operator's condition starts with its own row, which classifier-free guidance's null
condition keeps (it zeroes only the slot rows), so the unconditional prediction is still that operator's.

Everything public works in *raw* embedding space; conditions and targets are normalised with the prior's own
`clip_mean` / `clip_std` (which a freshly built PriorTransformer initialises to zeros, as trainable parameters:
`set_clip_stats` fills them and freezes them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import PriorTransformer
from torch import nn

from pops.base.reference import LAYOUTS
from pops.base.registry import OperatorSpec
from pops.core.prefix import Prefix, attend, plain_block

# A text slot's input: (B, T, W) token rows and their (B, T) bool mask.
TextRows = tuple[torch.Tensor, torch.Tensor]
SlotInput = torch.Tensor | TextRows | None


def make_prior(
    embedding_dim: int = 1280,
    num_layers: int = 20,
    num_attention_heads: int = 32,
    attention_head_dim: int = 64,
    **overrides,
) -> PriorTransformer:
    """A PriorTransformer with the Kandinsky 2.2 prior's architecture options (defaults: its exact size)."""
    config = dict(
        embedding_dim=embedding_dim,
        num_layers=num_layers,
        num_attention_heads=num_attention_heads,
        attention_head_dim=attention_head_dim,
        num_embeddings=77,
        additional_embeddings=4,
        added_emb_type="prd",
        encoder_hid_proj_type="linear",
        norm_in_type=None,
        embedding_proj_norm_type=None,
    )
    config.update(overrides)
    return PriorTransformer(**config)


@dataclass
class Condition:
    """Condition rows in the prior's input space: (B, k, D) rows (normalised images, projected text), (B, k) mask.
    `fixed`: how many leading rows are not inputs (a joint prior's operator row) and stay in the null condition."""

    rows: torch.Tensor
    mask: torch.Tensor
    fixed: int = 0

    def null(self) -> Condition:
        """The classifier-free-guidance null condition: the slot rows zero, the fixed rows and the mask kept."""
        rows = torch.cat([self.rows[:, : self.fixed], torch.zeros_like(self.rows[:, self.fixed :])], 1)
        return Condition(rows, self.mask, self.fixed)

    def repeat(self, times: int) -> Condition:
        """Each sample's rows `times` times in a row (sample 0, 0, …, 1, 1, …)."""
        return Condition(self.rows.repeat_interleave(times, 0), self.mask.repeat_interleave(times, 0), self.fixed)

    @staticmethod
    def cat(conditions: Sequence[Condition]) -> Condition:
        fixed = {c.fixed for c in conditions}
        if len(fixed) > 1:
            raise ValueError(f"conditions with different numbers of fixed rows {sorted(fixed)} cannot be batched")
        rows, mask = torch.cat([c.rows for c in conditions]), torch.cat([c.mask for c in conditions])
        return Condition(rows, mask, fixed.pop())


class PopsPrior(nn.Module):
    """A PriorTransformer plus what an operator needs around it: normalisation, condition rows, the two layouts.

    `text_width`: width of the text encoder's token rows when it differs from the embedding width; a learned linear
    projection then maps text rows into the prior's condition space. `operators`: the operator names of a joint
    prior, in the order of its learned operator rows (none: an ordinary prior, one operator's condition rows only).
    """

    def __init__(self, prior: PriorTransformer, text_width: int | None = None, operators: Sequence[str] = ()):
        super().__init__()
        self.prior = prior
        dim = prior.config.embedding_dim
        self.text_proj = nn.Linear(text_width, dim) if text_width and text_width != dim else None
        self.operators: tuple[str, ...] = ()
        self.register_parameter("operator_rows", None)
        if operators:
            self.add_operator_rows(operators)
        self._freeze_clip_stats()

    def add_operator_rows(self, operators: Sequence[str]) -> None:
        """Make this a joint prior for `operators`: a fresh learned row per operator, drawn like a normalised
        embedding (unit scale per dimension) so that each starts as distinct from the others as two inputs are."""
        if self.operators:
            raise ValueError(f"the prior already has operator rows ({', '.join(self.operators)})")
        if len(set(operators)) != len(operators):
            raise ValueError(f"operator names repeat: {list(operators)}")
        self.operators = tuple(operators)
        self.operator_rows = nn.Parameter(torch.randn(len(operators), self.embedding_dim))

    # ----- normalisation -------------------------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return self.prior.config.embedding_dim

    @property
    def text_width(self) -> int:
        return self.text_proj.in_features if self.text_proj is not None else self.embedding_dim

    def _freeze_clip_stats(self) -> None:
        # The statistics are data, not weights: never let an optimiser touch them.
        self.prior.clip_mean.requires_grad_(False)
        self.prior.clip_std.requires_grad_(False)

    @torch.no_grad()
    def set_clip_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        mean, std = mean.reshape(1, -1).float(), std.reshape(1, -1).float()
        if mean.shape[1] != self.embedding_dim or std.shape[1] != self.embedding_dim:
            raise ValueError(f"clip statistics of width {mean.shape[1]}/{std.shape[1]}, expected {self.embedding_dim}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()) or (std <= 0).any():
            raise ValueError("clip statistics must be finite with a positive std")
        self.prior.clip_mean.copy_(mean)
        self.prior.clip_std.copy_(std)
        self._freeze_clip_stats()

    @contextmanager
    def sampling_mode(self) -> Iterator[None]:
        """Eval mode for one sampling call (no dropout), the caller's mode restored after: a loaded prior starts in
        train mode, and the trainer samples its validation mid-training."""
        training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(training)

    def has_clip_stats(self) -> bool:
        return bool((self.prior.clip_std != 0).all())

    def _check_stats(self) -> None:
        if not self.has_clip_stats():
            raise ValueError(
                "the prior's clip_std is zero (a freshly built PriorTransformer): set the embedding statistics with "
                "PopsPrior.set_clip_stats(mean, std) or load a prior that has them"
            )

    def normalize(self, embeds: torch.Tensor) -> torch.Tensor:
        self._check_stats()
        return (embeds - self.prior.clip_mean) / self.prior.clip_std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        self._check_stats()
        return self.prior.post_process_latents(latents)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # ----- conditions ----------------------------------------------------------------------------------------
    def condition(self, spec: OperatorSpec, slots: Sequence[SlotInput], drop: torch.Tensor | None = None) -> Condition:
        """Condition rows for one batch, in slot order.

        `slots[i]` is a raw (B, D) embedding for an image slot, a `TextRows` for a text slot, or None (dropped for the
        whole batch). `drop` is an optional (B, num_slots) bool mask of per-sample drops. A dropped slot becomes zero
        rows with the mask kept at 1 — the null condition of classifier-free guidance. A joint prior puts the
        operator's own row first (never dropped).
        """
        if len(slots) != spec.num_slots:
            raise ValueError(
                f"{spec.kind} takes {spec.num_slots} inputs ({', '.join(spec.slot_names)}), got {len(slots)}"
            )
        batch = _batch_size(slots, drop)
        device, dtype = self.prior.clip_mean.device, torch.float32
        rows, masks = [], []
        for i, (slot, value) in enumerate(zip(spec.slots, slots)):
            if slot.kind == "text":
                if value is None:
                    r = torch.zeros(batch, slot.null_rows, self.embedding_dim, device=device, dtype=dtype)
                    m = torch.ones(batch, slot.null_rows, dtype=torch.bool, device=device)
                else:
                    text, m = value
                    r = self.project_text(text.to(device, dtype))
                    m = m.to(device, torch.bool)
            else:
                r = (
                    torch.zeros(batch, 1, self.embedding_dim, device=device, dtype=dtype)
                    if value is None
                    else self.normalize(value.to(device, dtype))[:, None]
                )
                m = torch.ones(batch, 1, dtype=torch.bool, device=device)
            if drop is not None:
                r = r * (~drop[:, i].to(device))[:, None, None]
            rows.append(r.expand(batch, -1, -1))
            masks.append(m.expand(batch, -1))
        fixed = 0
        if self.operators:
            if spec.kind not in self.operators:
                raise ValueError(f"this joint prior holds the operators {', '.join(self.operators)}, not {spec.kind!r}")
            row = self.operator_rows[self.operators.index(spec.kind)].to(device, dtype)
            rows.insert(0, row.expand(batch, 1, -1))
            masks.insert(0, torch.ones(batch, 1, dtype=torch.bool, device=device))
            fixed = 1
        return Condition(torch.cat(rows, 1), torch.cat(masks, 1), fixed)

    def project_text(self, rows: torch.Tensor) -> torch.Tensor:
        if rows.shape[-1] != self.text_width:
            raise ValueError(f"text rows of width {rows.shape[-1]}, this operator expects {self.text_width}")
        return self.text_proj(rows) if self.text_proj is not None else rows

    # ----- the network ---------------------------------------------------------------------------------------
    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition, layout: str = "compact", prefix: Prefix | None = None
    ) -> torch.Tensor:
        """Predict x0 (normalised) from x_t at timestep(s) t; returns float32 (B, D). `prefix` (compact layout only):
        the condition's keys and values from `self.prefix(cond)`, computed once for every step of a sampling call."""
        dtype = self.prior.dtype
        x_t, rows = x_t.to(dtype), cond.rows.to(dtype)
        if prefix is not None:
            if layout != "compact":
                raise ValueError("a condition prefix is computed for the compact layout only")
            out = self._suffix_forward(x_t, t, prefix)
        elif layout == "padded":
            out = self._padded_forward(x_t, t, rows, cond.mask)
        elif layout == "compact":
            out = self._compact_forward(x_t, t, rows, cond.mask)
        else:
            raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        return out.float()

    def _padded_forward(self, x_t, t, rows, mask):
        prior = self.prior
        batch, k, dim = rows.shape
        num_rows = self._check_rows(k)
        hidden = rows.new_zeros(batch, num_rows, dim)
        hidden[:, :k] = rows
        full_mask = mask.new_zeros(batch, num_rows)
        full_mask[:, :k] = mask
        proj = rows.new_zeros(batch, dim)
        return prior(
            x_t, t, proj_embedding=proj, encoder_hidden_states=hidden, attention_mask=full_mask
        ).predicted_image_embedding

    # ----- the compact layout: the condition tokens (rows, proj) then the step tokens (time, x_t, prd) -------------
    # Its sequence keeps the positions [0, k) of the condition rows and the 4 additional positions at the end of the
    # 81-long table (proj, time, x_t, prd). Under the prior's causal mask the condition tokens attend only to each
    # other: their keys and values are the same at every step and for every x_t, so a sampling call computes them
    # once (`prefix`) and each step runs only the step tokens against them (`_suffix_forward`).
    def _check_rows(self, k: int) -> int:
        num_rows = self.prior.config.num_embeddings
        if k > num_rows:
            raise ValueError(f"{k} condition rows do not fit the prior's {num_rows} positions")
        return num_rows

    def _condition_tokens(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, positions) of the condition rows and the constant zero proj_embedding token."""
        prior = self.prior
        batch, k, dim = rows.shape
        num_rows = self._check_rows(k)
        proj = rows.new_zeros(batch, dim)
        if prior.embedding_proj_norm is not None:
            proj = prior.embedding_proj_norm(proj)
        tokens = torch.cat([prior.encoder_hidden_states_proj(rows), prior.embedding_proj(proj)[:, None]], 1)
        return tokens, torch.cat([torch.arange(k), torch.tensor([num_rows])]).to(rows.device)

    def _step_tokens(self, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, positions) of the timestep, x_t and the prd token (whose output is the prediction)."""
        prior = self.prior
        batch, num_rows = x_t.shape[0], prior.config.num_embeddings
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(batch)
        time = prior.time_embedding(prior.time_proj(t).to(x_t.dtype))
        prd = prior.prd_embedding.to(x_t.dtype).expand(batch, -1, -1)
        tokens = torch.cat([time[:, None], prior.proj_in(x_t)[:, None], prd], 1)
        return tokens, torch.arange(num_rows + 1, num_rows + prior.additional_embeddings, device=x_t.device)

    def _embed(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Tokens with the positional embeddings of their positions (and the prior's input norm, if any)."""
        # (the prior's own precision: under autocast, bf16 tokens plus float32 positions add in float32)
        hidden = tokens + self.prior.positional_embedding[:, positions].to(self.prior.dtype)
        return self.prior.norm_in(hidden) if self.prior.norm_in is not None else hidden

    def _bias(self, mask: torch.Tensor, query: torch.Tensor, key: torch.Tensor, extra: int) -> torch.Tensor:
        """The attention bias of queries at positions `query` over keys at `key`: the causal mask, and -10000 on the
        masked condition rows (`mask`, (B, k)); `extra` unmasked keys follow the condition rows."""
        dtype = self.prior.dtype
        key_bias = F.pad((1 - mask.to(dtype)) * -10000.0, (0, extra), value=0.0)
        causal = self.prior.causal_attention_mask[:, query][:, :, key].to(dtype)
        return key_bias[:, None, :] + causal

    def _compact_forward(self, x_t, t, rows, mask):
        prior = self.prior
        cond, cond_positions = self._condition_tokens(rows)
        step, step_positions = self._step_tokens(x_t, t)
        positions = torch.cat([cond_positions, step_positions])
        hidden = self._embed(torch.cat([cond, step], 1), positions)
        bias = self._bias(mask, positions, positions, extra=len(positions) - mask.shape[1])
        bias = bias.repeat_interleave(prior.config.num_attention_heads, dim=0)
        for block in prior.transformer_blocks:
            hidden = block(hidden, attention_mask=bias)
        return prior.proj_to_clip_embeddings(prior.norm_out(hidden)[:, -1])

    def supports_prefix(self) -> bool:
        """True when every block is the plain pre-norm self-attention block the prefix path re-implements."""
        return all(plain_block(block) for block in self.prior.transformer_blocks)

    @torch.no_grad()
    def prefix(self, cond: Condition) -> Prefix:
        """The condition tokens' keys and values in every block (computed once for every step of a sampling call)."""
        tokens, positions = self._condition_tokens(cond.rows.to(self.prior.dtype))
        hidden = self._embed(tokens, positions)
        bias = self._bias(cond.mask, positions, positions, extra=1)[:, None]
        keys, values = [], []
        for block in self.prior.transformer_blocks:
            hidden, key, value = attend(block, hidden, None, None, bias)
            keys.append(key)
            values.append(value)
        return Prefix(keys, values, cond.mask, positions)

    def _suffix_forward(self, x_t, t, prefix: Prefix):
        prior = self.prior
        if prefix.keys[0].shape[0] != x_t.shape[0]:
            raise ValueError(f"the prefix holds {prefix.keys[0].shape[0]} conditions, x_t {x_t.shape[0]} rows")
        tokens, positions = self._step_tokens(x_t, t)
        hidden = self._embed(tokens, positions)
        keys = torch.cat([prefix.positions, positions])
        bias = self._bias(prefix.mask, positions, keys, extra=len(keys) - prefix.mask.shape[1])[:, None]
        for block, key, value in zip(prior.transformer_blocks, prefix.keys, prefix.values):
            hidden, _, _ = attend(block, hidden, key, value, bias)
        return prior.proj_to_clip_embeddings(prior.norm_out(hidden)[:, -1])


def _batch_size(slots: Sequence[SlotInput], drop: torch.Tensor | None) -> int:
    sizes = {(v[0] if isinstance(v, tuple) else v).shape[0] for v in slots if v is not None}
    if drop is not None:
        sizes.add(drop.shape[0])
    if len(sizes) > 1:
        raise ValueError(f"inputs have different batch sizes: {sorted(sizes)}")
    if not sizes:
        raise ValueError("every input is dropped and no batch size is given")
    return sizes.pop()
