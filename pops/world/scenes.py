"""The world's scenes: empty procedural backgrounds (sky and grass, beach, night, desert, room, forest, …).

A scene is painted once per image size on a panorama WIDTH image sizes wide (gradients in numpy, shapes as
anti-aliased polygons) and cached; jitter is the horizontal crop offset. Scenes are seeded by their name only.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image

from pops.world.raster import Poly, affine, circle, ellipse, polys_mask, rect, to_float

WIDTH = 1.5  # panorama width in image sizes; crops start anywhere in [0, WIDTH - 1]
HORIZON = 0.62  # where the ground meets the sky in most scenes (objects are placed to stand around it)


def _c(*colour: int) -> np.ndarray:
    return np.asarray(colour, dtype=np.float32) / 255.0


class _Painter:
    """A float RGB panorama with image-unit coordinates (x in [0, WIDTH), y in [0, 1)) and polygon fills."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng = size, rng
        self.w, self.h = int(round(WIDTH * size)), size
        self.img = np.zeros((self.h, self.w, 3), np.float32)
        self.x, self.y = np.meshgrid((np.arange(self.w) + 0.5) / size, (np.arange(self.h) + 0.5) / size)
        self.m = affine(float(size), 0.0, 0.0, 0.0)

    def vgradient(self, top, bottom, y0: float = 0.0, y1: float = 1.0) -> np.ndarray:
        t = np.clip((self.y - y0) / (y1 - y0), 0.0, 1.0)[..., None]
        return _c(*top) * (1.0 - t) + _c(*bottom) * t

    def paint(self, colour, alpha: np.ndarray | float = 1.0) -> None:
        a = np.asarray(alpha, np.float32)
        a = a[..., None] if a.ndim == 2 else a
        colour = _c(*colour) if isinstance(colour, tuple) else colour
        self.img = self.img * (1.0 - a) + colour * a

    def polys(self, polys, colour, opacity: float = 1.0) -> None:
        polys = [p if isinstance(p, Poly) else Poly(np.asarray(p, np.float64)) for p in polys]
        self.paint(colour, opacity * to_float(polys_mask(polys, self.m, (self.w, self.h))))

    def ridge(self, base: float, amps, freqs, phases=None) -> np.ndarray:
        """A polygon under a sum-of-sines skyline at height `base` (image units), closed along the bottom."""
        xs = np.linspace(-0.02, WIDTH + 0.02, 160)
        phases = phases if phases is not None else self.rng.uniform(0, 2 * np.pi, len(amps))
        ys = base + sum(a * np.sin(2 * np.pi * f * xs + p) for a, f, p in zip(amps, freqs, phases))
        return np.concatenate([np.stack([xs, ys], 1), [[WIDTH + 0.02, 1.05], [-0.02, 1.05]]])

    def noise(self, cells: float) -> np.ndarray:
        g = self.rng.random((int(cells) + 2, int(cells * WIDTH) + 2), dtype=np.float32)
        return np.asarray(Image.fromarray(g, "F").resize((self.w, self.h), Image.BICUBIC), np.float32)


def meadow(p: _Painter) -> None:
    p.paint(p.vgradient((95, 160, 235), (205, 228, 250), 0.0, HORIZON))
    p.polys([circle(1.22, 0.16, 0.075)], (255, 236, 120))
    for cx, cy, s in ((0.25, 0.18, 1.0), (0.8, 0.1, 0.8), (1.35, 0.3, 0.7)):
        puffs = ((0, 0, 0.08), (0.08, 0.02, 0.06), (-0.08, 0.02, 0.06))
        p.polys([ellipse(cx + dx * s, cy + dy * s, r * s, 0.7 * r * s) for dx, dy, r in puffs], (255, 255, 255), 0.95)
    p.polys([p.ridge(HORIZON - 0.04, (0.03, 0.015), (0.8, 2.1))], (120, 185, 85))
    p.polys(
        [p.ridge(HORIZON + 0.02, (0.02, 0.01), (1.1, 2.9))], p.vgradient((95, 170, 70), (45, 120, 45), HORIZON, 1.0)
    )
    xs, ys = p.rng.uniform(0, WIDTH, 70), p.rng.uniform(HORIZON + 0.08, 1.0, 70)
    colours = [(255, 255, 255), (250, 220, 60), (240, 120, 170)]
    for i, c in enumerate(colours):
        p.polys([circle(x, y, 0.008, 8) for x, y in zip(xs[i::3], ys[i::3])], c)


def beach(p: _Painter) -> None:
    p.paint(p.vgradient((120, 190, 240), (215, 240, 252), 0.0, 0.5))
    p.polys([circle(0.3, 0.14, 0.07)], (255, 245, 170))
    p.polys([rect(-0.1, 0.48, 2.0, 1.1)], p.vgradient((35, 110, 185), (70, 170, 210), 0.48, 0.66))
    for k in range(6):
        y = 0.51 + 0.025 * k
        xs = np.linspace(0, WIDTH, 60)
        wave = np.stack([xs, y + 0.004 * np.sin(xs * 40 + k)], 1)
        p.polys([np.concatenate([wave, wave[::-1] + [0, 0.004]])], (235, 248, 255), 0.6)
    p.polys([p.ridge(0.64, (0.015, 0.008), (0.7, 2.3))], p.vgradient((240, 220, 165), (215, 185, 125), 0.64, 1.0))
    p.polys([p.ridge(0.63, (0.015, 0.008), (0.7, 2.3), phases=[0.4, 1.0])], (250, 250, 250), 0.35)


def night(p: _Painter) -> None:
    p.paint(p.vgradient((8, 12, 40), (45, 50, 110), 0.0, 0.8))
    xs, ys, rs = p.rng.uniform(0, WIDTH, 110), p.rng.uniform(0, 0.6, 110), p.rng.uniform(0.002, 0.006, 110)
    p.polys([circle(x, y, r, 6) for x, y, r in zip(xs, ys, rs)], (250, 250, 235))
    p.polys([circle(1.15, 0.17, 0.08), Poly(circle(1.19, 0.14, 0.07), add=False)], (245, 240, 200))
    p.polys([p.ridge(HORIZON - 0.05, (0.05, 0.02), (0.6, 1.7))], (30, 40, 70))
    p.polys([p.ridge(HORIZON + 0.04, (0.02, 0.01), (1.0, 3.0))], (15, 25, 35))


def desert(p: _Painter) -> None:
    p.paint(p.vgradient((245, 165, 90), (255, 228, 170), 0.0, HORIZON))
    p.polys([circle(0.45, 0.2, 0.11)], (255, 245, 200), 0.9)
    p.polys([p.ridge(HORIZON - 0.06, (0.04, 0.015), (0.5, 1.6))], (225, 160, 95))
    p.polys(
        [p.ridge(HORIZON + 0.04, (0.035, 0.01), (0.8, 2.2))], p.vgradient((240, 190, 115), (210, 145, 80), HORIZON, 1.0)
    )
    for x, h in ((0.15, 0.16), (1.3, 0.12)):
        base = HORIZON + 0.06
        arms = [rect(x - 0.018, base - h, x + 0.018, base), rect(x - 0.06, base - 0.6 * h, x - 0.045, base - 0.3 * h)]
        arms += [
            rect(x - 0.06, base - 0.32 * h, x, base - 0.26 * h),
            rect(x + 0.045, base - 0.8 * h, x + 0.06, base - 0.45 * h),
        ]
        arms += [rect(x, base - 0.48 * h, x + 0.06, base - 0.42 * h), circle(x, base - h, 0.018, 16)]
        p.polys(arms, (60, 125, 65))


def room(p: _Painter) -> None:
    floor = 0.66
    stripes = 0.5 + 0.5 * (np.sin(p.x * 2 * np.pi / 0.08) > 0.6)
    p.paint(p.vgradient((238, 225, 200), (220, 205, 180), 0.0, floor) * (0.96 + 0.04 * stripes[..., None]))
    p.polys([rect(0.2, 0.14, 0.52, 0.44)], (250, 250, 250))
    p.polys([rect(0.22, 0.16, 0.5, 0.42)], p.vgradient((120, 180, 240), (200, 230, 250), 0.16, 0.42))
    p.polys([rect(0.355, 0.16, 0.365, 0.42), rect(0.22, 0.285, 0.5, 0.295)], (250, 250, 250))
    p.polys([rect(0.95, 0.18, 1.2, 0.38)], (120, 80, 45))
    p.polys([rect(0.965, 0.195, 1.185, 0.365)], p.vgradient((250, 200, 120), (120, 170, 110), 0.2, 0.36))
    planks = np.abs(((p.x + 0.5 * (np.floor(p.y / 0.05) % 2) * 0.3) / 0.3) % 1.0 - 0.5) > 0.48
    wood = p.vgradient((185, 130, 80), (150, 100, 60), floor, 1.0) * (0.93 + 0.07 * p.noise(30))[..., None]
    wood *= 1.0 - 0.25 * (planks | (p.y % 0.05 < 0.004))[..., None]
    p.polys([rect(-0.1, floor, 2.0, 1.1)], wood)
    p.polys([rect(-0.1, floor - 0.03, 2.0, floor)], (250, 248, 240))


def forest(p: _Painter) -> None:
    p.paint(p.vgradient((175, 215, 185), (110, 160, 110), 0.0, HORIZON))
    for layer, (colour, trunk, scale) in enumerate(
        (((90, 140, 95), (95, 85, 70), 0.7), ((45, 105, 60), (85, 60, 40), 1.0))
    ):
        xs = np.sort(p.rng.uniform(-0.05, WIDTH + 0.05, 7 + 3 * (1 - layer)))
        base = HORIZON + 0.05 * layer
        p.polys([rect(x - 0.018 * scale, 0.1, x + 0.018 * scale, base) for x in xs], trunk)
        blobs = [
            ellipse(x + dx, 0.12 + dy, 0.11 * scale, 0.09 * scale)
            for x in xs
            for dx, dy in ((0, 0), (-0.06, 0.07), (0.06, 0.06))
        ]
        p.polys(blobs, colour)
    p.polys([rect(-0.1, -0.1, 2.0, 0.06)], (40, 90, 50))
    p.polys(
        [p.ridge(HORIZON + 0.03, (0.01, 0.006), (1.2, 3.5))], p.vgradient((85, 120, 55), (55, 80, 35), HORIZON, 1.0)
    )
    xs, ys = p.rng.uniform(0, WIDTH, 60), p.rng.uniform(HORIZON + 0.06, 1.0, 60)
    p.polys([ellipse(x, y, 0.012, 0.006, 8) for x, y in zip(xs, ys)], (170, 120, 50), 0.8)


def snow(p: _Painter) -> None:
    p.paint(p.vgradient((175, 195, 225), (230, 236, 248), 0.0, HORIZON))
    p.polys([p.ridge(HORIZON - 0.1, (0.06, 0.02), (0.5, 1.4))], (210, 222, 240))
    for x in p.rng.uniform(0, WIDTH, 6):
        base, h = HORIZON + 0.02, 0.22
        tiers = [
            [
                [x - 0.07 * s, base - h * (0.9 - s) + 0.05],
                [x, base - h * (1.3 - s)],
                [x + 0.07 * s, base - h * (0.9 - s) + 0.05],
            ]
            for s in (0.5, 0.75, 1.0)
        ]
        p.polys([rect(x - 0.01, base - 0.04, x + 0.01, base + 0.01)] + tiers, (40, 90, 70))
        p.polys([[[x - 0.025, base - h * 0.8], [x, base - h * 0.9], [x + 0.025, base - h * 0.8]]], (250, 252, 255))
    p.polys(
        [p.ridge(HORIZON + 0.03, (0.02, 0.008), (0.9, 2.5))],
        p.vgradient((252, 253, 255), (215, 225, 242), HORIZON, 1.0),
    )
    xs, ys, rs = p.rng.uniform(0, WIDTH, 90), p.rng.uniform(0, 1, 90), p.rng.uniform(0.003, 0.008, 90)
    p.polys([circle(x, y, r, 8) for x, y, r in zip(xs, ys, rs)], (255, 255, 255), 0.9)


def city(p: _Painter) -> None:
    p.paint(p.vgradient((250, 160, 115), (120, 105, 175), 0.55, 0.0))
    x, street = -0.05, 0.7
    while x < WIDTH:
        w, h = p.rng.uniform(0.09, 0.18), p.rng.uniform(0.25, 0.55)
        g = int(p.rng.integers(55, 110))
        p.polys([rect(x, street - h, x + w, street)], (g, g, g + 15))
        cols, rows = np.arange(x + 0.015, x + w - 0.02, 0.03), np.arange(street - h + 0.03, street - 0.04, 0.045)
        wins = [rect(wx, wy, wx + 0.016, wy + 0.022) for wx in cols for wy in rows]
        lit = p.rng.random(len(wins)) < 0.55
        if lit.any():
            p.polys([wv for wv, on in zip(wins, lit) if on], (255, 215, 110))
        x += w + p.rng.uniform(0.005, 0.03)
    p.polys([rect(-0.1, street, 2.0, 1.1)], (70, 70, 78))
    p.polys([rect(-0.1, street, 2.0, street + 0.025)], (150, 150, 155))
    p.polys([rect(dx, 0.86, dx + 0.08, 0.875) for dx in np.arange(0.0, WIDTH, 0.16)], (240, 230, 160))


def underwater(p: _Painter) -> None:
    p.paint(p.vgradient((40, 150, 200), (5, 45, 95), 0.0, 1.0))
    rays = np.clip(np.sin((p.x - 0.5 * p.y) * 14.0), 0, 1) ** 6 * (1 - p.y)
    p.paint((180, 235, 255), 0.25 * rays)
    p.polys([p.ridge(0.86, (0.02, 0.01), (0.8, 2.4))], (200, 180, 120))
    for x in p.rng.uniform(0, WIDTH, 9):
        ys = np.linspace(0.9, 0.9 - p.rng.uniform(0.2, 0.4), 20)
        xs = x + 0.015 * np.sin(ys * 30 + x * 10)
        p.polys([np.concatenate([np.stack([xs - 0.008, ys], 1), np.stack([xs + 0.008, ys], 1)[::-1]])], (40, 140, 70))
    xs, ys, rs = p.rng.uniform(0, WIDTH, 25), p.rng.uniform(0.05, 0.8, 25), p.rng.uniform(0.006, 0.018, 25)
    p.polys([circle(x, y, r, 16) for x, y, r in zip(xs, ys, rs)], (210, 240, 255), 0.35)
    p.polys([circle(x - r * 0.3, y - r * 0.3, r * 0.25, 8) for x, y, r in zip(xs, ys, rs)], (255, 255, 255), 0.7)


def mountains(p: _Painter) -> None:
    p.paint(p.vgradient((120, 175, 235), (225, 235, 245), 0.0, 0.55))
    peaks = [(0.2, 0.2, 0.35), (0.62, 0.12, 0.42), (1.1, 0.22, 0.36), (1.45, 0.16, 0.3)]
    for x, top, half in peaks:
        base = HORIZON + 0.02
        p.polys([[[x - half, base], [x, top], [x + half, base]]], (110, 115, 135))
        snow_h = 0.3 * (base - top)
        f = snow_h / (base - top)
        cap = [
            [x - half * f, top + snow_h],
            [x, top],
            [x + half * f, top + snow_h],
            [x + half * f * 0.4, top + snow_h * 0.8],
            [x, top + snow_h * 1.1],
            [x - half * f * 0.4, top + snow_h * 0.8],
        ]
        p.polys([cap], (248, 250, 255))
    p.polys([p.ridge(HORIZON, (0.015, 0.008), (0.7, 2.0))], p.vgradient((120, 170, 80), (70, 125, 55), HORIZON, 1.0))


SCENES: dict[str, Callable[[_Painter], None]] = {
    fn.__name__: fn for fn in (meadow, beach, night, desert, room, forest, snow, city, underwater, mountains)
}
SCENE_NAMES: tuple[str, ...] = tuple(SCENES)


@lru_cache(maxsize=32)
def scene_panorama(name: str, size: int) -> np.ndarray:
    """The (size, WIDTH*size, 3) float32 panorama of scene `name` (cached)."""
    if name not in SCENES:
        raise ValueError(f"unknown scene {name!r}; known: {', '.join(SCENE_NAMES)}")
    painter = _Painter(size, np.random.default_rng(zlib.crc32(name.encode())))
    SCENES[name](painter)
    pano = np.clip(painter.img, 0.0, 1.0).astype(np.float32)
    pano.setflags(write=False)
    return pano


def scene_crop(name: str, size: int, offset: float) -> np.ndarray:
    """A (size, size, 3) float32 view of the scene, starting `offset` image sizes from the panorama's left edge."""
    pano = scene_panorama(name, size)
    ox = min(max(int(round(offset * size)), 0), pano.shape[1] - size)
    return pano[:, ox : ox + size]
