"""Encoders: images and words to embeddings. The embedded world and the real CLIP stack implement the same protocols.

Each encoder imports its network's library (transformers, the EfficientNet wheels) when it is built, not when its
module is: an operator loaded to sample embeddings, or a models folder listed, never pays for them."""

from __future__ import annotations

import importlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from pops.base.files import digest


@runtime_checkable
class Encoder(Protocol):
    """Maps a batch of inputs of one modality ("image": PIL images, "text": strings) to (N, dim) float32 embeddings."""

    modality: str
    dim: int

    def encode(self, items: Sequence[Any], *, batch_size: int = 32, progress: bool = False) -> torch.Tensor: ...


@runtime_checkable
class TextEncoder(Encoder, Protocol):
    """A text encoder that also gives the per-token rows instruct is conditioned on.

    `token_rows(texts)` returns one (T_i, width) float32 tensor per text: the encoder's last hidden state at the
    unmasked tokens (for CLIP: BOS, the word's tokens, EOS), neither normalised nor projected.
    """

    width: int

    def token_rows(self, texts: Sequence[str]) -> list[torch.Tensor]: ...


def pad_rows(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(T_i, W) token rows → zero-padded (N, T, W) rows and the (N, T) mask (False on the padding)."""
    length = max(r.shape[0] for r in rows)
    out = torch.zeros(len(rows), length, rows[0].shape[1])
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]], mask[i, : r.shape[0]] = r, True
    return out, mask


def each_text_once(encode, texts: Sequence[str]) -> list:
    """`encode(texts)` (one result per text) run on each distinct text once, in `texts`' order: a split of pairs
    says each of its few words or captions hundreds of times."""
    distinct = list(dict.fromkeys(texts))
    table = dict(zip(distinct, encode(distinct)))
    return [table[text] for text in texts]


# Encoders an operator folder can name in its config ({"type": ..., **options}); each class has
# `from_config(config)` and `to_config()`.
ENCODER_TYPES = {
    "efficientnet": "pops.encoders.efficientnet:EfficientNetEncoder",
    "minilm": "pops.encoders.minilm:MiniLMEncoder",
    "clip-image": "pops.encoders.clip:CLIPImageEncoder",
    "clip-text": "pops.encoders.clip:CLIPTextEncoder",
    "text-tower": "pops.encoders.text_tower:TextTowerEncoder",
}


# Where a saved folder keeps the encoders whose weights are files of ours (`bundle_encoder`).
BUNDLED_ENCODERS = "encoders"


def bundle_encoder(config: dict, folder: Path) -> dict:
    """An encoder config as a saved folder names it. An encoder whose weights are a folder of ours ("path": the
    demo's text tower) is copied into `folder/encoders/` and named relative to it, so the saved folder can move and
    still find it (`located_encoder` reads it back); any other config is unchanged."""
    if "path" not in config:
        return config
    name = f"{config['type']}-{digest(config, length=12)}"
    target = Path(folder) / BUNDLED_ENCODERS / name
    if not target.exists():  # (operators of one joint folder share one copy)
        shutil.copytree(config["path"], target)
    return {**config, "path": f"{BUNDLED_ENCODERS}/{name}"}


def located_encoder(config: dict, folder: str | Path) -> dict:
    """A saved encoder config with its relative "path" (`bundle_encoder`) resolved against the folder that holds it."""
    if "path" not in config or Path(config["path"]).is_absolute():
        return config
    return {**config, "path": str(Path(folder).resolve() / config["path"])}


_LOADED: dict[str, Encoder] = {}


def load_encoder(config: dict, *, device=None, dtype=None) -> Encoder:
    """The encoder a config names; one shared instance per distinct config and placement (operators of one folder
    share it). `device`/`dtype` place the real CLIP encoders (None: their defaults); the embedded encoders are
    small and always run on the CPU in fp32."""
    kind = config.get("type")
    if kind not in ENCODER_TYPES:
        raise ValueError(f"unknown encoder type {kind!r}; known: {', '.join(ENCODER_TYPES)}")
    module, name = ENCODER_TYPES[kind].split(":")
    cls = getattr(importlib.import_module(module), name)
    placement = {k: v for k, v in dict(device=device, dtype=dtype).items() if v is not None}
    placement = placement if getattr(cls, "placeable", False) else {}
    key = json.dumps([config, {k: str(v) for k, v in placement.items()}], sort_keys=True)
    if key not in _LOADED:
        _LOADED[key] = cls.from_config(config, **placement)
    return _LOADED[key]
