"""Small image operations the recipes share: masks, boxes, cut-outs, pasting on white."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

WHITE = (255, 255, 255)
Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), pixels, x1/y1 exclusive


def mask_array(mask) -> np.ndarray:
    """A mask (PIL image, uint8 array in [0, 255], bool or float array in [0, 1]) as float32 in [0, 1], (H, W)."""
    if isinstance(mask, Image.Image):
        return np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    arr = np.asarray(mask)
    if arr.ndim == 3:
        arr = arr[..., 0] if arr.shape[-1] in (1, 3, 4) else arr[0]
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def mask_image(mask) -> Image.Image:
    """Any mask as an 8-bit "L" image."""
    return Image.fromarray(np.round(mask_array(mask) * 255).astype(np.uint8), mode="L")


def clip_box(box: Sequence[float], size: tuple[int, int]) -> Box:
    """Round a float box to whole pixels inside an image of `size` (W, H); at least one pixel wide and high."""
    w, h = size
    x0 = int(min(max(np.floor(box[0]), 0), w - 1))
    y0 = int(min(max(np.floor(box[1]), 0), h - 1))
    x1 = int(min(max(np.ceil(box[2]), x0 + 1), w))
    y1 = int(min(max(np.ceil(box[3]), y0 + 1), h))
    return x0, y0, x1, y1


def box_area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def cutout(image: Image.Image, mask) -> Image.Image:
    """RGBA image whose alpha is the mask."""
    rgba = image.convert("RGB").copy()
    rgba.putalpha(mask_image(mask).resize(image.size))
    return rgba


def on_background(image: Image.Image, mask, background: Image.Image | None = None) -> Image.Image:
    """`image` where the mask is on, `background` (white when None) elsewhere; same position and size."""
    bg = Image.new("RGB", image.size, WHITE) if background is None else background.convert("RGB").resize(image.size)
    return Image.composite(image.convert("RGB"), bg, mask_image(mask).resize(image.size))


def paste_on_white(
    rgba: Image.Image, canvas: tuple[int, int], rng: np.random.Generator, scale: tuple[float, float] = (0.8, 0.95)
) -> Image.Image:
    """Scale a cut-out to a random fraction of the canvas's shorter side and paste it at a random position on white.

    The reference pastes its cut-outs this way at train time (scale 0.8-0.95); here it is done once, seeded.
    """
    cw, ch = canvas
    aspect = rgba.width / rgba.height
    s = float(rng.uniform(*scale))
    new_w = max(1, int(min(cw, ch * aspect) * s))
    new_h = max(1, min(ch, int(round(new_w / aspect))))
    resized = rgba.resize((new_w, new_h), Image.LANCZOS)
    x = int(rng.integers(0, cw - new_w + 1))
    y = int(rng.integers(0, ch - new_h + 1))
    out = Image.new("RGB", canvas, WHITE)
    out.paste(resized, (x, y), resized if resized.mode == "RGBA" else None)
    return out


def crop_by_mask(image: Image.Image, region: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """The region's pixels on white, cropped to the region's bounding box; and the cropped boolean mask."""
    arr = np.asarray(image.convert("RGB"))
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    sub = region[y0:y1, x0:x1]
    crop = np.where(sub[..., None], arr[y0:y1, x0:x1], 255).astype(np.uint8)
    return Image.fromarray(crop), sub


def pad_to_square(image: Image.Image) -> Image.Image:
    """Centre the image on a white square whose side is its longer side."""
    side = max(image.size)
    out = Image.new("RGB", (side, side), WHITE)
    out.paste(image.convert("RGB"), ((side - image.width) // 2, (side - image.height) // 2))
    return out
