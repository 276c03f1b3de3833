"""SDXL + IP-Adapter + depth ControlNet: render an embedding with the 3-D structure of input A.

As in the reference: a MiDaS depth map of input A (`Intel/dpt-hybrid-midas`), min-max normalised per image and
repeated to RGB, steers `diffusers/controlnet-depth-sdxl-1.0` at conditioning scale 0.5; the embedding comes in
through the IP-Adapter as in `IPAdapterRenderer`. The reference uses the fp16-safe SDXL VAE here and an empty
negative prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from pops.base.hub import looks_like_hub_id, resolve_file, resolve_model
from pops.base.reference import (
    CONTROLNET_DEPTH,
    DEPTH_ESTIMATOR,
    FP16_FIX_VAE,
    IP_ADAPTER_REPO,
    IP_ADAPTER_WEIGHT,
    SDXL_BASE,
)
from pops.encoders.clip import as_rgb, default_device, default_dtype
from pops.renderers.ipadapter import IPAdapterRenderer, load_ip_adapter, per_prompt_ip_adapter, sdxl_load_kwargs
from pops.renderers.pipelines import dtype_kwarg, prepare_pipeline


class DepthEstimator:
    """DPTForDepthEstimation + DPTImageProcessor → RGB depth control images."""

    def __init__(self, model, processor, *, device=None, dtype=None):
        self.device = default_device(device)
        self.dtype = default_dtype(self.device, dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.processor = processor

    @classmethod
    def from_pretrained(cls, repo_or_path: str = DEPTH_ESTIMATOR, *, device=None, dtype=None) -> DepthEstimator:
        from transformers import DPTForDepthEstimation, DPTImageProcessor  # heavy: only for the depth renderer

        source = resolve_model(repo_or_path, what="depth estimator")
        dev = default_device(device)
        model = DPTForDepthEstimation.from_pretrained(source, dtype=default_dtype(dev, dtype))
        return cls(model, DPTImageProcessor.from_pretrained(source), device=dev, dtype=dtype)

    @torch.no_grad()
    def __call__(self, images: Sequence, size: tuple[int, int]) -> list[Image.Image]:
        """Images (PIL or paths) → depth maps resized to `size` (height, width), each scaled to [0, 255] grey RGB."""
        pixels = self.processor(images=[as_rgb(x) for x in images], return_tensors="pt").pixel_values
        depth = self.model(pixel_values=pixels.to(device=self.device, dtype=self.dtype)).predicted_depth
        depth = F.interpolate(depth[:, None].float(), size=size, mode="bicubic", align_corners=False)
        low = depth.amin(dim=(1, 2, 3), keepdim=True)
        high = depth.amax(dim=(1, 2, 3), keepdim=True)
        span = high - low
        # A flat depth map (span 0) becomes all zeros rather than NaN.
        depth = torch.where(span > 0, (depth - low) / torch.where(span > 0, span, 1.0), 0.0)
        grey = (depth.clamp(0, 1) * 255.0).round().to(torch.uint8).cpu()
        return [Image.fromarray(g[0].numpy()).convert("RGB") for g in grey]


class IPAdapterDepthRenderer(IPAdapterRenderer):
    """`IPAdapterRenderer` on a StableDiffusionXLControlNetPipeline; `structure` (input A) sets the depth."""

    default_negative_prompt = ""
    # Equations and the UI hand this renderer the picture of each step's input A (pops.equation.record).
    takes_structure = True

    def __init__(
        self,
        pipe,
        depth_estimator: DepthEstimator,
        *,
        structure=None,
        controlnet_conditioning_scale: float = 0.5,
        **options,
    ):
        super().__init__(pipe, **options)
        self.depth_estimator = depth_estimator
        self.structure = structure
        self.controlnet_conditioning_scale = float(controlnet_conditioning_scale)

    @classmethod
    def from_components(
        cls,
        *,
        ip_adapter,
        depth_estimator,
        ip_adapter_weight=IP_ADAPTER_WEIGHT,
        device=None,
        dtype=None,
        **components_and_options,
    ):
        """Build from model objects (unet, controlnet, vae, text_encoder(_2), tokenizer(_2), scheduler)."""
        from diffusers import StableDiffusionXLControlNetPipeline

        names = ("unet", "controlnet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
        parts = {k: components_and_options.pop(k) for k in names}
        pipe = StableDiffusionXLControlNetPipeline(**parts, add_watermarker=False)
        load_ip_adapter(pipe, ip_adapter, ip_adapter_weight)
        pipe = prepare_pipeline(pipe, device=device, dtype=dtype)
        return cls(pipe, depth_estimator, **components_and_options)

    @classmethod
    def from_pretrained(
        cls,
        base: str = SDXL_BASE,
        *,
        controlnet: str = CONTROLNET_DEPTH,
        depth_estimator: str = DEPTH_ESTIMATOR,
        vae: str | None = FP16_FIX_VAE,
        ip_adapter: str = IP_ADAPTER_REPO,
        ip_adapter_weight: str = IP_ADAPTER_WEIGHT,
        device=None,
        dtype=None,
        cpu_offload: bool = False,
        **options,
    ) -> IPAdapterDepthRenderer:
        """Load SDXL, the depth ControlNet, the depth estimator and the IP-Adapter; `vae=None` keeps SDXL's own."""
        # Settle where every piece comes from before the heavy imports and loads: a missing one fails in a second.
        source = resolve_model(base, what="SDXL base")
        controlnet_source = resolve_model(controlnet, what="depth ControlNet")
        depth_source = resolve_model(depth_estimator, what="depth estimator")
        vae_source = resolve_model(vae, what="SDXL VAE") if vae else None
        weights = resolve_file(ip_adapter, ip_adapter_weight, what="IP-Adapter weights")

        from diffusers import AutoencoderKL, ControlNetModel, StableDiffusionXLControlNetPipeline

        dev = default_device(device)
        dt = default_dtype(dev, dtype)
        estimator = DepthEstimator.from_pretrained(depth_source, device=dev, dtype=dt)
        extra = {}
        if vae_source:
            extra["vae"] = AutoencoderKL.from_pretrained(vae_source, **dtype_kwarg(dt))
        net_kwargs = sdxl_load_kwargs(dtype=dt, from_hub=looks_like_hub_id(controlnet_source))
        net = ControlNetModel.from_pretrained(controlnet_source, **net_kwargs)
        pipe = StableDiffusionXLControlNetPipeline.from_pretrained(
            source, controlnet=net, **extra, **sdxl_load_kwargs(dtype=dt, from_hub=looks_like_hub_id(source))
        )
        load_ip_adapter(pipe, weights, "")
        pipe = prepare_pipeline(pipe, device=dev, dtype=dt, cpu_offload=cpu_offload)
        return cls(pipe, estimator, **options)

    @classmethod
    def from_settings(cls, s) -> IPAdapterDepthRenderer:
        """Load from checked settings (pops.renderers.settings, the reference's values by default)."""
        return cls.from_pretrained(
            s.base,
            controlnet=s.controlnet,
            depth_estimator=s.depth_estimator,
            vae=s.vae,
            ip_adapter=s.ip_adapter,
            ip_adapter_weight=s.ip_adapter_weight,
            device=s.device,
            dtype=s.dtype,
            cpu_offload=s.cpu_offload,
            **s.options(),
        )

    def depth_maps(self, structure, batch: int) -> list[Image.Image]:
        images = [structure] if not isinstance(structure, (list, tuple)) else list(structure)
        if len(images) not in (1, batch):
            raise ValueError(
                f"got {len(images)} structure images for {batch} embeddings; give one, or one per embedding"
            )
        maps = self.depth_estimator(images, size=(self.size, self.size))
        return maps * batch if len(maps) == 1 else maps

    @torch.no_grad()
    def render(self, embeds: torch.Tensor, *, generator=None, structure=None) -> list[Image.Image]:
        """B raw embeddings → B images whose depth follows `structure` (one image for all, or one per embedding;
        defaults to the renderer's `structure`)."""
        structure = self.structure if structure is None else structure
        if structure is None:
            raise ValueError("the depth renderer needs a structure image (input A) to take the depth from")
        kwargs = self._call_kwargs(embeds, generator)
        kwargs["image"] = self.depth_maps(structure, len(kwargs["prompt"]))
        kwargs["controlnet_conditioning_scale"] = self.controlnet_conditioning_scale
        with per_prompt_ip_adapter(self.pipe) as pipe:
            return list(pipe(**kwargs).images)
