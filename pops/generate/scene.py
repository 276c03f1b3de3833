"""Scene data: an object in a place, the same place emptied, and the object alone.

SDXL-Turbo draws "A photo of a {obj} {placement}"; RMBG mattes the object; the matte (> 10/255), dilated by a
31 px square (at 512 px), is repainted by SDXL inpainting as "A photo of empty {place}", giving the scene input.
The object input is the object pasted, where it stood, on white, and also on a random background: another
SDXL-Turbo picture, "A photo of an empty {other place}" (the reference's random backgrounds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pops.base.images import dilate
from pops.generate.imaging import mask_array, mask_image, on_background
from pops.generate.recipe import GeneratedSample, Rejected, SampleContext
from pops.generate.words import load_words, place_of

NAME = "scene"
REQUIRES = ("text_to_image", "segmenter", "inpainter")


@dataclass
class Config:
    matte_level: float = 10 / 255
    dilation_px_at_512: int = 31
    min_object_fraction: float = 0.01
    max_object_fraction: float = 0.9


def make_sample(ctx: SampleContext, cfg: Config) -> GeneratedSample | Rejected:
    m = ctx.models
    obj = ctx.choice(load_words("objects"))
    placements = load_words("placements")
    placement = ctx.choice(placements)
    place = place_of(placement)
    other_places = sorted({place_of(p) for p in placements} - {place})
    other_place = ctx.choice(tuple(other_places))
    prompt = f"A photo of a {obj} {placement}"
    meta = {"object": obj, "placement": placement, "place": place, "prompt": prompt}

    image = m.text_to_image(prompt, ctx.generator(0)).convert("RGB")
    matte = mask_array(m.segmenter(image))
    fraction = float((matte > cfg.matte_level).mean())
    meta["object_fraction"] = round(fraction, 4)
    if fraction < cfg.min_object_fraction:
        return Rejected(f"no object segmented ({fraction:.1%} of the image)", meta)
    if fraction > cfg.max_object_fraction:
        return Rejected(f"the object fills the frame ({fraction:.0%} of the image)", meta)

    side = round(cfg.dilation_px_at_512 * max(image.size) / 512)  # of the dilation's square: made odd, at least 3
    hole = dilate((matte > cfg.matte_level).astype(np.float32), max(3, side | 1) // 2) > 0
    background_prompt = f"A photo of empty {place}"
    background = m.inpainter(image, mask_image(hole).convert("RGB"), background_prompt, ctx.generator(1))
    background = background.convert("RGB").resize(image.size)
    random_prompt = f"A photo of an empty {other_place}"
    random_background = m.text_to_image(random_prompt, ctx.generator(2)).convert("RGB")
    meta.update(background_prompt=background_prompt, random_background_prompt=random_prompt)

    images = {
        "target": image,
        "background": background,
        "object_on_white": on_background(image, matte),
        "object_on_background": on_background(image, matte, random_background),
    }
    assets = {"mask": mask_image(matte), "inpaint_mask": mask_image(hole.astype(np.float32))}
    examples = [
        {"inputs": {"object": "object_on_white", "scene": "background"}, "target": "target"},
        {"inputs": {"object": "object_on_background", "scene": "background"}, "target": "target"},
    ]
    return GeneratedSample(images=images, assets=assets, meta=meta, examples=examples)
