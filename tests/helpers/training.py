"""Tiny training runs: their settings, and the weights they change."""

from __future__ import annotations

import json
from pathlib import Path

import torch

DIM = 32  # the tiny runs' embedding width (make_pairs' default)


def tiny_settings(data: Path, output_dir: Path) -> dict:
    """The settings of a tiny scratch texturing run on the pairs file `data`: a 2-layer 32-d prior, 6 steps of batch 4,
    nothing logged, checkpointed or validated."""
    return dict(
        operator="texturing",
        data=str(data),
        output_dir=str(output_dir),
        init="scratch",
        model=dict(embedding_dim=DIM, num_layers=2, num_attention_heads=2, attention_head_dim=16),
        max_steps=6,
        batch_size=4,
        optim=dict(lr=1e-3),
        progress=False,
        logging=dict(every=0),
        checkpoint=dict(every=0, at_end=False),
        validation=dict(every=0),
    )


def tiny_config(tmp_path: Path, **overrides):
    """The TrainConfig of tiny_settings (data tmp_path/pairs.safetensors, output tmp_path/run), each override applied
    as `pops train -o key=value` applies it (the value as JSON)."""
    from pops.train.config import apply_overrides, config_from_dict

    base = tiny_settings(tmp_path / "pairs.safetensors", tmp_path / "run")
    return config_from_dict(apply_overrides(base, [f"{k}={json.dumps(v)}" for k, v in overrides.items()]))


def weights(model) -> dict[str, torch.Tensor]:
    """A copy of a model's state dict (what it is now, whatever training does to it later)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_diff(a: dict, b: dict, keys=None) -> float:
    """The largest absolute difference between two state dicts, over `keys` (default: all of a's)."""
    keys = keys if keys is not None else a.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in keys)
