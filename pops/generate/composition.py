"""Composition data: a person (ATR human parsing), and each garment cut out on white in its own fixed slot.

For each of the 12 clothing labels (the registry's COMPOSITION_SLOTS, in that order) present in the parsing mask
and large enough (the reference's 60 px / 1800 px at ATR size, taken relative to the image), the labelled pixels
are cropped onto white and pasted at a random scale (0.8-0.95) on a white square canvas; absent labels leave
their slot empty (dropped at train time). The target is the person, padded to a white square.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pops.base.registry import COMPOSITION_SLOTS
from pops.generate.imaging import crop_by_mask, pad_to_square, paste_on_white
from pops.generate.models import UndecodableImage
from pops.generate.recipe import GeneratedSample, Rejected, SampleContext

NAME = "composition"
REQUIRES = ("human_parsing",)
# ATR label ids of the composition slots (0 background, 11 face, 12-15 legs and arms are not garments).
ATR_LABELS = dict(zip(COMPOSITION_SLOTS, (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 17)))


@dataclass
class Config:
    canvas_size: int = 224
    min_side_fraction: float = 0.1  # of the image's longer side (60 px of ~600)
    min_area_fraction: float = 0.0075  # of the image area (1800 px of ~400 x 600)
    paste_scale: tuple[float, float] = (0.8, 0.95)


@lru_cache(maxsize=8)
def row_order(seed: int, num_rows: int) -> np.ndarray:
    """The dataset rows in a seeded order: sample i is row row_order(seed, n)[i]."""
    return np.random.default_rng(seed).permutation(num_rows)


def check(models, num_samples: int, cfg: Config) -> None:
    rows = len(models.human_parsing)
    if num_samples > rows:
        raise ValueError(f"the human parsing dataset has {rows} rows; --num-samples must be at most that")


def make_sample(ctx: SampleContext, cfg: Config) -> GeneratedSample | Rejected:
    row = int(row_order(ctx.seed, len(ctx.models.human_parsing))[ctx.index])
    meta = {"row": row}
    try:
        image, labels = ctx.models.human_parsing.row(row)
    except UndecodableImage as exc:
        return Rejected(f"row {row}: {exc}", meta)
    min_side = cfg.min_side_fraction * max(image.size)
    min_area = cfg.min_area_fraction * image.width * image.height
    images, inputs, present = {"target": pad_to_square(image)}, {}, []
    canvas = (cfg.canvas_size, cfg.canvas_size)
    for slot, label in ATR_LABELS.items():
        region = labels == label
        inputs[slot] = None
        if not region.any():
            continue
        crop, sub = crop_by_mask(image, region)
        if min(crop.size) < min_side or int(sub.sum()) < min_area:
            continue
        role = f"slot_{slot}"
        rgba = crop.convert("RGBA")
        rgba.putalpha(255)
        images[role] = paste_on_white(rgba, canvas, ctx.rng, cfg.paste_scale)
        inputs[slot] = role
        present.append(slot)
    meta["garments"] = present
    if not present:
        return Rejected(f"row {row}: no clothing label large enough", meta)
    return GeneratedSample(images=images, meta=meta, examples=[{"inputs": inputs, "target": "target"}])
