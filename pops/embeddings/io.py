"""Embedding files: what `pops apply` reads and writes, so operators chain through files.

Our format is a safetensors file with one float32 tensor `embeddings` of shape (N, D) and, in the safetensors
metadata, a JSON record under the key `pops` (operator, inputs, seed, …). `.pt` files holding a tensor (or a dict
with an `embeddings` tensor) are read too.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from pops.base.files import atomic_write
from pops.base.readers import load_torch, read_safetensors

EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".pth")


def check_floats(values: torch.Tensor, what: str = "embeddings") -> None:
    """Embeddings (and token rows) are real floating-point numbers (fp16, bf16, fp32, fp64): integers or booleans
    are some other data, not an embedding to be cast silently."""
    dtype = str(values.dtype).removeprefix("torch.")
    if values.is_complex():
        raise ValueError(f"{what}: expected real numbers, got {dtype}")
    if not values.is_floating_point():
        raise ValueError(f"{what}: expected floating-point numbers (fp16, bf16, fp32 or fp64), got {dtype}")


def check_embeddings(embeds: torch.Tensor, dim: int | None = None, what: str = "embeddings") -> torch.Tensor:
    """Validate and return float32 (N, D): floating point, finite, 1-D promoted to one row, the expected width."""
    if not isinstance(embeds, torch.Tensor):
        raise ValueError(f"{what}: expected a tensor, got {type(embeds).__name__}")
    if embeds.ndim == 1:
        embeds = embeds[None]
    if embeds.ndim != 2:
        raise ValueError(f"{what}: expected shape (N, D), got {tuple(embeds.shape)}")
    check_floats(embeds, what)
    if embeds.shape[0] == 0 or embeds.shape[1] == 0:
        raise ValueError(f"{what}: no embeddings (shape {tuple(embeds.shape)})")
    if dim is not None and embeds.shape[1] != dim:
        raise ValueError(f"{what}: embedding width {embeds.shape[1]}, expected {dim}")
    if not torch.isfinite(embeds).all():
        raise ValueError(f"{what}: contains NaN or inf values")
    return embeds.float()


def save_embeddings(path: str | Path, embeds: torch.Tensor, metadata: dict | None = None) -> Path:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: embeddings are written as .safetensors")
    embeds = check_embeddings(embeds).contiguous()
    meta = {"pops": json.dumps(metadata or {}, default=str)}
    atomic_write(path, lambda tmp: save_file({"embeddings": embeds}, tmp, metadata=meta))
    return path


def load_embeddings(path: str | Path, dim: int | None = None) -> tuple[torch.Tensor, dict]:
    """(N, D) float32 embeddings and their metadata (empty for files not written by pops)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        tensors, metadata = read_safetensors(path, "embedding file")
        key = "embeddings" if "embeddings" in tensors else (next(iter(tensors)) if len(tensors) == 1 else None)
        if key is None:
            raise ValueError(f"{path}: no 'embeddings' tensor among {sorted(tensors)}")
        embeds = tensors[key]
        try:
            meta = json.loads(metadata.get("pops", "{}"))
        except json.JSONDecodeError:
            raise ValueError(f"{path}: its 'pops' metadata is not JSON") from None
    elif path.suffix in (".pt", ".pth"):
        obj = load_torch(path, "embedding file")
        meta = {}
        if isinstance(obj, dict):
            obj = obj.get("embeddings")
        embeds = obj
    else:
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder, expected an embedding file")
        raise ValueError(f"{path}: unknown embedding file type (use {', '.join(EMBEDDING_SUFFIXES)})")
    return check_embeddings(embeds, dim, what=str(path)), meta
