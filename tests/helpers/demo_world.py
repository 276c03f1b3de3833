"""The demo's data stage at toy size: a tiny world, a cheap stand-in image encoder, and word rows for text slots."""

from __future__ import annotations

import numpy as np
import torch


def tiny_world():
    """A World of 32 px pictures: three shapes, two textures, two scenes, two edits, 30 outfits."""
    from pops.world import World, WorldConfig

    return World(
        WorldConfig(
            image_size=32,
            shapes=("circle", "square", "star"),
            textures=("stripes", "dots"),
            scenes=("meadow", "night"),
            edits=("red", "big"),
            outfits=30,
        )
    )


class ColourEncoder:
    """A deterministic image "encoder": colour statistics of a 4x4 thumbnail (48-d). Counts its calls."""

    modality, dim, encoder_id = "image", 48, "test-colour-4x4"

    def __init__(self):
        self.encoded = 0

    def encode(self, items, *, batch_size=32, progress=False):
        self.encoded += len(items)
        return torch.tensor(
            np.stack([np.asarray(im.convert("RGB").resize((4, 4)), dtype=np.float32).ravel() / 255 for im in items])
        )


class WordRows:
    """A stand-in text encoder's token rows: 2 to 4 rows of width 8 per word, each filled with the word's length."""

    width = 8

    def token_rows(self, texts):
        return [torch.full((2 + len(t) % 3, self.width), float(len(t))) for t in texts]
