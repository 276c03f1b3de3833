"""Texturing data: an object, then five re-renders of the same geometry made of other materials.

SDXL-Turbo draws "A {obj} {placement}"; OWLv2 boxes the object (the whole image when nothing scores 0.1); RMBG
mattes the box; SD2-depth re-renders the image five times as "A {obj} made from {1-5 texture attributes}
{placement}". Depth conditioning keeps the geometry, so the object's mask holds for every render; the texture
input is a patch cut inside that mask at train time (`cut_texture_patch`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from pops.generate.imaging import clip_box, mask_array, mask_image
from pops.generate.recipe import GeneratedSample, Rejected, SampleContext, prompt_join
from pops.generate.words import load_words

NAME = "texturing"
REQUIRES = ("text_to_image", "detector", "segmenter", "depth_to_image")
# The reference counts a mask pixel as inside the object at >= 250 / 255.
INSIDE = 250 / 255


@dataclass
class Config:
    renders_per_object: int = 5
    max_attributes: int = 5
    placement_probability: float = 0.5
    detect_threshold: float = 0.1
    mask_threshold: float = INSIDE


def make_sample(ctx: SampleContext, cfg: Config) -> GeneratedSample | Rejected:
    m, rng = ctx.models, ctx.rng
    obj = ctx.choice(load_words("objects"))
    placement = ctx.choice(load_words("placements")) if rng.random() < cfg.placement_probability else ""
    prompt = prompt_join("A", obj, placement)
    meta = {"object": obj, "placement": placement, "prompt": prompt}

    base = m.text_to_image(prompt, ctx.generator(0)).convert("RGB")
    det = m.detector(base, [f"a {obj}"])[0]
    detected = det is not None and det.score >= cfg.detect_threshold
    box = clip_box(det.box, base.size) if detected else (0, 0, base.width, base.height)
    meta.update(box=list(box), box_score=None if det is None else round(det.score, 4), detected=detected)

    matte = mask_array(m.segmenter(base.crop(box)))
    mask = np.zeros((base.height, base.width), np.float32)
    mask[box[1] : box[3], box[0] : box[2]] = matte
    if not (mask >= cfg.mask_threshold).any():
        return Rejected("the segmenter left no pixel inside the object", meta)

    images, renders = {"base": base}, []
    for k in range(cfg.renders_per_object):
        count = int(rng.integers(1, cfg.max_attributes + 1))
        textures = load_words("textures")
        attributes = [str(textures[i]) for i in rng.choice(len(textures), size=count, replace=False)]
        render_prompt = prompt_join(f"A {obj} made from", " ".join(attributes), placement)
        role = f"render_{k}"
        images[role] = m.depth_to_image(base, render_prompt, ctx.generator(1 + k)).convert("RGB")
        renders.append({"image": role, "attributes": attributes, "prompt": render_prompt})
    meta["renders"] = renders
    examples = [
        {"inputs": {"object": "base", "texture": {"patch_of": r["image"], "mask": "mask"}}, "target": r["image"]}
        for r in renders
    ]
    return GeneratedSample(images=images, assets={"mask": mask_image(mask)}, meta=meta, examples=examples)


def cut_texture_patch(
    image: Image.Image, mask, size: int, rng: np.random.Generator, threshold: float = INSIDE
) -> Image.Image:
    """A square patch of side `size` (smaller when no such square fits) lying entirely inside the mask.

    Every position where the square fits is found exactly (an integral image of the inside pixels), and one is
    drawn with `rng`. The mask may be any size (it is resized to the image). ValueError if it is empty.
    """
    if size < 1:
        raise ValueError(f"patch size must be at least 1, got {size}")
    m = mask if isinstance(mask, Image.Image) else mask_image(mask)
    if m.size != image.size:
        m = m.resize(image.size, Image.NEAREST)
    inside = mask_array(m) >= threshold
    if not inside.any():
        raise ValueError("the mask has no pixel inside the object; cannot cut a texture patch")
    integral = np.pad(inside.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def fits(s: int) -> np.ndarray:
        # fits(s)[y, x]: the s x s square with top-left (x, y) is all inside.
        total = integral[s:, s:] - integral[:-s, s:] - integral[s:, :-s] + integral[:-s, :-s]
        return total == s * s

    lo, hi = 1, min(size, *inside.shape)  # a 1-px square always fits; fitting is monotone in s
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid).any() else (lo, mid - 1)
    ys, xs = np.nonzero(fits(lo))
    j = int(rng.integers(len(ys)))
    x, y = int(xs[j]), int(ys[j])
    return image.crop((x, y, x + lo, y + lo))
