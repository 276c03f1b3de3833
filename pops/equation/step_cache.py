"""A cache of equation steps: every embedding a step produces, keyed on what determines it.

A step's key hashes its operator (and the identity of its weights), its inputs' keys, its seed and its sampling
settings — so it changes exactly when the result could. Changing the seed of the last step re-samples that step
alone; every other step is read back. Entries live in memory (least recently used first out) and, when a folder is
given, on disk as safetensors files (so a second `pops apply` run reuses the first one's work).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from pops.base.files import digest
from pops.embeddings.io import load_embeddings, save_embeddings


def make_key(*parts) -> str:
    """A hex key for JSON-able parts (floats by repr, so 0.1 and 0.1000001 differ)."""
    return digest(*parts, length=32)


class StepCache:
    """key -> (B, D) float32 tensor; in memory (bounded) and optionally in a folder."""

    def __init__(self, folder: str | Path | None = None, max_items: int = 512):
        self.folder = Path(folder) if folder is not None else None
        self.max_items = max_items
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, key: str, *, persistent: bool = True) -> torch.Tensor | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        if persistent and self.folder is not None and self._path(key).is_file():
            try:
                value, _ = load_embeddings(self._path(key))
            except ValueError:  # a damaged entry is a miss, and is rewritten
                value = None
            if value is not None:
                self._remember(key, value)
                self.hits += 1
                return value
        self.misses += 1
        return None

    def put(self, key: str, value: torch.Tensor, *, persistent: bool = True, metadata: dict | None = None) -> None:
        value = value.detach().float().cpu()
        self._remember(key, value)
        if persistent and self.folder is not None:
            save_embeddings(self._path(key), value, metadata or {})

    def _remember(self, key: str, value: torch.Tensor) -> None:
        self._memory[key] = value
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_items:
            self._memory.popitem(last=False)

    def __contains__(self, key: str) -> bool:
        return key in self._memory or (self.folder is not None and self._path(key).is_file())

    def __len__(self) -> int:
        return len(self._memory)
