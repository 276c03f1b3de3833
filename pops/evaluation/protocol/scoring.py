"""The paper's three instruct metrics, computed on an edited picture against its input picture and its adjective:

* image similarity: the cosine of the CLIP image embeddings of the edited and the input picture (the appendix says
  CLIP; the caption of Table 1 says DreamSim). By default in the operators' own space, CLIP ViT-bigG/14 (the Kandinsky
  2.2 prior's `image_encoder`); `--image-model L14` uses ViT-L/14.
* text similarity: the cosine of CLIP ViT-L/14's embeddings of the edited picture and of "A {adjective} photo".
* caption similarity: BLIP-2 (OPT-2.7b) captions the edited picture; a sentence embedding (all-MiniLM-L6-v2) compares
  that caption with "A photo of a {adjective} {BLIP-2's caption of the input picture}".

Every model is a transformers model loaded from a hub id or a local folder, so tests run the same code on tiny random
models of the same classes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from pops.encoders.clip import CLIPImageEncoder, CLIPTextEncoder


@contextlib.contextmanager
def quiet_loading():
    """Load models without transformers' and diffusers' per-load progress bars and reports (the load report lists
    every unused weight of a checkpoint, e.g. ViT-L/14's text tower when only its vision tower is loaded): the
    protocol shows one bar per method instead. Errors still show."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    saved = [
        (lib, lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in (transformers_logging, diffusers_logging)
    ]
    for lib, _, _ in saved:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, verbosity, bars in saved:
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()


def clip_pair(source: str, *, device, dtype) -> tuple[CLIPImageEncoder, CLIPTextEncoder]:
    """The image and text towers of a CLIP checkpoint in the layout of `openai/clip-vit-large-patch14` (one
    CLIPModel folder with its processor and tokenizer)."""
    with quiet_loading():
        image = CLIPImageEncoder.from_pretrained(
            source, subfolder="", processor_subfolder="", device=device, dtype=dtype
        )
        text = CLIPTextEncoder.from_pretrained(source, subfolder="", tokenizer_subfolder="", device=device, dtype=dtype)
    return image, text


class Captioner:
    """BLIP-2 (`Blip2ForConditionalGeneration` + `Blip2Processor`): pictures -> greedy captions of at most
    `max_tokens` tokens, stripped."""

    def __init__(self, model, processor, *, device=None, dtype=None, max_tokens: int = 30):
        from pops.encoders.clip import default_device, default_dtype

        self.device = default_device(device)
        self.dtype = default_dtype(self.device, dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.processor = processor
        if max_tokens < 1:
            raise ValueError(f"captions need at least 1 token, got {max_tokens}")
        self.max_tokens = int(max_tokens)

    @classmethod
    def from_pretrained(cls, source: str, *, device=None, dtype=None, max_tokens: int = 30) -> Captioner:
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        from pops.encoders.clip import default_device, default_dtype

        dt = default_dtype(default_device(device), dtype)
        with quiet_loading():
            model = Blip2ForConditionalGeneration.from_pretrained(source, dtype=dt)
            processor = Blip2Processor.from_pretrained(source)
        return cls(model, processor, device=device, dtype=dtype, max_tokens=max_tokens)

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image]) -> list[str]:
        if not images:
            return []
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt").pixel_values
        out = self.model.generate(
            pixel_values=pixels.to(device=self.device, dtype=self.dtype),
            max_new_tokens=self.max_tokens,
            do_sample=False,
        )
        return [" ".join(text.split()) for text in self.processor.batch_decode(out, skip_special_tokens=True)]


@dataclass
class InputFeatures:
    """What the metrics need of the input pictures, computed once: their unit image embeddings and their captions."""

    embeds: torch.Tensor  # (N, D), unit norm, in the image-similarity space
    captions: list[str]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


class Scorer:
    """The three metrics of one edited picture. `similarity` embeds pictures for image similarity (bigG or L14);
    `clip_image`/`clip_text` are ViT-L/14's towers; `sentence` encodes strings to unit embeddings (MiniLMEncoder)."""

    def __init__(
        self,
        *,
        similarity: CLIPImageEncoder,
        clip_image: CLIPImageEncoder,
        clip_text: CLIPTextEncoder,
        captioner: Captioner,
        sentence,
        text_template: str,
        caption_template: str,
    ):
        self.similarity, self.clip_image, self.clip_text = similarity, clip_image, clip_text
        self.captioner, self.sentence = captioner, sentence
        self.text_template, self.caption_template = text_template, caption_template
        self._text_embeds: dict[str, torch.Tensor] = {}

    def describe_inputs(self, pictures: Sequence[Image.Image]) -> InputFeatures:
        return InputFeatures(_unit(self.similarity.encode(list(pictures))), self.captioner(list(pictures)))

    def _text_embed(self, adjective: str) -> torch.Tensor:
        if adjective not in self._text_embeds:
            text = self.text_template.format(adjective=adjective)
            self._text_embeds[adjective] = _unit(self.clip_text.encode([text]))[0]
        return self._text_embeds[adjective]

    def score(
        self, outputs: Sequence[Image.Image], inputs: InputFeatures, which: Sequence[int], adjective: str
    ) -> list[dict]:
        """One row of metrics per edited picture; `outputs[k]` is the edit of input picture `which[k]`."""
        outputs = list(outputs)
        image_sim = (_unit(self.similarity.encode(outputs)) * inputs.embeds[list(which)]).sum(-1)
        text_sim = _unit(self.clip_image.encode(outputs)) @ self._text_embed(adjective)
        captions = self.captioner(outputs)
        wanted = [self.caption_template.format(adjective=adjective, caption=inputs.captions[i]) for i in which]
        got = self.sentence.encode(captions)
        caption_sim = (_unit(got) * _unit(self.sentence.encode(wanted))).sum(-1)
        return [
            {
                "image_similarity": float(image_sim[k]),
                "text_similarity": float(text_sim[k]),
                "caption_similarity": float(caption_sim[k]),
                "caption": captions[k],
            }
            for k in range(len(outputs))
        ]
