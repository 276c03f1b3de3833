"""The world's textures: procedural patterns with their own colour palettes.

Each texture is a function of image-unit coordinates (1.0 = the image width), so it looks the same at any image size.
A texture is rendered once per image size as a tile twice the image's side (numpy, vectorised) and cached; jitter is a
crop offset into that tile. Tiles are seeded by the texture's name, never by the world seed, so a recipe alone fixes
every pixel.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image

# The tile covers TILE x TILE image sizes; a crop of one image size fits anywhere in its first half.
TILE = 2

Field = np.ndarray  # (H, W) float32 in image units / [0, 1] values
TextureFn = Callable[[Field, Field, float, np.random.Generator], np.ndarray]


def _c(*colour: int) -> np.ndarray:
    return np.asarray(colour, dtype=np.float32) / 255.0


def _aa(d: np.ndarray, px: float) -> np.ndarray:
    """Coverage of the region d < 0 with a one-pixel soft edge (d in image units)."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = t[..., None]
    return a * (1.0 - t) + b * t


def _ramp(t: np.ndarray, colours: list[np.ndarray]) -> np.ndarray:
    """Map t in [0, 1] through a piecewise-linear colour ramp."""
    t = np.clip(t, 0.0, 1.0) * (len(colours) - 1)
    i = np.minimum(t.astype(np.int32), len(colours) - 2)
    f = (t - i)[..., None]
    table = np.stack(colours)
    return table[i] * (1.0 - f) + table[i + 1] * f


def _noise(shape: tuple[int, int], cells: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth value noise in [0, 1]: a random grid of `cells` per image unit, bicubically upsampled."""
    h, w = shape  # a square tile spanning TILE image units
    g = int(cells * TILE) + 2
    grid = rng.random((g, g), dtype=np.float32)
    up = Image.fromarray(grid, "F").resize((w, h), Image.BICUBIC)
    return np.clip(np.asarray(up, dtype=np.float32), 0.0, 1.0)


def _fbm(shape, cells: float, rng, octaves: int = 4) -> np.ndarray:
    total, amp, norm = np.zeros(shape, np.float32), 1.0, 0.0
    for o in range(octaves):
        total += amp * _noise(shape, cells * 2**o, rng)
        norm += amp
        amp *= 0.5
    total /= norm
    # Stretch to roughly [0, 1]: sums of octaves cluster around 0.5.
    lo, hi = np.percentile(total, [1, 99])
    return np.clip((total - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def _voronoi(x, y, cell_w: float, cell_h: float, jitter: float, rng, row_shift: float = 0.0):
    """Distances to the nearest and second-nearest feature point and the nearest point's cell id.

    One point per grid cell (jittered), searched in the 3x3 neighbourhood: vectorised, no per-pixel loops.
    `row_shift` offsets odd rows by that fraction of a cell (0.5 with no jitter gives a hexagonal lattice).
    """
    ny, nx = int(y.max() / cell_h) + 3, int(x.max() / cell_w) + 3
    offsets = 0.5 + jitter * (rng.random((ny + 1, nx + 1, 2), dtype=np.float32) - 0.5)
    iy0 = np.floor(y / cell_h).astype(np.int32)
    f1 = np.full(x.shape, np.inf, np.float32)
    f2 = np.full(x.shape, np.inf, np.float32)
    ids = np.zeros(x.shape, np.int64)
    for dy in (-1, 0, 1):
        iy = np.clip(iy0 + dy, 0, ny)
        shift = np.where(iy % 2 == 1, row_shift, 0.0)
        ix0 = np.floor(x / cell_w - shift).astype(np.int32)
        for dx in (-1, 0, 1):
            ix = np.clip(ix0 + dx, 0, nx)
            px = (ix + shift + offsets[iy, ix, 0]) * cell_w
            py = (iy + offsets[iy, ix, 1]) * cell_h
            d = np.sqrt((x - px) ** 2 + (y - py) ** 2)
            closer = d < f1
            f2 = np.where(closer, f1, np.minimum(f2, d))
            ids = np.where(closer, iy * (nx + 1) + ix, ids)
            f1 = np.where(closer, d, f1)
    return f1, f2, ids


def stripes(x, y, px, rng):
    u = (x + y) / np.sqrt(2.0) / 0.11
    d = (np.abs((u % 1.0) - 0.5) - 0.25) * 0.11
    return _mix(_c(250, 240, 222), _c(210, 35, 50), _aa(d, px))


def checks(x, y, px, rng):
    p = 0.125
    b = (0.5 - np.maximum(np.abs((x / p % 1.0) - 0.5), np.abs((y / p % 1.0) - 0.5))) * p
    d = np.where((np.floor(x / p) + np.floor(y / p)) % 2 == 0, -b, b)
    return _mix(_c(240, 238, 230), _c(25, 30, 40), _aa(d, px))


def dots(x, y, px, rng):
    f1, _, _ = _voronoi(x, y, 0.1, 0.1 * np.sqrt(3) / 2, 0.0, rng, row_shift=0.5)
    return _mix(_c(28, 45, 115), _c(250, 250, 245), _aa(f1 - 0.032, px))


def noise(x, y, px, rng):
    n = _fbm(x.shape, 10, rng, octaves=3)
    speck = _noise(x.shape, 60, rng)
    t = np.clip(0.75 * n + 0.25 * speck, 0, 1)
    return _ramp(t, [_c(70, 30, 130), _c(40, 170, 160), _c(245, 150, 40), _c(240, 60, 110)])


def wood(x, y, px, rng):
    warp = _fbm(x.shape, 3, rng)
    grain = _noise(x.shape, 40, rng)
    v = (y + 0.08 * warp) * 14.0 + 2.5 * warp + 0.04 * np.sin(x * 9.0)
    ring = (v % 1.0) ** 2.5
    base = _mix(_c(214, 160, 100), _c(135, 80, 38), ring)
    return base * (0.9 + 0.1 * grain[..., None])


def marble(x, y, px, rng):
    turb = _fbm(x.shape, 4, rng, octaves=5)
    v = np.sin((x * 0.8 + y) * 9.0 + 7.0 * turb)
    vein = np.exp(-np.abs(v) * 5.0)
    base = _mix(_c(244, 242, 238), _c(215, 215, 222), _fbm(x.shape, 2, rng))
    return _mix(base, _c(85, 90, 110), 0.85 * vein)


def bricks(x, y, px, rng):
    bw, bh, mortar = 0.2, 0.08, 0.012
    row = np.floor(y / bh)
    u = x / bw + 0.5 * (row % 2)
    col = np.floor(u)
    dx = (0.5 - np.abs((u % 1.0) - 0.5)) * bw
    dy = (0.5 - np.abs((y / bh % 1.0) - 0.5)) * bh
    in_mortar = _aa(np.minimum(dx, dy) - mortar / 2, px)
    shade = (np.sin(row * 12.9898 + col * 78.233) * 43758.5453) % 1.0  # per-brick variation, deterministic
    brick = _mix(_c(175, 65, 45), _c(135, 45, 35), shade.astype(np.float32))
    brick *= (0.92 + 0.08 * _noise(x.shape, 50, rng))[..., None]
    return _mix(brick, _c(215, 208, 195), in_mortar)


def zigzag(x, y, px, rng):
    p = 0.14
    tri = np.abs((x / p % 1.0) - 0.5) * p
    u = (y + tri) / 0.09
    d = (np.abs((u % 1.0) - 0.5) - 0.25) * 0.09 * 0.9
    return _mix(_c(250, 200, 30), _c(35, 35, 40), _aa(d, px))


def waves(x, y, px, rng):
    u = (y + 0.035 * np.sin(x * 2 * np.pi / 0.28)) / 0.07
    band = np.floor(u) % 3
    colours = np.stack([_c(25, 80, 170), _c(110, 185, 235), _c(240, 248, 255)])
    out = colours[band.astype(np.int32)]
    d = (0.5 - np.abs((u % 1.0) - 0.5)) * 0.07
    return out * (1.0 - 0.25 * _aa(d - 0.004, px))[..., None]


def plaid(x, y, px, rng):
    def bands(t):
        p = t / 0.32 % 1.0
        red = (np.abs(p - 0.25) < 0.09).astype(np.float32)
        blue = (np.abs(p - 0.7) < 0.14).astype(np.float32)
        thin = (np.abs(p - 0.47) < 0.012).astype(np.float32)
        return red, blue, thin

    rx, bx, tx = bands(x)
    ry, by, ty = bands(y)
    out = np.broadcast_to(_c(30, 105, 60), x.shape + (3,)).copy()
    out = _mix(out, _c(185, 30, 40), 0.5 * (rx + ry))
    out = _mix(out, _c(25, 35, 90), 0.45 * (bx + by))
    return _mix(out, _c(245, 210, 60), np.clip(tx + ty, 0, 1))


def camouflage(x, y, px, rng):
    out = np.broadcast_to(_c(182, 170, 120), x.shape + (3,)).copy()
    for colour, level in ((_c(105, 115, 62), 0.45), (_c(112, 80, 50), 0.55), (_c(45, 50, 38), 0.62)):
        n = _fbm(x.shape, 5, rng, octaves=3)
        out = _mix(out, colour, _aa(level - n, 0.01))
    return out


def leopard(x, y, px, rng):
    f1, _, ids = _voronoi(x, y, 0.13, 0.13, 0.8, rng)
    wobble = 0.012 * (_noise(x.shape, 25, rng) - 0.5)
    ring = _aa(np.abs(f1 + wobble - 0.04) - 0.012, px)
    core = _aa(f1 + wobble - 0.03, px)
    out = _mix(_c(225, 178, 95), _c(200, 120, 45), core)
    return _mix(out, _c(45, 30, 20), ring)


def scales(x, y, px, rng):
    w = 0.12
    h = w / 2
    out = np.zeros(x.shape + (3,), np.float32)
    base_row = np.floor(y / h).astype(np.int32)
    for k in (2, 1, 0, -1):  # upper rows are drawn last, so each scale shows its lower arc
        row = base_row + k
        shift = 0.5 * (row % 2)
        cx = (np.round(x / w - shift) + shift) * w
        r = np.sqrt((x - cx) ** 2 + (y - row * h) ** 2) / (0.5 * w)
        col = _ramp(r, [_c(150, 230, 210), _c(45, 160, 155), _c(20, 95, 110)])
        col = _mix(col, _c(10, 50, 60), _aa(0.93 - r, 2 * px / w))
        out = np.where((r < 1.0)[..., None], col, out)
    return out


def honeycomb(x, y, px, rng):
    f1, f2, _ = _voronoi(x, y, 0.11, 0.11 * np.sqrt(3) / 2, 0.0, rng, row_shift=0.5)
    wall = _aa((f2 - f1) - 0.012, px)
    cell = _ramp(f1 / 0.065, [_c(255, 205, 70), _c(235, 160, 25)])
    return _mix(cell, _c(150, 90, 10), wall)


def argyle(x, y, px, rng):
    p = 0.18
    u, v = x / p, y / (1.4 * p)
    d = np.abs((u % 1.0) - 0.5) + np.abs((v % 1.0) - 0.5)
    alt = (np.floor(u) + np.floor(v)) % 2
    inside = _aa((d - 0.5) * p, px)
    out = _mix(_c(125, 125, 145), np.where(alt[..., None] == 0, _c(230, 115, 160), _c(245, 190, 210)), inside)
    line = np.minimum(np.abs(((u + v) % 1.0) - 0.5), np.abs(((u - v) % 1.0) - 0.5)) * p
    return _mix(out, _c(250, 250, 250), _aa(line - 0.004, px) * 0.9)


def crosshatch(x, y, px, rng):
    wobble = 0.004 * _noise(x.shape, 30, rng)
    lines = 0.0
    for sign in (1.0, -1.0):
        u = (x + sign * y) / np.sqrt(2.0) / 0.045 + wobble / 0.045
        lines = np.maximum(lines, _aa((0.5 - np.abs((u % 1.0) - 0.5)) * 0.045 - 0.0045, px))
    paper = _mix(_c(248, 242, 225), _c(232, 222, 200), _noise(x.shape, 8, rng))
    return _mix(paper, _c(35, 40, 70), 0.9 * lines)


def granite(x, y, px, rng):
    base = _ramp(_fbm(x.shape, 6, rng, octaves=3), [_c(165, 150, 150), _c(205, 190, 185)])
    for colour, thresh in ((_c(40, 38, 42), 0.74), (_c(200, 110, 100), 0.76), (_c(250, 250, 250), 0.82)):
        n = _noise(x.shape, 45, rng)
        base = _mix(base, colour, _aa(thresh - n, 0.015))
    return base


def lava(x, y, px, rng):
    warp = 0.02 * (_fbm(x.shape, 6, rng) - 0.5)
    f1, f2, _ = _voronoi(x + warp, y - warp, 0.16, 0.16, 0.9, rng)
    crack = np.exp(-(f2 - f1) / 0.012)
    rock = _mix(_c(45, 32, 30), _c(80, 55, 45), _noise(x.shape, 30, rng))
    glow = _ramp(crack, [_c(200, 40, 10), _c(255, 130, 20), _c(255, 235, 120)])
    return _mix(rock, glow, np.clip(crack * 1.4, 0, 1))


TEXTURES: dict[str, TextureFn] = {
    fn.__name__: fn
    for fn in (
        stripes,
        checks,
        dots,
        noise,
        wood,
        marble,
        bricks,
        zigzag,
        waves,
        plaid,
        camouflage,
        leopard,
        scales,
        honeycomb,
        argyle,
        crosshatch,
        granite,
        lava,
    )
}
TEXTURE_NAMES: tuple[str, ...] = tuple(TEXTURES)


@lru_cache(maxsize=64)
def texture_tile(name: str, size: int) -> np.ndarray:
    """The (TILE*size, TILE*size, 3) float32 tile of texture `name` for images of `size` pixels (cached)."""
    if name not in TEXTURES:
        raise ValueError(f"unknown texture {name!r}; known: {', '.join(TEXTURE_NAMES)}")
    n = TILE * size
    v = (np.arange(n, dtype=np.float32) + 0.5) / size
    x, y = np.meshgrid(v, v)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    tile = np.clip(TEXTURES[name](x, y, 1.0 / size, rng).astype(np.float32), 0.0, 1.0)
    tile.setflags(write=False)
    return tile


def texture_crop(name: str, size: int, offset: tuple[float, float]) -> np.ndarray:
    """A (size, size, 3) window of the tile at `offset` (fractions of the image size, each in [0, TILE - 1))."""
    tile = texture_tile(name, size)
    ox = min(int(round(offset[0] * size)), tile.shape[1] - size)
    oy = min(int(round(offset[1] * size)), tile.shape[0] - size)
    return tile[oy : oy + size, ox : ox + size]
