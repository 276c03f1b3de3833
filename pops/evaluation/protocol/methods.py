"""The methods of Table 1 as editors: each edits input pictures by one adjective, seeded, in batches.

* `PopsEditor`: the instruct operator samples an embedding from (input picture, adjective); the Kandinsky 2.2 decoder
  renders it (the paper's pOps row).
* `InstructPix2PixEditor`: `timbrooks/instruct-pix2pix` with the instruction "make it {adjective}".
* `IPAdapterEditor`: SDXL + IP-Adapter on the input picture's ViT-bigG embedding, prompted "A {adjective} photo", at an
  adapter scale of 0.5 or 0.1 (the paper's two IP-Adapter rows).

`prepare(pictures)` takes every input picture once; `edit(which, adjective, seed)` returns the edits of the pictures
`which` (indices), one per picture. Every picture's noise comes from its own generators seeded `seed`, so an edit
does not depend on the batch it was made in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from pops.base.devices import make_generator


def generators(seed: int, count: int, device: str = "cpu") -> list[torch.Generator]:
    """`count` generators, each seeded `seed`: every picture draws the noise of its seed, whatever its batch."""
    return [make_generator(seed, device) for _ in range(count)]


def quiet(pipe):
    """A diffusers pipeline without its per-call progress bar (the protocol shows one bar per method)."""
    pipe.set_progress_bar_config(disable=True)
    return pipe


class PopsEditor:
    """An instruct operator and a renderer of its embeddings (KandinskyRenderer)."""

    def __init__(self, operator, renderer, *, steps: int | None = None, generator_device: str = "cpu"):
        if operator.kind != "instruct":
            raise ValueError(f"the protocol edits with an instruct operator, got a {operator.kind} operator")
        self.operator, self.renderer = operator, renderer
        quiet(renderer.pipe)
        self.steps, self.generator_device = steps, generator_device
        self._embeds: torch.Tensor | None = None

    def settings(self) -> dict:
        sampling = self.operator.call_config(num_inference_steps=self.steps)
        return {
            "sampler": sampling.sampler,
            "prior_steps": sampling.num_inference_steps,
            "guidance_scale": sampling.guidance_scale,
            "decoder_steps": self.renderer.num_inference_steps,
            "decoder_guidance": self.renderer.guidance_scale,
            "size": self.renderer.size,
        }

    def prepare(self, pictures: Sequence[Image.Image]) -> None:
        # The operator's own image encoder and preprocessing (the released ones squash to 512² first).
        self._embeds = self.operator.image_encoder.encode(list(pictures))

    def edit(self, which: Sequence[int], adjective: str, seed: int) -> list[Image.Image]:
        count = len(which)
        embeds = self.operator.sample(
            [self._embeds[list(which)], adjective],
            num_inference_steps=self.steps,
            generator=generators(seed, count, self.generator_device),
        )
        return self.renderer.render(embeds, generator=generators(seed, count, self.generator_device))


class InstructPix2PixEditor:
    """`StableDiffusionInstructPix2PixPipeline` with one instruction per adjective."""

    def __init__(
        self,
        pipe,
        *,
        prompt: str,
        steps: int = 100,
        guidance_scale: float = 7.5,
        image_guidance_scale: float = 1.5,
        generator_device: str = "cpu",
    ):
        self.pipe, self.prompt = quiet(pipe), prompt
        self.steps, self.guidance_scale, self.image_guidance_scale = steps, guidance_scale, image_guidance_scale
        self.generator_device = generator_device
        self._pictures: list[Image.Image] = []

    @classmethod
    def from_pretrained(cls, source: str, *, device, dtype, **options) -> InstructPix2PixEditor:
        from diffusers import StableDiffusionInstructPix2PixPipeline

        from pops.renderers.pipelines import dtype_kwarg, prepare_pipeline

        # No safety checker: it blacks out the pictures it flags, which would score as failed edits.
        pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
            source, safety_checker=None, requires_safety_checker=False, **dtype_kwarg(dtype)
        )
        return cls(prepare_pipeline(pipe, device=device, dtype=dtype), **options)

    def settings(self) -> dict:
        return {
            "prompt": self.prompt,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "image_guidance_scale": self.image_guidance_scale,
        }

    def prepare(self, pictures: Sequence[Image.Image]) -> None:
        self._pictures = list(pictures)

    @torch.no_grad()
    def edit(self, which: Sequence[int], adjective: str, seed: int) -> list[Image.Image]:
        count = len(which)
        out = self.pipe(
            prompt=[self.prompt.format(adjective=adjective)] * count,
            image=[self._pictures[i] for i in which],
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            image_guidance_scale=self.image_guidance_scale,
            generator=generators(seed, count, self.generator_device),
            output_type="pil",
        )
        return list(out.images)


class IPAdapterEditor:
    """SDXL + IP-Adapter (an `IPAdapterRenderer`) at one adapter scale, prompted with the adjective. The input
    pictures are embedded by `image_encoder` (the bigG encoder IP-Adapter SDXL was trained on)."""

    def __init__(self, renderer, image_encoder, *, scale: float, prompt: str, generator_device: str = "cpu"):
        self.renderer, self.image_encoder = renderer, image_encoder
        quiet(renderer.pipe)
        self.scale, self.prompt, self.generator_device = float(scale), prompt, generator_device
        self._embeds: torch.Tensor | None = None

    def settings(self) -> dict:
        return {
            "scale": self.scale,
            "prompt": self.prompt,
            "negative_prompt": self.renderer.negative_prompt,
            "steps": self.renderer.num_inference_steps,
            "guidance_scale": self.renderer.guidance_scale,
            "size": self.renderer.size,
        }

    def prepare(self, pictures: Sequence[Image.Image]) -> None:
        self._embeds = self.image_encoder.encode(list(pictures))

    def edit(self, which: Sequence[int], adjective: str, seed: int) -> list[Image.Image]:
        # The renderer is shared by both scales: set this editor's scale and prompt before every call.
        self.renderer.pipe.set_ip_adapter_scale(self.scale)
        self.renderer.prompt = self.prompt.format(adjective=adjective)
        count = len(which)
        return self.renderer.render(self._embeds[list(which)], generator=generators(seed, count, self.generator_device))
