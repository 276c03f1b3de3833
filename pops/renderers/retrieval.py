"""Retrieval renderer: an embedding is "rendered" as the gallery image whose embedding is closest to it (cosine).

Honest and exact for the embedded world: it can only show pictures that exist, so it answers "which known image
does this embedding mean", which is also how the evaluation scores top-1 retrieval.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from pops.base.files import atomic_write
from pops.embeddings.io import load_embeddings, save_embeddings
from pops.renderers import write_renderer_config

RENDERER_TYPE = "retrieval"
GALLERY_NAME = "gallery.safetensors"  # (M, D) raw embeddings, row i <-> images/<i>.png
IMAGES_DIR = "images"


class RetrievalRenderer:
    """`gallery_embeds` (M, D) raw embeddings of `gallery_images` (M PIL images), row i <-> image i."""

    def __init__(self, gallery_embeds: torch.Tensor, gallery_images: Sequence[Image.Image]):
        if gallery_embeds.ndim != 2:
            raise ValueError(f"gallery_embeds must be (M, D), got shape {tuple(gallery_embeds.shape)}")
        if len(gallery_images) != gallery_embeds.shape[0]:
            raise ValueError(f"{gallery_embeds.shape[0]} gallery embeddings but {len(gallery_images)} images")
        if gallery_embeds.shape[0] == 0:
            raise ValueError("the gallery is empty")
        self.gallery = gallery_embeds.detach().float()  # raw, as given (what a saved renderer stores)
        self.images = list(gallery_images)
        self._unit = F.normalize(self.gallery, dim=-1)

    @property
    def dim(self) -> int:
        return self.gallery.shape[1]

    def nearest(self, embeds: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (B, k) of the k most cosine-similar gallery entries, best first, and their cosines (B, k)."""
        if embeds.ndim == 1:
            embeds = embeds.unsqueeze(0)
        if embeds.ndim != 2 or embeds.shape[1] != self.dim:
            raise ValueError(f"expected (B, {self.dim}) embeddings, got shape {tuple(embeds.shape)}")
        if not 1 <= k <= len(self.images):
            raise ValueError(f"k must be in [1, {len(self.images)}], got {k}")
        scores = F.normalize(embeds.detach().float(), dim=-1) @ self._unit.T
        top = scores.topk(k, dim=-1)
        return top.indices, top.values

    def render(self, embeds: torch.Tensor, *, generator: torch.Generator | None = None) -> list[Image.Image]:
        """A copy of the nearest gallery image per embedding (deterministic; `generator` is only for the protocol)."""
        indices, _ = self.nearest(embeds, k=1)
        return [self.images[i].copy() for i in indices[:, 0].tolist()]

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write renderer.json (type "retrieval") + gallery.safetensors (M, D) + images/<i>.png into `folder`."""
        folder = Path(folder)
        for i, image in enumerate(self.images):
            atomic_write(folder / IMAGES_DIR / f"{i:06d}.png", lambda tmp, image=image: image.save(tmp, format="PNG"))
        save_embeddings(folder / GALLERY_NAME, self.gallery, {"images": len(self.images)})
        write_renderer_config(
            folder, RENDERER_TYPE, {"gallery": GALLERY_NAME, "images": IMAGES_DIR, "count": len(self.images)}
        )
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> RetrievalRenderer:
        folder = Path(folder)
        if not (folder / GALLERY_NAME).is_file():
            raise FileNotFoundError(f"no {GALLERY_NAME} in {folder} (not a saved RetrievalRenderer)")
        embeds, _ = load_embeddings(folder / GALLERY_NAME)
        paths = sorted((folder / IMAGES_DIR).glob("*.png"))
        if len(paths) != embeds.shape[0]:
            raise ValueError(f"{folder}: {embeds.shape[0]} gallery embeddings but {len(paths)} images")
        images = []
        for path in paths:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        return cls(embeds, images)
