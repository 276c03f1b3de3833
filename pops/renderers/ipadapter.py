"""SDXL base 1.0 + IP-Adapter: the paper's second renderer of bigG image embeddings.

`h94/IP-Adapter` `sdxl_models/ip-adapter_sdxl.bin` was trained on the same ViT-bigG image embeds pOps works in,
so operator outputs feed it directly: empty prompt, adapter scale 1.0, and the reference's negative prompt. Each
embedding is paired with zeros as its unconditional half (the reference's `stack([zeros_like(e), e])`), and B
embeddings render in one call with one embedding per prompt (see `per_prompt_ip_adapter`).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from PIL import Image

from pops.base.hub import looks_like_hub_id, resolve_file, resolve_model
from pops.base.reference import IP_ADAPTER_REPO, IP_ADAPTER_WEIGHT, SDXL_BASE
from pops.encoders.clip import default_device, default_dtype
from pops.renderers.pipelines import check_embeds, check_generator, check_size, dtype_kwarg, prepare_pipeline

NEGATIVE_PROMPT = "deformed, ugly, wrong proportion, low res, bad anatomy, worst quality, low quality"


def ip_adapter_image_embeds(embeds: torch.Tensor, *, guidance: bool = True) -> list[torch.Tensor]:
    """(B, D) → `[ (2B, 1, D) ]`: zeros (the unconditional half) for all B images first, then the B embeddings;
    without guidance just `[ (B, 1, D) ]`. One tensor per loaded adapter (pOps loads one).

    This is the layout the UNet's IP-Adapter layers receive, in the order of the guidance batch
    (uncond first). For B = 1 it equals the reference's `[torch.stack([zeros_like(e), e])]`.
    """
    if not guidance:
        return [embeds[:, None, :]]
    return [torch.cat([torch.zeros_like(embeds), embeds])[:, None, :]]


@contextmanager
def per_prompt_ip_adapter(pipe):
    """Let every prompt of one SDXL call have its own IP-Adapter embedding.

    diffusers 0.42 reads `ip_adapter_image_embeds[i]` as *one* image set (dim 0: uncond/cond, dim 1: images) and
    repeats it for every prompt of the batch, so B different embeddings cannot go in through the public argument
    (a (2B, 1, D) tensor would be repeated B times, and the attention layers would then mix the prompts' image
    tokens). While this context is active, the pipeline's `prepare_ip_adapter_image_embeds` takes the (B, 1, D)
    embeddings it is given as one per prompt and lays them out with `ip_adapter_image_embeds` above.
    """

    def prepare(ip_adapter_image, image_embeds, device, num_prompts, do_classifier_free_guidance):
        out = []
        for single in image_embeds:
            if single.shape[0] != num_prompts:
                raise ValueError(f"got {single.shape[0]} IP-Adapter embeddings for {num_prompts} prompts")
            out += ip_adapter_image_embeds(single[:, 0], guidance=do_classifier_free_guidance)
        return [e.to(device) for e in out]

    pipe.prepare_ip_adapter_image_embeds = prepare  # an instance attribute shadows the class's method
    try:
        yield pipe
    finally:
        del pipe.prepare_ip_adapter_image_embeds


def load_ip_adapter(pipe, ip_adapter, weight_name: str = IP_ADAPTER_WEIGHT, *, scale: float = 1.0) -> None:
    """Attach an IP-Adapter to a pipeline: a state dict ({"image_proj", "ip_adapter"}), a local folder or a hub id.

    No CLIP image encoder is loaded with it (`image_encoder_folder=None`): pOps hands over embeddings, never images.
    """
    if isinstance(ip_adapter, dict):
        pipe.load_ip_adapter(ip_adapter, subfolder=None, weight_name=None, image_encoder_folder=None)
    else:
        path = resolve_file(ip_adapter, weight_name, what="IP-Adapter weights")
        pipe.load_ip_adapter(
            os.path.dirname(path), subfolder=None, weight_name=os.path.basename(path), image_encoder_folder=None
        )
    pipe.set_ip_adapter_scale(scale)


def sdxl_load_kwargs(*, dtype: torch.dtype, from_hub: bool) -> dict:
    # The hub repos ship fp16 copies of every weight ("variant"); local folders may not.
    return {**dtype_kwarg(dtype), "variant": "fp16" if from_hub and dtype == torch.float16 else None}


class IPAdapterRenderer:
    """Renders (B, D) raw image embeddings with SDXL + IP-Adapter (a StableDiffusionXLPipeline or a subclass)."""

    default_negative_prompt = NEGATIVE_PROMPT

    def __init__(
        self,
        pipe,
        *,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        size: int = 1024,
        prompt: str = "",
        negative_prompt: str | None = None,
    ):
        projections = getattr(getattr(pipe.unet, "encoder_hid_proj", None), "image_projection_layers", None)
        if not projections:
            raise ValueError("the pipeline has no IP-Adapter loaded (use load_ip_adapter first)")
        self.pipe = pipe
        self.dim = int(projections[0].image_embeds.in_features)
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        # Latents are size / vae_scale_factor and the UNet halves them once per down block.
        unet_factor = 2 ** (len(pipe.unet.config.block_out_channels) - 1)
        self.size = check_size(size, multiple=pipe.vae_scale_factor * unet_factor)
        self.prompt = prompt
        self.negative_prompt = self.default_negative_prompt if negative_prompt is None else negative_prompt

    @classmethod
    def from_components(
        cls,
        *,
        ip_adapter,
        ip_adapter_weight: str = IP_ADAPTER_WEIGHT,
        device=None,
        dtype=None,
        **components_and_options,
    ):
        """Build a StableDiffusionXLPipeline from model objects (unet, vae, text_encoder(_2), tokenizer(_2),
        scheduler) and attach `ip_adapter` (state dict, folder or hub id)."""
        from diffusers import StableDiffusionXLPipeline

        names = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
        parts = {k: components_and_options.pop(k) for k in names}
        pipe = StableDiffusionXLPipeline(**parts, add_watermarker=False)
        load_ip_adapter(pipe, ip_adapter, ip_adapter_weight)
        return cls(prepare_pipeline(pipe, device=device, dtype=dtype), **components_and_options)

    @classmethod
    def from_pretrained(
        cls,
        base: str = SDXL_BASE,
        *,
        ip_adapter: str = IP_ADAPTER_REPO,
        ip_adapter_weight: str = IP_ADAPTER_WEIGHT,
        device=None,
        dtype=None,
        cpu_offload: bool = False,
        **options,
    ) -> IPAdapterRenderer:
        """Load SDXL (hub id or local `save_pretrained` folder) and the IP-Adapter weights."""
        # Settle where every piece comes from before the heavy imports and loads: a missing one fails in a second.
        source = resolve_model(base, what="SDXL base")
        weights = resolve_file(ip_adapter, ip_adapter_weight, what="IP-Adapter weights")

        from diffusers import StableDiffusionXLPipeline

        dev = default_device(device)
        dt = default_dtype(dev, dtype)
        load_kwargs = sdxl_load_kwargs(dtype=dt, from_hub=looks_like_hub_id(source))
        pipe = StableDiffusionXLPipeline.from_pretrained(source, **load_kwargs)
        load_ip_adapter(pipe, weights, "")
        return cls(prepare_pipeline(pipe, device=dev, dtype=dt, cpu_offload=cpu_offload), **options)

    @classmethod
    def from_settings(cls, s) -> IPAdapterRenderer:
        """Load from checked settings (pops.renderers.settings, the reference's values by default)."""
        return cls.from_pretrained(
            s.base,
            ip_adapter=s.ip_adapter,
            ip_adapter_weight=s.ip_adapter_weight,
            device=s.device,
            dtype=s.dtype,
            cpu_offload=s.cpu_offload,
            **s.options(),
        )

    def _call_kwargs(self, embeds: torch.Tensor, generator) -> dict:
        embeds = check_embeds(embeds, self.dim)
        batch = embeds.shape[0]
        check_generator(generator, batch)
        dtype = self.pipe.unet.dtype
        return dict(
            prompt=[self.prompt] * batch,
            negative_prompt=[self.negative_prompt] * batch,
            # (B, 1, D): one embedding per prompt, expanded for guidance inside `per_prompt_ip_adapter`.
            ip_adapter_image_embeds=[embeds.to(dtype)[:, None, :]],
            height=self.size,
            width=self.size,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            generator=generator,
            output_type="pil",
        )

    @torch.no_grad()
    def render(self, embeds: torch.Tensor, *, generator=None) -> list[Image.Image]:
        """B raw embeddings → B PIL images of `size` x `size`, in one pipeline call."""
        with per_prompt_ip_adapter(self.pipe) as pipe:
            return list(pipe(**self._call_kwargs(embeds, generator)).images)
