"""Renderers: embeddings to pictures. The embedded world and the real Kandinsky/SDXL stack implement one protocol.

A saved renderer is a folder whose `renderer.json` names its type ({"type": "decoder", ...settings}). The table
`RENDERER_TYPES` maps each type to its class, by dotted path so that loading one type never imports another's
dependencies (a retrieval renderer does not pull in diffusers), and each real renderer imports its diffusers
pipeline only when it is built (reading its class, e.g. `takes_structure`, loads nothing). `load_renderer(folder)`
reads a folder by its type:

* the embedded world's types (retrieval, decoder) hold their weights in the folder: `save_pretrained(folder)` and
  `from_pretrained(folder)`;
* the real stack's types (kandinsky, ipadapter, ipadapter-depth) hold only their renderer.json — the hub ids or
  local folders of the models and the reference's settings (pops.renderers.settings writes and checks it) — and
  load through their `from_settings` (the folder's settings, device/dtype/offload overrides on top); their
  `from_pretrained` takes hub ids, as diffusers' pipelines do.

Adding a type is one table entry plus that class's loader.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from PIL import Image

from pops.renderers.settings import (
    RENDERER_CONFIG_NAME,
    make_settings,
    read_renderer_config,
    read_renderer_folder,
    write_renderer_config,
)

__all__ = [
    "RENDERER_CONFIG_NAME",
    "RENDERER_TYPES",
    "Renderer",
    "build_renderer",
    "load_renderer",
    "read_renderer_config",
    "renderer_class",
    "renderer_type",
    "write_renderer_config",
]

# Older folders may name their config otherwise; read, never written.
_CONFIG_NAMES = (RENDERER_CONFIG_NAME, "config.json", "pops_renderer.json")

# Renderer type -> "module:Class" with `from_settings(settings)` (real stack) or else `from_pretrained(folder)`.
RENDERER_TYPES = {
    "retrieval": "pops.renderers.retrieval:RetrievalRenderer",
    "decoder": "pops.renderers.decoder:DecoderRenderer",
    "kandinsky": "pops.renderers.kandinsky:KandinskyRenderer",
    "ipadapter": "pops.renderers.ipadapter:IPAdapterRenderer",
    "ipadapter-depth": "pops.renderers.ipadapter_depth:IPAdapterDepthRenderer",
}
# Types whose folder may be known by its name alone (folders written before renderer.json named the type).
_NAMED_BY_FOLDER = ("retrieval", "decoder")


@runtime_checkable
class Renderer(Protocol):
    """Turns B raw (un-normalised) embeddings, a (B, D) tensor, into B pictures in one call."""

    def render(self, embeds: torch.Tensor, *, generator: torch.Generator | None = None) -> list[Image.Image]: ...


def renderer_class(type_name: str) -> type:
    """The class saved renderers of `type_name` load with (imported now, not before)."""
    if type_name not in RENDERER_TYPES:
        raise ValueError(f"unknown renderer type {type_name!r}; known: {', '.join(RENDERER_TYPES)}")
    module, name = RENDERER_TYPES[type_name].split(":")
    return getattr(importlib.import_module(module), name)


def renderer_type(folder: str | Path) -> str | None:
    """The renderer type a folder holds: its config's "type", else (embedded types only) the folder's own name; None
    if neither is known."""
    folder = Path(folder)
    for name in _CONFIG_NAMES:
        config = folder / name
        if config.is_file():
            try:
                type_name = json.loads(config.read_text()).get("type")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                type_name = None
            if type_name in RENDERER_TYPES:
                return type_name
    # A diffusers pipeline saved as a real renderer's source (e.g. the decoder/ of a local Kandinsky copy) is not one.
    if folder.name in _NAMED_BY_FOLDER and not (folder / "model_index.json").is_file():
        return folder.name
    return None


def build_renderer(type_name: str, **settings) -> Renderer:
    """A real-stack renderer (kandinsky, ipadapter, ipadapter-depth) from settings alone (the reference's hub ids and
    values where not given; pops.renderers.settings) — what a renderer folder holds, without the folder."""
    checked = make_settings(type_name, {k: v for k, v in settings.items() if v is not None}, what=type_name)
    return renderer_class(type_name).from_settings(checked)


def load_renderer(folder: str | Path, *, device=None, dtype=None, cpu_offload: bool | None = None) -> Renderer:
    """The renderer saved in `folder`, loaded by the type its renderer.json names. `device`, `dtype` and
    `cpu_offload` (None: the folder's own settings) place the real stack's pipelines; the embedded renderers are
    small and run on the CPU."""
    folder = Path(folder)
    type_name = renderer_type(folder)
    if type_name is None:
        raise ValueError(
            f"{folder} holds no saved renderer (its {RENDERER_CONFIG_NAME} names none of: {', '.join(RENDERER_TYPES)})"
        )
    cls = renderer_class(type_name)
    if hasattr(cls, "from_settings"):  # the real stack's types: settings in renderer.json, weights from their sources
        return cls.from_settings(
            read_renderer_folder(folder, type_name, device=device, dtype=dtype, cpu_offload=cpu_offload)
        )
    return cls.from_pretrained(folder)
