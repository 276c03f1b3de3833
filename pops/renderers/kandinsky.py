"""Kandinsky 2.2 decoder: the paper's main renderer of bigG image embeddings.

Reference settings: 50 steps, guidance 4, 512 x 512, and as negative the image encoder's embedding of an
all-zeros image (`CLIPImageEncoder.zero_image_embedding`). B embeddings render in one pipeline call.
"""

from __future__ import annotations

import torch
from PIL import Image

from pops.base.hub import resolve_model
from pops.base.reference import KANDINSKY_DECODER, KANDINSKY_PRIOR
from pops.encoders.clip import CLIPImageEncoder, default_device, default_dtype
from pops.renderers.pipelines import check_embeds, check_generator, check_size, dtype_kwarg, prepare_pipeline


class KandinskyRenderer:
    """Renders (B, D) raw image embeddings with a `diffusers.KandinskyV22Pipeline`."""

    def __init__(
        self,
        pipe,
        negative_embedding: torch.Tensor,
        *,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        size: int = 512,
    ):
        self.pipe = pipe
        self.dim = int(pipe.unet.config.encoder_hid_dim)
        negative = torch.as_tensor(negative_embedding, dtype=torch.float32).reshape(1, -1)
        if negative.shape[1] != self.dim:
            raise ValueError(f"negative embedding is {negative.shape[1]}-d but the decoder expects {self.dim}-d")
        self.negative_embedding = negative
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        # The decoder works on latents of size / movq_scale_factor**2 * movq_scale_factor; other sizes get rounded up.
        self.size = check_size(size, multiple=pipe.movq_scale_factor**2)

    @classmethod
    def from_components(cls, *, unet, movq, scheduler, image_encoder, device=None, dtype=None, **options):
        """Build from model objects; the negative comes from `image_encoder` (a `CLIPImageEncoder`)."""
        from diffusers import KandinskyV22Pipeline

        pipe = KandinskyV22Pipeline(unet=unet, movq=movq, scheduler=scheduler)
        pipe = prepare_pipeline(pipe, device=device, dtype=dtype)
        return cls(pipe, image_encoder.zero_image_embedding(), **options)

    @classmethod
    def from_pretrained(
        cls,
        decoder: str = KANDINSKY_DECODER,
        *,
        prior: str = KANDINSKY_PRIOR,
        negative_embedding: torch.Tensor | None = None,
        device=None,
        dtype=None,
        cpu_offload: bool = False,
        **options,
    ) -> KandinskyRenderer:
        """Load the decoder (hub id or local folder). The negative is computed once with the prior repo's
        `image_encoder` (then freed) unless `negative_embedding` is given."""
        # Where every piece comes from is settled first (in about a second, offline or not), before any heavy import.
        source = resolve_model(decoder, what="Kandinsky 2.2 decoder")
        prior_source = None
        if negative_embedding is None:
            prior_source = resolve_model(prior, what="Kandinsky 2.2 prior (for its CLIP image encoder)")

        from diffusers import KandinskyV22Pipeline

        dev = default_device(device)
        dt = default_dtype(dev, dtype)
        if negative_embedding is None:
            encoder = CLIPImageEncoder.from_pretrained(prior_source, device=dev, dtype=dt)
            negative_embedding = encoder.zero_image_embedding()
            del encoder
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        pipe = KandinskyV22Pipeline.from_pretrained(source, **dtype_kwarg(dt))
        pipe = prepare_pipeline(pipe, device=dev, dtype=dt, cpu_offload=cpu_offload)
        return cls(pipe, negative_embedding, **options)

    @classmethod
    def from_settings(cls, s) -> KandinskyRenderer:
        """Load from checked settings (pops.renderers.settings, the reference's values by default)."""
        return cls.from_pretrained(
            s.decoder, prior=s.prior, device=s.device, dtype=s.dtype, cpu_offload=s.cpu_offload, **s.options()
        )

    @torch.no_grad()
    def render(self, embeds: torch.Tensor, *, generator=None) -> list[Image.Image]:
        """B raw embeddings → B PIL images of `size` x `size`, in one pipeline call."""
        embeds = check_embeds(embeds, self.dim)
        batch = embeds.shape[0]
        check_generator(generator, batch)
        # On the execution device already: without guidance the pipeline hands image_embeds to the UNet unmoved.
        place = dict(device=self.pipe._execution_device, dtype=self.pipe.unet.dtype)
        out = self.pipe(
            image_embeds=embeds.to(**place),
            negative_image_embeds=self.negative_embedding.to(**place).expand(batch, -1),
            height=self.size,
            width=self.size,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            generator=generator,
            output_type="pil",
        )
        return list(out.images)
