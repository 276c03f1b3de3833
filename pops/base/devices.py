"""Devices and precisions, named once: what `--device`, `--dtype` and `--generator-device` accept everywhere.

* `resolve_device("cuda:1")` → a torch.device, or a one-line ValueError when the machine has no such device (CUDA
  asked for on a CPU machine fails here, before any model loads); None → cuda when available, else cpu.
* `resolve_dtype("bf16")` → torch.bfloat16; None → fp16 on a GPU (as the reference runs), fp32 on a CPU (fp16 is slow
  or unsupported there).
* `place(model, device, dtype)`: an operator (or any module) moved to `--device`/`--dtype` when either is given — what
  every command that samples does with the options `check_placement` checked.
* `make_generator(seed, device)`: the torch.Generator that draws sampling noise. Noise drawn on the CPU is the same
  on every machine; the reference draws with a CUDA generator, whose numbers differ from the CPU's for the same
  seed — `device="cuda"` reproduces the reference's samples on a GPU.

Torch is imported on use: the CLI and the configs read the names without it.
"""

from __future__ import annotations

from typing import Any

# Accepted names -> torch attribute.
DTYPES = {
    "fp32": "float32",
    "float32": "float32",
    "fp16": "float16",
    "float16": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
}
DTYPE_HELP = "fp16, bf16 or fp32"


def check_dtype_name(name: str | None) -> str | None:
    """`name` if it names a precision (fp32, fp16, bf16 or their torch spellings); ValueError otherwise."""
    if name is not None and str(name) not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use {DTYPE_HELP}")
    return name


def check_device_name(name: str | None) -> str | None:
    """`name` if torch reads it as a device (cpu, cuda, cuda:1, mps …); ValueError otherwise. Whether this machine
    has it is `resolve_device`'s question."""
    if name is None:
        return None
    import torch

    try:
        torch.device(str(name))
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    return name


def resolve_device(device: Any = None):
    """The torch.device to run on; a one-line ValueError when `device` names hardware this machine lacks."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device_name(str(device))
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} was asked for but this machine has no CUDA GPU; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} was asked for but only {torch.cuda.device_count()} GPU(s) exist")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but this machine has no MPS device; use --device cpu")
    return dev


def resolve_dtype(dtype: Any = None, device: Any = None):
    """A torch.dtype from a name (fp32, fp16, bf16 …) or a dtype; None → fp16 on a GPU, fp32 otherwise."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None:
        return getattr(torch, DTYPES[check_dtype_name(str(dtype))])
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    return torch.float16 if dev.type == "cuda" else torch.float32


def dtype_name(dtype) -> str:
    """torch.bfloat16 → "bf16" (the short names the options take)."""
    import torch

    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def make_generator(seed: int, device: Any = "cpu"):
    """A torch.Generator seeded `seed` on `device` (checked as `resolve_device` does)."""
    import torch

    return torch.Generator(resolve_device(device)).manual_seed(int(seed))


def check_placement(device: Any = None, dtype: Any = None, generator_device: Any = "cpu") -> None:
    """The CLI's --device, --dtype and --generator-device, checked together before anything loads (one-line
    ValueError): the devices must exist here, and noise drawn on a GPU needs the operators on a GPU."""
    dev = resolve_device(device)
    check_dtype_name(dtype)
    gen = resolve_device(generator_device if generator_device is not None else "cpu")
    if gen.type != "cpu" and dev.type != gen.type:
        raise ValueError(
            f"--generator-device {generator_device} draws the noise on the GPU: run there too (--device {gen.type})"
        )


def place(model, device: Any = None, dtype: Any = None):
    """`model` (an Operator or a torch module) on `device` in `dtype` when either is given (dtype None keeps its
    precision; device None: cuda when available); unchanged when neither is. Returns it."""
    if device is None and dtype is None:
        return model
    target = resolve_device(device)
    model.to(device=target, dtype=resolve_dtype(dtype, target) if dtype is not None else None)
    return model
