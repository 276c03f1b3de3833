"""Building the model a run trains: the init options, and what decides which weights learn.

* init: `kandinsky` (the Kandinsky 2.2 prior, hub id or local folder), `operator:<folder>` (another trained operator —
  the paper reports faster convergence), `scratch` (a fresh prior of the configured size, clip statistics computed
  from the training embeddings).
* LoRA adapters through peft (`PriorTransformer.add_adapter`), or training only the first N transformer blocks.
* Gradient checkpointing per transformer block: PriorTransformer does not declare diffusers' gradient-checkpointing
  support, and the compact layout loops over the blocks itself, so each block's forward is wrapped instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig
from torch.utils.checkpoint import checkpoint

from pops.core.prior import PopsPrior, make_prior
from pops.embeddings.pairs import Pairs
from pops.operators.checkpoint import load_kandinsky_prior
from pops.operators.folder import load_operator_folder
from pops.train.config import TrainConfig

log = logging.getLogger(__name__)
MIN_STD = 1e-6


def text_width_of(pairs: Pairs | Sequence[Pairs]) -> int | None:
    """Width of the text token rows in the data (None when no operator has a text slot)."""
    sets = [pairs] if isinstance(pairs, Pairs) else list(pairs)
    widths = {s[0].shape[-1] for p in sets for s in p.slots if isinstance(s, tuple)}
    if len(widths) > 1:
        raise ValueError(f"text slots of different widths {sorted(widths)}")
    return widths.pop() if widths else None


def embedding_stats(pairs: Pairs | Sequence[Pairs]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over the training targets and every present image input (of every operator's
    pairs, for a joint run: one normalisation for the one prior)."""
    rows = []
    for p in [pairs] if isinstance(pairs, Pairs) else pairs:
        rows.append(p.target.float())
        for i, slot in enumerate(p.slots):
            if not isinstance(slot, tuple):
                rows.append(slot[p.present[:, i].bool()].float())
    data = torch.cat(rows)
    return data.mean(0), data.std(0).clamp_min(MIN_STD)


def build_model(config: TrainConfig, pairs: Pairs | Sequence[Pairs]) -> PopsPrior:
    """The initial PopsPrior for `config.init`, checked against the data's embedding and text widths; for a joint
    run (`config.operators`), with a learned operator row per operator (fresh unless the init already has them)."""
    sets = [pairs] if isinstance(pairs, Pairs) else list(pairs)
    dims = {p.target.shape[1] for p in sets}
    if len(dims) > 1:
        raise ValueError(f"the operators' training embeddings have different widths {sorted(dims)}")
    dim = dims.pop()
    text_width = text_width_of(sets)
    if config.init == "scratch":
        m = config.model
        if m.embedding_dim != dim:
            raise ValueError(f"model.embedding_dim is {m.embedding_dim} but the training embeddings are {dim}-d")
        prior = make_prior(
            m.embedding_dim, m.num_layers, m.num_attention_heads, m.attention_head_dim, dropout=m.dropout
        )
        model = PopsPrior(prior, text_width=text_width)
        mean, std = embedding_stats(sets)
        if m.clip_std == "shared":  # one std for every dimension (see ModelConfig.clip_std)
            std = torch.full_like(std, float(std.pow(2).mean().sqrt()))
        model.set_clip_stats(mean, std)
    elif config.init == "kandinsky":
        model = PopsPrior(load_kandinsky_prior(config.kandinsky_prior), text_width=text_width)
    else:
        folder = Path(config.init.split(":", 1)[1])
        model, saved = load_operator_folder(folder)
        if saved.get("kind") != config.operator:
            log.info("initialising %s from a %s operator (%s)", config.operator, saved.get("kind"), folder)
        if text_width is not None and model.text_width != text_width:
            if model.text_proj is not None:
                raise ValueError(f"{folder}: its text rows are {model.text_width}-wide, the data's {text_width}")
            # e.g. instruct initialised from an image-only operator: a fresh projection for the new text rows
            model.text_proj = torch.nn.Linear(text_width, model.embedding_dim)
    if config.joint and not model.operators:
        model.add_operator_rows(config.operators)
    missing = [k for k in config.kinds if model.operators and k not in model.operators]
    if missing:
        raise ValueError(f"the initial prior has operator rows for {', '.join(model.operators)}, not {missing}")
    if model.embedding_dim != dim:
        raise ValueError(f"the initial prior is {model.embedding_dim}-d but the training embeddings are {dim}-d")
    if not model.has_clip_stats():
        raise ValueError("the initial prior has no clip statistics (clip_std is zero)")
    return model


def add_lora(model: PopsPrior, rank: int, alpha: float, dropout: float, target_modules) -> None:
    """Inject LoRA adapters (peft) into the prior's attention projections; everything else is frozen except a fresh
    text projection (it has no pretrained value to keep)."""
    lora = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), init_lora_weights=True
    )
    model.prior.add_adapter(lora)  # freezes the base weights, leaves only the adapters trainable
    if not any(p.requires_grad for p in model.prior.parameters()):
        raise ValueError(f"lora.target_modules {list(target_modules)} match no layer of the prior")


def merge_lora(model: PopsPrior) -> None:
    """Fold the adapters into the base weights and remove them, so the saved operator is a plain prior."""
    if getattr(model.prior, "_hf_peft_config_loaded", False):
        model.prior.fuse_lora()
        model.prior.unload_lora()


def train_first_blocks(model: PopsPrior, n: int) -> None:
    """Freeze everything except transformer blocks [0, n) (and a text projection, which starts untrained)."""
    blocks = model.prior.transformer_blocks
    if n > len(blocks):
        raise ValueError(f"train_blocks is {n} but the prior has {len(blocks)} blocks")
    model.prior.requires_grad_(False)
    for block in blocks[:n]:
        block.requires_grad_(True)


def enable_block_checkpointing(model: PopsPrior) -> None:
    """Recompute each transformer block's activations in the backward pass instead of storing them."""
    for block in model.prior.transformer_blocks:
        forward = block.forward

        def checkpointed(hidden_states, *args, _forward=forward, **kwargs):
            if not torch.is_grad_enabled():
                return _forward(hidden_states, *args, **kwargs)
            return checkpoint(_forward, hidden_states, *args, use_reentrant=False, **kwargs)

        block.forward = checkpointed  # an instance attribute: the state dict and module tree stay the same


def configure_trainable(model: PopsPrior, config: TrainConfig) -> None:
    """Apply LoRA / first-N-blocks / gradient checkpointing as configured; the clip statistics never train."""
    if config.lora.enabled:
        add_lora(model, config.lora.rank, config.lora.alpha, config.lora.dropout, config.lora.target_modules)
    elif config.train_blocks:
        train_first_blocks(model, config.train_blocks)
    if model.text_proj is not None:
        model.text_proj.requires_grad_(True)
    if model.operator_rows is not None:  # like the text projection: learned for this run's operators
        model.operator_rows.requires_grad_(True)
    model.prior.clip_mean.requires_grad_(False)
    model.prior.clip_std.requires_grad_(False)
    if config.gradient_checkpointing:
        enable_block_checkpointing(model)
