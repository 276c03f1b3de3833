"""Instruct data: single-object pictures, "A photo of a {obj} {placement}" from SDXL-Turbo.

No edited pictures exist: at train time a word (adjective or art type) is drawn for each picture, the picture is
both input and MSE target, and the text-alignment loss pulls the output toward the text of `sample_instruction`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pops.base.registry import get_spec
from pops.generate.recipe import GeneratedSample, SampleContext, prompt_join
from pops.generate.words import load_words

NAME = "instruct"
REQUIRES = ("text_to_image",)


@dataclass
class Config:
    placement_probability: float = 0.5


def make_sample(ctx: SampleContext, cfg: Config) -> GeneratedSample:
    obj = ctx.choice(load_words("objects"))
    placement = ctx.choice(load_words("placements")) if ctx.rng.random() < cfg.placement_probability else ""
    prompt = prompt_join(f"A photo of a {obj}", placement)
    image = ctx.models.text_to_image(prompt, ctx.generator(0)).convert("RGB")
    meta = {"object": obj, "placement": placement, "prompt": prompt}
    examples = [{"inputs": {"object": "image", "word": None}, "target": "image"}]
    return GeneratedSample(images={"image": image}, meta=meta, examples=examples)


def sample_instruction(object_name: str, rng: np.random.Generator, placement: str = "") -> tuple[str, str]:
    """A train-time word for a picture of `object_name` (generated `placement`, possibly empty) and the text its
    output should match.

    Half the time an adjective ("A {word} {object} {placement}", the registry's alignment prompt, as the
    reference's data phrases it), otherwise an art type ("A {art type} of a {object}"), as the reference does.
    """
    if rng.random() < 0.5:
        words = load_words("adjectives")
        word = str(words[int(rng.integers(len(words)))])
        text = get_spec("instruct").alignment_prompt.format(word=word, object=object_name, placement=placement)
        return word, prompt_join(text)
    words = load_words("art_types")
    word = str(words[int(rng.integers(len(words)))])
    return word, f"A {word} of a {object_name}"
