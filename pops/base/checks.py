"""Boundary checks: one function per kind of value a user hands to pops, shared by the CLI, the Python API, equations
and the UI, so a value means the same everywhere and is refused everywhere in the same words.

Each check returns the value in its canonical type or raises `BadValue` with one line naming the argument. `BadValue`
is both a TypeError and a ValueError: API callers get the type error they expect for `steps="10"`, and every
`except ValueError` boundary (the CLI's `run_or_fail`, the UI's status line) turns it into one message.

The meanings, once:

* guidance scale: a finite number in [1, MAX_GUIDANCE]. 1 means no guidance (the conditional prediction alone, one
  pass per step); above 1, classifier-free guidance `uncond + s (cond - uncond)`; None, where an API takes it, the
  operator's own. Scales below 1 are refused rather than read as "no guidance" (the reference skips guidance for
  s <= 1, the formula would extrapolate away from the inputs): to sample unconditionally, drop every input.
* steps: an integer in [1, NUM_TRAIN_TIMESTEPS] (the schedulers cannot space more steps than they were trained with).
* seeds: integers in [0, 2**64 - 1] (a torch.Generator's range); training seeds in [0, 2**32 - 1] (accelerate also
  seeds numpy's legacy generator, which takes 32 bits). Per-row seeds `seed + i` wrap modulo 2**64 (`offset_seed`).
* threads and worker processes: at most the cores this process may run on.
* counts (samples, batch sizes): positive integers whose memory estimate fits the memory this machine has free.
* learning rates: finite and positive.

This module imports only the standard library and pops.base.reference, so every room may use it.
"""

from __future__ import annotations

import math
import numbers
import operator
import os

from pops.base.errors import BadValue
from pops.base.reference import NUM_TRAIN_TIMESTEPS

MAX_SEED = 2**64 - 1
MAX_TRAINING_SEED = 2**32 - 1
# Far beyond any useful scale (the paper uses 1 and 8): larger ones only saturate the clipped x0 prediction.
MAX_GUIDANCE = 100.0
# The share of the free memory one call may plan to use: the estimates below count the big tensors only.
MEMORY_SHARE = 0.8


def integer(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (Python, numpy or 0-d torch; never a bool, a float or a string) in [minimum, maximum]."""
    if isinstance(value, (bool, str)):
        raise BadValue(f"{name} must be an integer, got {_shown(value)}")
    try:
        number = operator.index(value)
    except TypeError:
        raise BadValue(f"{name} must be an integer, got {_shown(value)}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        if maximum is None:
            raise BadValue(f"{name} must be an integer of at least {minimum}, got {number}")
        raise BadValue(f"{name} must be an integer in [{_bound(minimum)}, {_bound(maximum)}], got {number}")
    return number


def real(value, name: str, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite real number (int or float; never a bool, a string or a complex number) in [minimum, maximum]."""
    if isinstance(value, (bool, str, complex)) or not isinstance(value, numbers.Real):
        if not (hasattr(value, "item") and getattr(value, "ndim", 1) == 0):  # a 0-d numpy / torch number
            raise BadValue(f"{name} must be a number, got {_shown(value)}")
        value = value.item()
        if isinstance(value, (bool, complex)):
            raise BadValue(f"{name} must be a real number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise BadValue(f"{name} must be a finite number, got {number}")
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise BadValue(f"{name} must be in [{_bound(minimum)}, {_bound(maximum)}], got {number:g}")
    return number


def guidance(value, name: str = "guidance_scale") -> float | None:
    """A classifier-free guidance scale in [1, MAX_GUIDANCE] (1 = no guidance), or None (the operator's own)."""
    if value is None:
        return None
    number = real(value, name)
    if not 1.0 <= number <= MAX_GUIDANCE:
        raise BadValue(
            f"{name} must be in [1, {MAX_GUIDANCE:g}] (1 = no guidance), got {number:g}"
            + ("; to sample unconditionally, drop every input" if number < 1 else "")
        )
    return number


def steps(value, name: str = "num_inference_steps", minimum: int = 1) -> int | None:
    """A number of sampling (or denoising) steps in [minimum, NUM_TRAIN_TIMESTEPS], or None (the default)."""
    return None if value is None else integer(value, name, minimum, NUM_TRAIN_TIMESTEPS)


def seed(value, name: str = "seed", *, training: bool = False) -> int:
    """A seed in [0, 2**64 - 1] (training: [0, 2**32 - 1])."""
    return integer(value, name, 0, MAX_TRAINING_SEED if training else MAX_SEED)


def offset_seed(base: int, offset: int) -> int:
    """Seed `base + offset` wrapped into a generator's range (row i of a call seeded `base`)."""
    return (int(base) + int(offset)) % (MAX_SEED + 1)


def count(value, name: str, minimum: int = 1) -> int:
    """A positive count (samples, batch size, seeds, …)."""
    return integer(value, name, minimum)


def learning_rate(value, name: str = "lr") -> float:
    value = real(value, name)
    if value <= 0:
        raise BadValue(f"{name} must be a finite number > 0, got {value:g}")
    return value


def cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads(value, name: str = "threads") -> int | None:
    """Torch threads (or worker processes) in [1, cores()], or None (the command's default)."""
    if value is None:
        return None
    available = cores()
    number = integer(value, name, 1)
    if number > available:
        raise BadValue(f"{name} must be at most the {available} core(s) this process may use, got {number}")
    return number


# Picture sides a renderer or generator may be asked for (pixels): below 8 there is nothing to see (and some image
# processors cannot tell their channel axis), above 4096 one picture's latents and activations exhaust a GPU.
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 8, 4096


def image_side(value, name: str = "size") -> int:
    """The side of a square picture to make, in [MIN_IMAGE_SIDE, MAX_IMAGE_SIDE] pixels."""
    return integer(value, name, MIN_IMAGE_SIDE, MAX_IMAGE_SIDE)


def available_memory() -> int:
    """Bytes of memory this machine has free now (MemAvailable; the physical memory where /proc is absent)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: nothing is refused


def memory(nbytes: float, what: str, hint: str = "", available: int | None = None) -> None:
    """Refuse a call whose estimate `nbytes` (the big tensors it will allocate) exceeds what the machine has free
    (`available`: the free bytes of the device that will hold them, e.g. a GPU's; default this machine's memory)."""
    budget = MEMORY_SHARE * (available_memory() if available is None else available)
    if nbytes > budget:
        raise BadValue(
            f"{what} needs about {_size(nbytes)} of memory, more than the {_size(budget)} this machine can spare"
            + (f"; {hint}" if hint else "")
        )


# The speed the up-front time check assumes (floating-point operations a second): a fast machine's, so that only
# work no machine would finish in MAX_SECONDS is refused; what passes runs with a progress bar and its ETA.
FLOPS = {"cpu": 1e12, "cuda": 1e15}
MAX_SECONDS = 24 * 3600.0


def work(flops: float, what: str, hint: str = "", device="cpu") -> float:
    """Refuse a call whose estimate `flops` could not finish within MAX_SECONDS even at FLOPS' speed (one line:
    what, how long at best, and `hint`); returns those seconds."""
    seconds = flops / FLOPS["cuda" if getattr(device, "type", str(device)) == "cuda" else "cpu"]
    if seconds > MAX_SECONDS:
        raise BadValue(
            f"{what} would take at least {_duration(seconds)} even on a fast machine, more than the "
            f"{_duration(MAX_SECONDS)} pops runs one command for" + (f"; {hint}" if hint else "")
        )
    return seconds


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}" if seconds / size >= 10 else f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def device_memory(device) -> int | None:
    """Free bytes of a CUDA device (None for the CPU: `memory` then reads this machine's)."""
    if getattr(device, "type", str(device)) != "cuda":
        return None
    import torch  # here, not at the top: this module is read by `pops --help`, which loads no torch

    return torch.cuda.mem_get_info(device)[0]


def transformer_bytes(rows: int, tokens: int, width: int, layers: int, *, training: bool = False) -> float:
    """A lower-bound estimate of a transformer's float32 activation memory for `rows` sequences of `tokens`.

    Inference keeps one layer's activations at a time (q, k, v, attention output, the 4x feed-forward: ~12 x width
    per token, plus the token-by-token attention matrix); training keeps every layer's for the backward pass."""
    per_layer = rows * tokens * (12 * width + tokens) * 4
    return per_layer * (layers if training else 1) * (3 if training else 1)


def image_batch_bytes(rows: int, side: int) -> float:
    """A lower-bound estimate of a convolutional image encoder's float32 memory for `rows` pictures of side x side:
    the input and its first layers' outputs hold ~16 values per pixel (EfficientNet-Lite0's stem alone has 32
    channels at half the side: 8 per input pixel)."""
    return rows * side * side * 16 * 4


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.1f} PiB"


def _bound(value) -> str:
    named = {MAX_SEED: "2**64 - 1", MAX_TRAINING_SEED: "2**32 - 1"}
    if value is None:
        return "…"
    return f"{value:g}" if isinstance(value, float) else named.get(value, str(value))


def _shown(value) -> str:
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} ({type(value).__name__})"
