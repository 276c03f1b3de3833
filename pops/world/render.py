"""Rendering the world's pictures: objects (plain, textured, edited), objects in scenes, pairs, dressed figures.

All functions are pure: the same arguments give the same pixels. Poses are (x, y, r, angle): the object's centre and
radius in image sizes and its rotation in degrees, so they do not depend on the image size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from pops.base.images import dilate
from pops.world.edits import EDITS
from pops.world.figure import BODY, GARMENTS, LAYERS, garment_bbox
from pops.world.raster import (
    WHITE,
    affine,
    blur,
    composite_in_place,
    draw_parts,
    polys_mask,
    rgb,
    to_float,
    to_image,
    white,
)
from pops.world.scenes import scene_crop
from pops.world.shapes import SHAPES
from pops.world.textures import texture_crop

Pose = tuple[float, float, float, float]


def _object_affine(pose: Pose, size: int) -> np.ndarray:
    x, y, r, angle = pose
    return affine(r * size, angle, x * size, y * size)


def object_mask(shape: str, pose: Pose, size: int) -> np.ndarray:
    """Coverage of the whole object (all parts, holes kept) as an (S, S) float array."""
    m = _object_affine(pose, size)
    return np.maximum.reduce([to_float(polys_mask(part.polys, m, size)) for part in SHAPES[shape]])


def draw_object(canvas: np.ndarray, shape: str, pose: Pose, fill: tuple | None = None) -> np.ndarray:
    """Draw an object onto `canvas` in place; returns its coverage mask (S, S) float."""
    return draw_parts(canvas, SHAPES[shape], _object_affine(pose, canvas.shape[0]), fill)


def plain_object(shape: str, pose: Pose, size: int) -> Image.Image:
    """The object in its default colours on white."""
    canvas = white(size)
    draw_object(canvas, shape, pose)
    return to_image(canvas)


def textured_object(shape: str, pose: Pose, texture: str, offset: tuple[float, float], size: int) -> Image.Image:
    """The object made of `texture` (its parts keep their relative shading) on white."""
    canvas = white(size)
    draw_object(canvas, shape, pose, ("texture", texture_crop(texture, size, offset)))
    return to_image(canvas)


def texture_patch(texture: str, offset: tuple[float, float], size: int) -> Image.Image:
    """A square crop of the texture at the same scale as on objects."""
    return to_image(texture_crop(texture, size, offset))


def edited_object(shape: str, pose: Pose, edit: str, size: int) -> Image.Image:
    """The object on white after one instruct edit (see pops.world.edits.EDITS for the exact definitions)."""
    e = EDITS[edit]
    x, y, r, angle = pose
    fill = None
    if e.kind == "scale":
        r *= float(e.value)
    elif e.kind == "rotate":
        angle += float(e.value)
    elif e.kind == "colour":
        fill = ("colour", e.value)
    elif e.kind == "pattern":
        fill = ("pattern", *e.value)
    pose = (x, y, r, angle)
    canvas = white(size)
    if e.kind == "glow":
        halo = blur(dilate(object_mask(shape, pose, size), max(1, round(0.03 * size))), 0.04 * size)
        composite_in_place(canvas, rgb(e.value), np.clip(2.0 * halo, 0.0, 1.0))
    mask = draw_object(canvas, shape, pose, fill)
    if e.kind == "outline":
        ring = dilate(mask, max(1, round(float(e.value) * size))) - mask
        composite_in_place(canvas, np.zeros(3, np.float32), np.clip(ring, 0.0, 1.0))
    elif e.kind == "pale":
        canvas = canvas * (1.0 - float(e.value)) + WHITE * float(e.value)
    image = to_image(canvas)
    if e.kind == "blur":
        image = image.filter(ImageFilter.GaussianBlur(float(e.value) * size))
    elif e.kind == "pixelate":
        n = int(e.value)
        image = image.resize((n, n), Image.BOX).resize((size, size), Image.NEAREST)
    return image


def scene_image(scene: str, offset: float, size: int) -> Image.Image:
    return to_image(scene_crop(scene, size, offset))


def object_in_scene(shape: str, pose: Pose, scene: str, offset: float, size: int) -> Image.Image:
    """The object (default colours) standing in the scene, with a soft drop shadow."""
    canvas = scene_crop(scene, size, offset).copy()
    x, y, r, angle = pose
    shadow = blur(object_mask(shape, (x + 0.02, y + 0.03, r, angle), size), 0.015 * size)
    canvas *= (1.0 - 0.35 * shadow)[..., None]
    draw_object(canvas, shape, pose)
    return to_image(canvas)


def object_pair(shapes: tuple[str, str], poses: tuple[Pose, Pose], size: int) -> Image.Image:
    """Two objects in one picture on white."""
    canvas = white(size)
    for shape, pose in zip(shapes, poses):
        draw_object(canvas, shape, pose)
    return to_image(canvas)


def _figure_affine(placement: tuple[float, float, float], size: int) -> np.ndarray:
    x, y, scale = placement
    s = scale * size
    return affine(s, 0.0, x * size - 0.5 * s, y * size - 0.5 * s)


def dressed_figure(outfit: dict[str, str], placement: tuple[float, float, float], size: int) -> Image.Image:
    """The simple figure wearing `outfit` (slot -> variant), garments layered in LAYERS order, on white."""
    canvas = white(size)
    m = _figure_affine(placement, size)
    draw_parts(canvas, BODY, m)
    for slot in LAYERS:
        if slot in outfit:
            draw_parts(canvas, GARMENTS[slot][outfit[slot]], m)
    return to_image(canvas)


def garment_crop(slot: str, variant: str, jitter: tuple[float, float, float], size: int) -> Image.Image:
    """A garment alone on white, its bounding box centred and filling most of the image (jitter: scale, dx, dy)."""
    scale, dx, dy = jitter
    x0, y0, x1, y1 = garment_bbox(slot, variant)
    px = scale * size / (1.3 * max(x1 - x0, y1 - y0))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    m = affine(px, 0.0, (0.5 + dx) * size - cx * px, (0.5 + dy) * size - cy * px)
    canvas = white(size)
    draw_parts(canvas, GARMENTS[slot][variant], m)
    return to_image(canvas)
