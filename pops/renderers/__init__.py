"""Renderers: embeddings to pictures. The embedded world and the real Kandinsky/SDXL stack implement one protocol."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from PIL import Image


@runtime_checkable
class Renderer(Protocol):
    """Turns B raw (un-normalised) embeddings, a (B, D) tensor, into B pictures in one call."""

    def render(self, embeds: torch.Tensor, *, generator: torch.Generator | None = None) -> list[Image.Image]: ...
