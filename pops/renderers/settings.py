"""Renderer folders: a `renderer.json` that names the renderer's type (every saved renderer has one) and, for the real
stack, where the models come from and how to run them.

    {"type": "kandinsky", "decoder": "kandinsky-community/kandinsky-2-2-decoder",
     "prior": "kandinsky-community/kandinsky-2-2-prior", "num_inference_steps": 50, "guidance_scale": 4.0,
     "size": 512, "device": null, "dtype": null, "cpu_offload": false}

A source is a hub id or a local folder; a relative folder is read relative to the renderer folder first, so a
models folder that carries its own copies can be moved. The weights are not copied into the folder: they stay in
the hub cache or in the folders named. Every setting has the reference's value as default; an unknown key is a
one-line error (pops.base.schema.from_mapping). This module imports nothing heavy: the models folder and the CLI write
and read these files without diffusers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pops.base import checks
from pops.base.devices import check_device_name, check_dtype_name
from pops.base.files import atomic_write_json
from pops.base.reference import (
    CONTROLNET_DEPTH,
    DEPTH_ESTIMATOR,
    FP16_FIX_VAE,
    IP_ADAPTER_REPO,
    IP_ADAPTER_WEIGHT,
    KANDINSKY_DECODER,
    KANDINSKY_PRIOR,
    SDXL_BASE,
)
from pops.base.schema import from_mapping, to_mapping

# Every saved renderer folder holds this file: {"type": <a type of pops.renderers.RENDERER_TYPES>, ...settings}.
RENDERER_CONFIG_NAME = "renderer.json"


def write_renderer_config(folder: str | Path, type_name: str, settings: dict[str, Any] | None = None) -> Path:
    """Write `folder`/renderer.json: {"type": type_name, **settings} (what `renderer_type` reads back)."""
    return atomic_write_json(Path(folder) / RENDERER_CONFIG_NAME, {"type": type_name, **(settings or {})})


def read_renderer_config(folder: str | Path, type_name: str) -> dict[str, Any]:
    """The settings of a saved renderer of `type_name` (its renderer.json without "type"); ValueError otherwise."""
    path = Path(folder) / RENDERER_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {RENDERER_CONFIG_NAME} in {folder} (not a saved renderer)")
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict) or raw.pop("type", None) != type_name:
            raise TypeError(f'"type" is not "{type_name}"')
    except (TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"bad {RENDERER_CONFIG_NAME} in {folder}: {exc}") from None
    return raw


@dataclass
class PipelineSettings:
    """What every diffusers renderer takes: where it runs and how long it denoises."""

    num_inference_steps: int = 50
    guidance_scale: float = 4.0
    size: int = 512
    device: str | None = None  # None: cuda when available, else cpu
    dtype: str | None = None  # fp16 | bf16 | fp32; None: fp16 on a GPU, fp32 on a CPU
    cpu_offload: bool = False  # accelerate's model offload: each model visits the GPU only while it runs

    def __post_init__(self):
        self.num_inference_steps = checks.steps(self.num_inference_steps, "num_inference_steps")
        # The pipelines' own meaning (diffusers): a scale of 1 or less runs without guidance.
        self.guidance_scale = checks.real(self.guidance_scale, "guidance_scale", 0.0, checks.MAX_GUIDANCE)
        self.size = checks.image_side(self.size, "size")
        check_dtype_name(self.dtype)
        check_device_name(self.device)

    # Fields naming a model (hub id or folder); relative folders are read relative to the renderer folder.
    # (Not annotated: a class constant, not a setting.)
    sources = ()

    def options(self) -> dict[str, Any]:
        """The renderer constructor's keyword arguments (steps, guidance, size and the type's own)."""
        skip = {"device", "dtype", "cpu_offload", *self.sources}
        return {k: v for k, v in to_mapping(self).items() if k not in skip}


@dataclass
class KandinskySettings(PipelineSettings):
    """Kandinsky 2.2 decoder; the negative is the prior repo's image-encoder embedding of an all-zeros input."""

    decoder: str = KANDINSKY_DECODER
    prior: str = KANDINSKY_PRIOR
    sources = ("decoder", "prior")


@dataclass
class IPAdapterSettings(PipelineSettings):
    """SDXL (base 1.0, or any SDXL checkpoint in diffusers layout: a hub id or folder) + IP-Adapter."""

    guidance_scale: float = 5.0
    size: int = 1024
    base: str = SDXL_BASE
    ip_adapter: str = IP_ADAPTER_REPO
    ip_adapter_weight: str = IP_ADAPTER_WEIGHT
    prompt: str = ""
    negative_prompt: str | None = None  # None: the renderer's own (the reference's)
    sources = ("base", "ip_adapter")

    def options(self) -> dict[str, Any]:
        return {k: v for k, v in super().options().items() if k != "ip_adapter_weight"}


@dataclass
class IPAdapterDepthSettings(IPAdapterSettings):
    """… + a depth ControlNet on the depth map of input A; `vae` None keeps the SDXL checkpoint's own."""

    controlnet: str = CONTROLNET_DEPTH
    depth_estimator: str = DEPTH_ESTIMATOR
    vae: str | None = FP16_FIX_VAE
    controlnet_conditioning_scale: float = 0.5
    sources = ("base", "ip_adapter", "controlnet", "depth_estimator", "vae")


SETTINGS = {"kandinsky": KandinskySettings, "ipadapter": IPAdapterSettings, "ipadapter-depth": IPAdapterDepthSettings}


def settings_class(type_name: str) -> type[PipelineSettings]:
    if type_name not in SETTINGS:
        raise ValueError(f"{type_name!r} is not a real-stack renderer type; known: {', '.join(SETTINGS)}")
    return SETTINGS[type_name]


def make_settings(type_name: str, values: dict[str, Any] | None = None, *, what: str = "renderer settings"):
    """Checked settings of `type_name` from a mapping (unknown keys and bad values: one-line ValueError)."""
    return from_mapping(settings_class(type_name), values, what=what)


def write_renderer_folder(folder: str | Path, type_name: str, **values) -> Path:
    """Write `folder`/renderer.json for a real-stack renderer: every setting, the reference's where not given."""
    settings = make_settings(type_name, values, what=f"{type_name} renderer")
    return write_renderer_config(folder, type_name, to_mapping(settings))


def read_renderer_folder(folder: str | Path, type_name: str, **overrides) -> PipelineSettings:
    """The settings saved in `folder` (renderer.json of `type_name`), `overrides` that are not None on top, and
    every source that names a folder beside the renderer resolved to that folder."""
    folder = Path(folder)
    raw = read_renderer_config(folder, type_name)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    settings = make_settings(type_name, raw, what=str(folder / RENDERER_CONFIG_NAME))
    for name in settings.sources:
        ref = getattr(settings, name)
        if ref is not None and not Path(ref).expanduser().is_absolute() and (folder / ref).exists():
            setattr(settings, name, str(folder / ref))
    return settings
