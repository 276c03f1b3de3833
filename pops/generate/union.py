"""Union data: one picture holding two objects, and each object alone on white.

SDXL-Turbo draws "A photo of {o1} and a {o2} {placement}"; OWLv2 must find both objects (best box per object
scoring >= 0.2, boxes overlapping at IoU <= 0.1, each at least ~2% of the image); each box is matted with RMBG
(at least 10% of it clearly foreground) and pasted on white at a random scale (0.8-0.95) and position. Anything
else is rejected, with the reason kept in rejected.json and the rank's log.
"""

from __future__ import annotations

from dataclasses import dataclass

from pops.generate.imaging import box_area, box_iou, clip_box, cutout, mask_array, paste_on_white
from pops.generate.recipe import GeneratedSample, Rejected, SampleContext, prompt_join
from pops.generate.words import load_words

NAME = "union"
REQUIRES = ("text_to_image", "detector", "segmenter")
ROLES = ("object_a", "object_b")


@dataclass
class Config:
    placement_probability: float = 0.5
    detect_threshold: float = 0.2
    max_iou: float = 0.1
    min_box_fraction: float = 0.019  # the reference's 5000 px at 512 x 512
    foreground_level: float = 200 / 255
    min_foreground_fraction: float = 0.1
    paste_scale: tuple[float, float] = (0.8, 0.95)


def make_sample(ctx: SampleContext, cfg: Config) -> GeneratedSample | Rejected:
    m, rng = ctx.models, ctx.rng
    objects = load_words("objects")
    names = [str(objects[i]) for i in rng.choice(len(objects), size=2, replace=False)]
    placement = ctx.choice(load_words("placements")) if rng.random() < cfg.placement_probability else ""
    prompt = prompt_join(f"A photo of {names[0]} and a {names[1]}", placement)
    meta = {"objects": names, "placement": placement, "prompt": prompt}

    image = m.text_to_image(prompt, ctx.generator(0)).convert("RGB")
    detections = m.detector(image, [f"a {n}" for n in names])
    meta["scores"] = [None if d is None else round(d.score, 4) for d in detections]
    for name, det, score in zip(names, detections, meta["scores"]):
        if det is None or det.score < cfg.detect_threshold:
            return Rejected(f"{name!r} not detected (best score {score} < {cfg.detect_threshold})", meta)
    boxes = [clip_box(d.box, image.size) for d in detections]
    iou = box_iou(*boxes)
    meta.update(boxes=[list(b) for b in boxes], iou=round(iou, 4))
    if iou > cfg.max_iou:
        return Rejected(f"the two boxes overlap (IoU {iou:.2f} > {cfg.max_iou})", meta)
    for name, box in zip(names, boxes):
        if box_area(box) < cfg.min_box_fraction * image.width * image.height:
            return Rejected(f"{name!r} is too small ({box_area(box):.0f} px)", meta)

    images, assets = {"target": image}, {}
    for role, name, box in zip(ROLES, names, boxes):
        crop = image.crop(box)
        matte = mask_array(m.segmenter(crop))
        seen = float((matte > cfg.foreground_level).mean())
        if seen < cfg.min_foreground_fraction:
            return Rejected(f"{name!r}: the segmenter kept only {seen:.0%} of its box", meta)
        cut = cutout(crop, matte)
        assets[f"{role}_cutout"] = cut
        images[role] = paste_on_white(cut, image.size, rng, cfg.paste_scale)
    examples = [{"inputs": {"object_a": "object_a", "object_b": "object_b"}, "target": "target"}]
    return GeneratedSample(images=images, assets=assets, meta=meta, examples=examples)
