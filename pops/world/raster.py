"""Anti-aliased drawing primitives shared by shapes, scenes and the figure.

Everything is drawn as filled polygons with PIL (fast C scanline fill) on a super-sampled canvas and box-filtered
down, which gives smooth edges without per-pixel Python. Geometry lives in "canonical" coordinates and reaches pixels
through a 2x3 affine map, so one description renders at any image size, pose and rotation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pops.base.images import erode

# Super-sampling factor: 4x4 samples per pixel keeps thin features (rings, brims, stripes) smooth at 128 px.
SUPERSAMPLE = 4

WHITE = np.array([1.0, 1.0, 1.0], dtype=np.float32)


@dataclass(frozen=True)
class Poly:
    """One polygon (N, 2) in canonical coordinates; `add=False` punches a hole into what was drawn before it."""

    points: np.ndarray
    add: bool = True


@dataclass(frozen=True)
class Part:
    """A region of one colour: polygons drawn in order (holes included), its default colour and a shade factor.

    `shade` darkens the part when the whole object is filled uniformly (a texture or an edited colour), so that a
    house's roof still reads as a roof once the house is made of wood.
    """

    name: str
    polys: tuple[Poly, ...]
    colour: tuple[int, int, int]
    shade: float = 1.0
    # Optional pattern fill: ("stripes" | "dots" | "checks", second colour); used by garments.
    pattern: tuple[str, tuple[int, int, int]] | None = None
    outline: bool = True
    extra: dict = field(default_factory=dict, compare=False)


def ellipse(
    cx: float, cy: float, rx: float, ry: float, n: int = 64, start: float = 0.0, end: float = 360.0
) -> np.ndarray:
    """Points on an ellipse arc (degrees, y down); a full ellipse by default."""
    full = abs(end - start) >= 360.0
    t = np.deg2rad(np.linspace(start, end, n, endpoint=not full))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def circle(cx: float, cy: float, r: float, n: int = 64) -> np.ndarray:
    return ellipse(cx, cy, r, r, n)


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def regular(n: int, r: float = 1.0, rotation: float = -90.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    """A regular n-gon with its first vertex at `rotation` degrees (-90 = pointing up)."""
    t = np.deg2rad(rotation + 360.0 * np.arange(n) / n)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def affine(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    """2x3 map canonical -> pixels: rotate by angle (clockwise on screen, y down), scale, translate."""
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a) * scale, np.sin(a) * scale
    return np.array([[c, -s, tx], [s, c, ty]], dtype=np.float64)


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _fill_polys(polys, pts_list, origin: tuple[int, int], w: int, h: int) -> Image.Image:
    """Rasterise already-transformed polygons into a w x h window whose top-left pixel is `origin`."""
    ss = SUPERSAMPLE
    canvas = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(canvas)
    shift = np.array(origin, dtype=np.float64)
    # PIL samples pixel centres at integer coordinates, so shift by half a (super-sampled) pixel.
    for poly, pts in zip(polys, pts_list):
        q = (pts - shift) * ss - 0.5
        draw.polygon(list(map(tuple, q.tolist())), fill=255 if poly.add else 0)
    return canvas.reduce(ss)


def polys_mask(polys: tuple[Poly, ...] | list[Poly], m: np.ndarray, size: int | tuple[int, int]) -> Image.Image:
    """Anti-aliased coverage of `polys` under the affine `m`, as an 'L' image of `size` (square) or (width, height)."""
    w, h = (size, size) if isinstance(size, int) else size
    return _fill_polys(polys, [apply(m, p.points) for p in polys], (0, 0), w, h)


def to_float(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask, dtype=np.float32) * (1.0 / 255.0)


def edge_radius(size: int) -> int:
    """Outline half-width in pixels: one pixel up to ~270 px images, growing with the image."""
    return max(1, round(size / 180))


def blur(a: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of an [0, 1] float field (PIL's, on 8 bits: plenty for soft halos and shadows)."""
    image = Image.fromarray((np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "L")
    return to_float(image.filter(ImageFilter.GaussianBlur(radius)))


def composite_in_place(canvas: np.ndarray, fill: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Over-composite `fill` ((3,), or (H, W, 3)) onto `canvas` (H, W, 3) with coverage `alpha` (H, W); in place."""
    canvas += (fill - canvas) * alpha[..., None]
    return canvas


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in units of the image size: (x, y), each (size, size) float32 in [0, 1)."""
    v = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(v, v)


@lru_cache(maxsize=8)
def light(size: int) -> np.ndarray:
    """Soft top-left lighting multiplier (H, W, 1): gives flat fills a little volume."""
    x, y = grid(size)
    return (1.06 - 0.16 * (0.4 * x + 0.6 * y))[..., None].astype(np.float32)


def pattern(kind: str, x: np.ndarray, y: np.ndarray, period: float, angle: float, pixel: float) -> np.ndarray:
    """An anti-aliased 0..1 pattern (stripes, dots or checks) over the coordinate fields x, y.

    `period` is in the units of x and y; `pixel` is one pixel in those units (the width of the soft edge).
    """
    a = np.deg2rad(angle)
    u = (x * np.cos(a) + y * np.sin(a)) / period
    v = (-x * np.sin(a) + y * np.cos(a)) / period
    px = pixel / period
    if kind == "stripes":
        d = np.abs((u % 1.0) - 0.5) - 0.25
    elif kind == "dots":
        du, dv = (u % 1.0) - 0.5, (v % 1.0) - 0.5
        d = np.sqrt(du * du + dv * dv) - 0.28
    elif kind == "checks":
        # Distance to the nearest cell border, signed: negative inside the "on" cells.
        b = 0.5 - np.maximum(np.abs((u % 1.0) - 0.5), np.abs((v % 1.0) - 0.5))
        d = np.where((np.floor(u) + np.floor(v)) % 2 == 0, -b, b)
    else:
        raise ValueError(f"unknown pattern {kind!r}; known: stripes, dots, checks")
    return np.clip(0.5 - d / px, 0.0, 1.0).astype(np.float32)


def canonical_grid(m: np.ndarray, size: int, window: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray, float]:
    """Pixel centres of `window` mapped back through the affine `m` to canonical coordinates, and one pixel there."""
    rows, cols = window
    a, t = m[:, :2], m[:, 2]
    inv = np.linalg.inv(a)
    px = (np.arange(cols.start, cols.stop, dtype=np.float32) + 0.5 - t[0])[None, :]
    py = (np.arange(rows.start, rows.stop, dtype=np.float32) + 0.5 - t[1])[:, None]
    cx = inv[0, 0] * px + inv[0, 1] * py
    cy = inv[1, 0] * px + inv[1, 1] * py
    return cx, cy, float(1.0 / np.sqrt(abs(np.linalg.det(a))))


def to_image(canvas: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(canvas, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "RGB")


def white(size: int) -> np.ndarray:
    return np.ones((size, size, 3), dtype=np.float32)


def rgb(c: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(c, dtype=np.float32) / 255.0


# How much a part's border is darkened: a thin ink line that keeps shapes crisp on any fill.
OUTLINE_STRENGTH = 0.55


def part_fill(part: Part, fill: tuple | None, m: np.ndarray, size: int, window: tuple[slice, slice]) -> np.ndarray:
    """The colour field of one part under a fill mode, before lighting, over `window` (rows, cols) of the image.

    fill None: the part's own colour, or its own pattern, which is attached to the part (canonical coordinates, so
    it moves and scales with it); ("colour", rgb): one colour for every part, times its shade; ("texture", (H, W, 3)
    array): the texture, times the shade; ("pattern", kind, period, angle): the part's own colour alternating with
    white in image coordinates (period in image sizes).
    """
    if fill is None:
        base = rgb(part.colour)
        if part.pattern is None:
            return base
        kind, second = part.pattern
        cx, cy, pixel = canonical_grid(m, size, window)
        p = pattern(kind, cx, cy, part.extra.get("period", 0.06), part.extra.get("angle", 0.0), pixel)
        return base * (1.0 - p[..., None]) + rgb(second) * p[..., None]
    mode = fill[0]
    if mode == "colour":
        return rgb(fill[1]) * part.shade
    if mode == "texture":
        return fill[1][window] * part.shade
    if mode == "pattern":
        x, y = grid(size)
        p = pattern(fill[1], x[window], y[window], fill[2], fill[3], 1.0 / size)[..., None]
        return rgb(part.colour) * (1.0 - p) + WHITE * p
    raise ValueError(f"unknown fill mode {mode!r}")


def draw_parts(canvas: np.ndarray, parts, m: np.ndarray, fill: tuple | None = None, lit: bool = True) -> np.ndarray:
    """Draw `parts` under the affine `m` onto `canvas` (S, S, 3 float, modified in place).

    Each part is rasterised and composited only inside its own bounding box, so small parts (eyes, buttons) cost
    little. Returns the union coverage of all parts as an (S, S) float32 array.
    """
    size = canvas.shape[0]
    union = np.zeros((size, size), np.float32)
    shading = light(size)
    r = edge_radius(size)
    for part in parts:
        pts_list = [apply(m, p.points) for p in part.polys]
        adds = np.concatenate([q for p, q in zip(part.polys, pts_list) if p.add])
        x0, y0 = np.floor(adds.min(axis=0)).astype(int) - r - 1
        x1, y1 = np.ceil(adds.max(axis=0)).astype(int) + r + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
        if x1 <= x0 or y1 <= y0:
            continue  # entirely outside the image
        window = (slice(y0, y1), slice(x0, x1))
        alpha = to_float(_fill_polys(part.polys, pts_list, (x0, y0), x1 - x0, y1 - y0))
        colour = part_fill(part, fill, m, size, window)
        if lit:
            colour = colour * shading[window]
        view = canvas[window]
        # Lighting may push a colour a little over 1: to_image clips once at the end.
        composite_in_place(view, colour, alpha)
        if part.outline:
            view *= (1.0 - OUTLINE_STRENGTH * (alpha - erode(alpha, r)))[..., None]
        np.maximum(union[window], alpha, out=union[window])
    return union
