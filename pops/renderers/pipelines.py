"""Small helpers shared by the real-model (diffusers) renderers: input checks, seeding, device placement."""

from __future__ import annotations

import torch

from pops.base.checks import offset_seed
from pops.base.devices import make_generator
from pops.encoders.clip import default_device, default_dtype


def dtype_kwarg(dtype: torch.dtype) -> dict:
    """The weights-dtype keyword of diffusers' `from_pretrained`: recent releases take `dtype=` and warn on
    `torch_dtype=`; older ones (pyproject allows them) only know `torch_dtype=`."""
    try:  # the resolver of the two spellings ships with the releases that accept `dtype=`
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def check_embeds(embeds, dim: int) -> torch.Tensor:
    """(B, D) or (D,) finite embeddings of the renderer's width → float32 (B, D); ValueError otherwise."""
    if not isinstance(embeds, torch.Tensor):
        raise ValueError(f"expected a tensor of embeddings, got {type(embeds).__name__}")
    if embeds.ndim == 1:
        embeds = embeds[None]
    if embeds.ndim != 2 or embeds.shape[0] == 0:
        raise ValueError(f"expected embeddings of shape (B, {dim}), got {tuple(embeds.shape)}")
    if embeds.shape[1] != dim:
        raise ValueError(f"embeddings are {embeds.shape[1]}-d but this renderer expects {dim}-d")
    embeds = embeds.detach().float().cpu()
    if not torch.isfinite(embeds).all():
        raise ValueError("embeddings contain NaN or inf values")
    return embeds


def check_generator(generator, batch: int) -> None:
    """diffusers accepts one generator, or a list with one per image (each image then has its own seed)."""
    if isinstance(generator, list) and len(generator) != batch:
        raise ValueError(f"got {len(generator)} generators for {batch} embeddings; pass one, or one per embedding")


def check_size(size: int, multiple: int) -> int:
    if int(size) != size or size < multiple or size % multiple:
        raise ValueError(f"size must be a positive multiple of {multiple}, got {size}")
    return int(size)


def seeded_generators(seed: int, count: int, device: str = "cpu") -> list[torch.Generator]:
    """One generator per image, seeded seed, seed+1, … (wrapping at 2**64): an image's noise depends on its seed
    alone, not on the batch it is rendered in; on the CPU (default) not on the machine either (diffusers draws on the
    generator's device, then moves). `device="cuda"` draws as the reference's scripts do on a GPU."""
    return [make_generator(offset_seed(seed, i), device) for i in range(count)]


def prepare_pipeline(pipe, *, device=None, dtype=None, cpu_offload: bool = False):
    """Cast a pipeline and place it: on `device`, or with accelerate's model CPU offload (GPU memory saver:
    each sub-model visits the GPU only while it runs)."""
    dev = default_device(device)
    dtype = default_dtype(dev, dtype)
    if pipe.dtype != dtype:  # a no-op cast still warns about modules kept in fp32, so skip it
        pipe.to(dtype=dtype)
    if cpu_offload:
        if not torch.cuda.is_available():
            raise ValueError("cpu offload needs a CUDA GPU (it moves each model onto the GPU while it runs)")
        pipe.enable_model_cpu_offload(device=dev if dev.type == "cuda" else "cuda")
    else:
        pipe.to(dev)
    return pipe
