"""Pictures the specifications draw: random noise, solid colours, a decompression bomb; and their pixels."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def random_images(n: int, seed: int = 0, size: int | tuple[int, int] = (40, 48)) -> list[Image.Image]:
    """n RGB pictures of uniform random pixels (size: height, width, or one side), the same for the same seed."""
    rng = np.random.default_rng(seed)
    shape = (size, size) if isinstance(size, int) else size
    return [Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)) for _ in range(n)]


def pixels(images) -> np.ndarray:
    """Pixel values as int16, so differences do not wrap around: one picture's array, or a list's stacked."""
    if isinstance(images, Image.Image):
        return np.asarray(images, dtype=np.int16)
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


def assert_close_images(a, b, tol: int = 2) -> None:
    # Batched and single runs differ only by float rounding; a few uint8 levels at most.
    assert np.abs(pixels(a) - pixels(b)).max() <= tol


def solid(prompt: str, generator: torch.Generator) -> Image.Image:
    """A scripted text-to-image model: a 64 px picture of one colour, its red drawn from the generator."""
    return Image.new("RGB", (64, 64), (int(torch.randint(0, 255, (1,), generator=generator)), 90, 40))


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A PNG whose header claims width x height pixels (a decompression bomb: tiny file, huge picture)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path
