"""File readers: every file pops reads from a user goes through one of these, so a missing, empty, truncated,
corrupt or foreign file is ONE line naming the file (never a library's traceback).

* `read_text(path, what)`, `read_json(path, what)`: UTF-8 text, JSON.
* `read_safetensors(path, what)`: every tensor and the metadata of a safetensors file.
* `load_torch(path, what)`: a `.pt`/`.pth` file, tensors only (`weights_only=True`: nothing is unpickled beyond them).
* `read_image(path, what)`: a picture as RGB; a decompression bomb (more than MAX_IMAGE_PIXELS), a picture smaller
  than MIN_IMAGE_SIDE, bytes that are no image, and a truncated image are refused before they are decoded.

Missing files raise FileNotFoundError, folders IsADirectoryError, everything else ValueError — the errors the CLI's
`run_or_fail` and the UI turn into one line. `what` names the file's role ("operator weights", "pairs file", …).
This module imports only the standard library until a reader runs (torch, safetensors and PIL lazily).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from pops.base.errors import reason

# 64 megapixels: far above the 512-1024 px pictures any encoder here sees, far below what exhausts memory
# (PIL's own bomb limit is 89 M pixels as a warning, 179 M as an error).
MAX_IMAGE_PIXELS = 64_000_000
# Smaller pictures hold nothing to encode (and some image processors cannot tell their channel axis).
MIN_IMAGE_SIDE = 8


def _a(what: str) -> str:
    return f"{'an' if what[:1].lower() in 'aeiou' else 'a'} {what}"


def check_file(path: str | Path, what: str = "file") -> Path:
    """`path` as a Path, if it is a non-empty regular file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such {what}: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not {_a(what)}")
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file, not {_a(what)}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file, not {_a(what)}")
    return path


def read_text(path: str | Path, what: str = "text file") -> str:
    path = check_file(path, what)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not {_a(what)} (not UTF-8 text)") from None


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    path = Path(path)
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not {_a(what)} (invalid JSON: {exc})") from None


def read_safetensors(path: str | Path, what: str = "safetensors file") -> tuple[dict, dict[str, str]]:
    """({name: tensor}, metadata) of a safetensors file; ValueError naming the file when it is not a whole one."""
    from safetensors import safe_open

    path = check_file(path, what)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # safetensors raises its own error types (SafetensorError) for damaged files
        raise ValueError(f"{path}: not a readable safetensors file ({reason(exc)})") from None
    return tensors, metadata


def read_safetensors_shapes(path: str | Path, what: str = "safetensors file") -> dict[str, tuple[int, ...]]:
    """{name: shape} of a safetensors file from its header alone (no tensor is read; a truncated file, whose header
    claims more bytes than it holds, is refused as read_safetensors refuses it)."""
    from safetensors import safe_open

    path = check_file(path, what)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as exc:  # SafetensorError for a damaged file
        raise ValueError(f"{path}: not a readable safetensors file ({reason(exc)})") from None


def load_torch(path: str | Path, what: str = "tensor file") -> Any:
    """A `.pt`/`.pth` file of tensors (and plain containers of them); no code is unpickled."""
    import torch

    path = check_file(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike mean "not a plain tensor file"
        why = reason(exc)
        if "Weights only load failed" in why:
            why = "it holds objects other than tensors, which could run code when loaded; refused"
        raise ValueError(f"{path}: not a plain {what} ({why})") from None


def read_image(path: str | Path, what: str = "image"):
    """The picture at `path`, decoded, as an RGB PIL image."""
    from PIL import Image

    path = check_file(path, what)
    too_big = f"more than the {MAX_IMAGE_PIXELS // 1_000_000} megapixels pops reads (a decompression bomb?)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(f"{path}: {too_big}") from None
    except Exception as exc:  # UnidentifiedImageError: bytes that are no picture (PIL raises several types)
        raise ValueError(f"{path}: not a readable {what} ({reason(exc)})") from None
    with image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{path}: {width}x{height} pixels, {too_big}")
        if min(width, height) < MIN_IMAGE_SIDE:
            raise ValueError(f"{path}: {width}x{height} pixels; pictures need at least {MIN_IMAGE_SIDE} pixels a side")
        try:
            image.load()
            return image.convert("RGB")
        except Exception as exc:  # a truncated or damaged picture: OSError, SyntaxError, ValueError, …
            raise ValueError(f"{path}: not a readable {what} ({reason(exc)})") from None
