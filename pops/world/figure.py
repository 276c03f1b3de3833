"""The composition operator's world: a simple figure and garments for the 12 ATR clothing slots.

Geometry lives in the figure frame: [0, 1]^2, y down, the figure standing in the middle. "left"/"right" are the
figure's own (it faces the viewer, so its left shoe is on the image's right). Each slot has a few variants that
differ in shape, colour or pattern, so which variant fills which slot matters for the dressed result.
"""

from __future__ import annotations

import numpy as np

from pops.base.registry import COMPOSITION_SLOTS
from pops.world.raster import Part, Poly, circle, ellipse, rect
from pops.world.shapes import heart_outline

SKIN = (238, 200, 168)


def _poly(points) -> Poly:
    return Poly(np.asarray(points, dtype=np.float64))


def _p(name, colour, *shapes, pattern=None, period=0.05, angle=0.0, outline=True, shade=1.0) -> Part:
    extra = {"period": period, "angle": angle}
    return Part(name, tuple(_poly(s) for s in shapes), colour, shade, pattern, outline, extra)


def _mirror(points) -> np.ndarray:
    pts = np.array(points, dtype=np.float64)
    pts[:, 0] = 1.0 - pts[:, 0]
    return pts


def _limb(x0, y0, x1, y1, w0, w1) -> np.ndarray:
    """A tapered quadrilateral from (x0, y0) to (x1, y1), widths w0 -> w1."""
    d = np.array([x1 - x0, y1 - y0])
    n = np.array([-d[1], d[0]]) / np.linalg.norm(d)
    a, b = np.array([x0, y0]), np.array([x1, y1])
    return np.stack([a + n * w0 / 2, b + n * w1 / 2, b - n * w1 / 2, a - n * w0 / 2])


def _both(make) -> list[np.ndarray]:
    """A shape for the figure's right side (image left) and its mirror image."""
    pts = make()
    return [pts, _mirror(pts)]


def _dome(cx, cy, rx, ry) -> np.ndarray:
    return ellipse(cx, cy, rx, ry, 40, 180, 360)


def _band(cx, cy, outer, inner, start, end) -> np.ndarray:
    """The region between two concentric elliptic arcs (a smile, a bag handle): outer radii, inner radii."""
    return np.concatenate([ellipse(cx, cy, *outer, 24, start, end), ellipse(cx, cy, *inner, 24, end, start)])


TORSO = [[0.39, 0.27], [0.61, 0.27], [0.595, 0.42], [0.58, 0.52], [0.42, 0.52], [0.405, 0.42]]
HIPS = [[0.42, 0.51], [0.58, 0.51], [0.598, 0.6], [0.402, 0.6]]


def _arm(y_end=0.53, w_end=0.036):
    # Shoulder (0.385, 0.285) to the wrist; the sleeve of a garment is the same limb cut shorter.
    t = (y_end - 0.285) / (0.53 - 0.285)
    return _limb(0.385, 0.285, 0.385 - 0.04 * t, y_end, 0.048, 0.048 + (w_end - 0.048) * t)


def _leg(y_end=0.895, widen=0.0):
    t = (y_end - 0.58) / (0.895 - 0.58)
    inner_x = 0.497 - 0.01 * t
    outer_x = 0.405 + 0.035 * t
    return [[0.402 - widen, 0.58], [0.498, 0.58], [inner_x + widen * 0.3, y_end], [outer_x - widen, y_end]]


BODY: tuple[Part, ...] = (
    _p("legs", SKIN, *_both(_leg), shade=0.95),
    _p("feet", SKIN, *_both(lambda: ellipse(0.462, 0.905, 0.04, 0.017, 24))),
    _p("arms", SKIN, *_both(_arm), *_both(lambda: circle(0.343, 0.55, 0.02, 20))),
    _p("torso", SKIN, TORSO, HIPS, rect(0.48, 0.22, 0.52, 0.28)),
    _p("head", SKIN, ellipse(0.5, 0.17, 0.06, 0.07, 48)),
    _p("eyes", (40, 35, 40), circle(0.478, 0.165, 0.007, 12), circle(0.522, 0.165, 0.007, 12), outline=False),
    # A smile: the band between two lower half-ellipses of the same width, thicker in the middle.
    _p("mouth", (180, 70, 70), _band(0.5, 0.188, (0.022, 0.016), (0.02, 0.007), 15, 165), outline=False),
)


def _garments() -> dict[str, dict[str, tuple[Part, ...]]]:
    """The garments, a data table: slot -> variant -> its parts in the figure frame."""
    g: dict[str, dict[str, tuple[Part, ...]]] = {slot: {} for slot in COMPOSITION_SLOTS}
    white = (245, 245, 250)
    g["hat"]["cap"] = (
        _p("crown", (210, 40, 45), _dome(0.5, 0.125, 0.066, 0.055)),
        _p("brim", (170, 30, 35), [[0.44, 0.118], [0.63, 0.118], [0.63, 0.136], [0.44, 0.136]]),
    )
    g["hat"]["tophat"] = (
        _p("crown", (35, 35, 40), rect(0.455, 0.02, 0.545, 0.115), rect(0.41, 0.105, 0.59, 0.126)),
        _p("band", (190, 40, 50), rect(0.455, 0.083, 0.545, 0.104)),
    )
    g["hat"]["beanie"] = (
        _p(
            "knit",
            (40, 90, 200),
            _dome(0.5, 0.145, 0.069, 0.075),
            rect(0.43, 0.13, 0.57, 0.158),
            pattern=("stripes", white),
            period=0.03,
            angle=90.0,
        ),
        _p("pompom", white, circle(0.5, 0.066, 0.02, 20)),
    )

    def hair(colour, dome, *extra):
        return (_p("hair", colour, _dome(*dome), *extra),)

    g["hair"]["short"] = hair((105, 62, 30), (0.5, 0.16, 0.066, 0.066), *_both(lambda: rect(0.434, 0.14, 0.452, 0.18)))
    g["hair"]["long"] = hair((236, 196, 92), (0.5, 0.165, 0.072, 0.075), *_both(lambda: rect(0.428, 0.16, 0.452, 0.33)))
    g["hair"]["bun"] = hair((38, 28, 22), (0.5, 0.16, 0.066, 0.066), circle(0.5, 0.085, 0.03, 24))

    eyes = (0.478, 0.522)
    bridge = rect(0.49, 0.161, 0.51, 0.166)
    g["sunglasses"]["round"] = (_p("lenses", (25, 25, 30), *[circle(x, 0.165, 0.019, 20) for x in eyes], bridge),)
    g["sunglasses"]["shades"] = (
        _p("lenses", (30, 60, 140), *_both(lambda: rect(0.452, 0.152, 0.496, 0.178)), rect(0.44, 0.152, 0.56, 0.158)),
    )
    g["sunglasses"]["hearts"] = (
        _p("lenses", (240, 80, 150), *[heart_outline(32) * 0.021 + [x, 0.166] for x in eyes], bridge),
    )

    long_sleeves = _both(lambda: _arm(0.52, 0.042))
    g["upper_clothes"]["tshirt"] = (_p("shirt", (215, 50, 55), TORSO, *_both(lambda: _arm(0.37, 0.05))),)
    g["upper_clothes"]["sweater"] = (
        _p(
            "sweater",
            (35, 45, 110),
            TORSO,
            *long_sleeves,
            pattern=("stripes", (240, 240, 245)),
            period=0.045,
            angle=90.0,
        ),
    )
    lapels = [[0.46, 0.27], [0.5, 0.38], [0.54, 0.27], [0.52, 0.27], [0.5, 0.33], [0.48, 0.27]]
    g["upper_clothes"]["jacket"] = (
        _p("jacket", (60, 125, 80), TORSO, *long_sleeves),
        _p("lapels", (35, 80, 50), lapels, rect(0.497, 0.38, 0.503, 0.52)),
        _p("buttons", (235, 215, 120), circle(0.515, 0.42, 0.007, 10), circle(0.515, 0.47, 0.007, 10), outline=False),
    )

    def skirt(hem_y, hem_half_width):
        return [[0.415, 0.51], [0.585, 0.51], [0.5 + hem_half_width, hem_y], [0.5 - hem_half_width, hem_y]]

    g["skirt"]["mini"] = (_p("skirt", (240, 130, 170), skirt(0.65, 0.135)),)
    g["skirt"]["long"] = (_p("skirt", (130, 70, 175), skirt(0.86, 0.155)),)
    g["skirt"]["plaid"] = (
        _p("skirt", (195, 40, 45), skirt(0.73, 0.14), pattern=("checks", (40, 30, 35)), period=0.05),
    )

    g["pants"]["jeans"] = (_p("pants", (55, 90, 165), HIPS, *_both(lambda: _leg(0.87, 0.006))),)
    g["pants"]["shorts"] = (_p("pants", (200, 175, 115), HIPS, *_both(lambda: _leg(0.69, 0.01))),)
    g["pants"]["trousers"] = (
        _p(
            "pants",
            (45, 45, 55),
            HIPS,
            *_both(lambda: _leg(0.87, 0.004)),
            pattern=("stripes", (120, 120, 135)),
            period=0.03,
        ),
    )

    bodice = [[0.4, 0.3], [0.6, 0.3], [0.595, 0.42], [0.58, 0.52], [0.42, 0.52], [0.405, 0.42]]

    def flare(hem_y, hem_half_width):
        return [[0.42, 0.5], [0.58, 0.5], [0.5 + hem_half_width, hem_y], [0.5 - hem_half_width, hem_y]]

    straps = (rect(0.41, 0.265, 0.43, 0.31), rect(0.57, 0.265, 0.59, 0.31))
    g["dress"]["gown"] = (_p("dress", (30, 150, 150), TORSO, flare(0.88, 0.17)),)
    g["dress"]["sundress"] = (
        _p("dress", (250, 205, 55), bodice, flare(0.7, 0.14), *straps, pattern=("dots", (255, 255, 255)), period=0.04),
    )
    g["dress"]["party"] = (_p("dress", (200, 30, 70), bodice, flare(0.65, 0.16)),)

    strap = rect(0.415, 0.495, 0.585, 0.527)
    g["belt"]["brown"] = (
        _p("belt", (120, 75, 35), strap),
        _p("buckle", (230, 190, 70), rect(0.488, 0.492, 0.512, 0.53)),
    )
    g["belt"]["black"] = (
        _p("belt", (30, 30, 35), strap),
        _p("buckle", (200, 205, 215), rect(0.484, 0.49, 0.516, 0.532)),
    )
    g["belt"]["white"] = (
        _p("belt", (245, 245, 245), strap),
        _p("buckle", (70, 70, 80), rect(0.49, 0.496, 0.51, 0.526)),
    )

    shoes = {  # colour, sole colour, top of the shoe (boots go up the shin), toe half-length
        "sneakers": ((245, 245, 245), (220, 40, 45), 0.875, 0.047),
        "boots": ((110, 65, 30), (70, 40, 20), 0.78, 0.045),
        "heels": ((25, 25, 30), (200, 30, 60), 0.885, 0.043),
    }
    for name, (colour, sole, top, toe) in shoes.items():
        upper = np.concatenate([[[0.437, top]], [[0.487, top]], ellipse(0.462, 0.905, toe, 0.022, 24, 0, 180)])
        upper[1:, 0] += 0.005  # a touch wider than the foot
        sole_strip = rect(0.462 - toe, 0.918, 0.462 + toe, 0.93)
        for slot, mirror in (("right_shoe", False), ("left_shoe", True)):
            f = _mirror if mirror else np.asarray
            g[slot][name] = (_p("upper", colour, f(upper)), _p("sole", sole, f(sole_strip)))

    g["bag"]["handbag"] = (
        _p("handle", (90, 55, 25), _band(0.675, 0.57, (0.035, 0.045), (0.025, 0.035), 180, 360)),
        _p("bag", (145, 90, 40), [[0.625, 0.57], [0.725, 0.57], [0.74, 0.66], [0.61, 0.66]]),
    )
    g["bag"]["tote"] = (
        _p("handles", (60, 60, 70), _band(0.668, 0.56, (0.03, 0.05), (0.022, 0.043), 180, 360)),
        _p("bag", (232, 215, 180), rect(0.605, 0.56, 0.73, 0.7), pattern=("stripes", (60, 120, 180)), period=0.05),
    )
    g["bag"]["clutch"] = (
        _p("bag", (205, 40, 60), rect(0.63, 0.535, 0.73, 0.585)),
        _p("clasp", (240, 200, 80), rect(0.672, 0.535, 0.688, 0.55)),
    )

    scarf = (rect(0.448, 0.235, 0.552, 0.29), rect(0.512, 0.27, 0.548, 0.43))
    g["scarf"]["red"] = (_p("scarf", (205, 35, 40), *scarf),)
    g["scarf"]["striped"] = (_p("scarf", (40, 110, 200), *scarf, pattern=("stripes", white), period=0.035, angle=90.0),)
    g["scarf"]["knit"] = (_p("scarf", (60, 150, 70), *scarf, pattern=("checks", (230, 240, 220)), period=0.03),)
    return g


GARMENTS: dict[str, dict[str, tuple[Part, ...]]] = _garments()

# Layering when dressed: lower garments first, then shoes, tops, accessories and headwear on top.
LAYERS = (
    "pants",
    "skirt",
    "dress",
    "right_shoe",
    "left_shoe",
    "upper_clothes",
    "belt",
    "scarf",
    "hair",
    "hat",
    "sunglasses",
    "bag",
)
# A dress covers the torso and legs: it excludes a top and other bottoms; a skirt excludes pants.
EXCLUDES = {
    "dress": {"upper_clothes", "skirt", "pants"},
    "skirt": {"pants", "dress"},
    "pants": {"skirt", "dress"},
    "upper_clothes": {"dress"},
}


def outfit_class(outfit: dict[str, str]) -> str:
    """The class key of an outfit: worn slots in registry order, e.g. "hat=cap|pants=jeans|left_shoe=boots"."""
    return "|".join(f"{slot}={outfit[slot]}" for slot in COMPOSITION_SLOTS if slot in outfit)


def max_garments() -> int:
    """The most slots one figure can fill under the exclusions (a top and a bottom, never a dress with either)."""
    return len(COMPOSITION_SLOTS) - 2


def random_outfit(rng: np.random.Generator, lo: int, hi: int) -> dict[str, str]:
    """A random outfit of lo..hi garments; shoes come as a pair of the same variant (two slots)."""
    target = int(rng.integers(lo, hi + 1))
    groups = ["hat", "hair", "sunglasses", "upper_clothes", "bottom", "belt", "shoes", "bag", "scarf"]
    outfit: dict[str, str] = {}
    for group in rng.permutation(groups):
        cost = 2 if group == "shoes" else 1
        if len(outfit) + cost > target:
            continue
        if group == "shoes":
            variant = str(rng.choice(sorted(GARMENTS["left_shoe"])))
            outfit["left_shoe"] = outfit["right_shoe"] = variant
            continue
        if group == "bottom":
            options = [s for s in ("skirt", "pants", "dress") if not (EXCLUDES[s] & outfit.keys())]
            if not options:
                continue
            group = str(rng.choice(options))
        elif EXCLUDES.get(group, set()) & outfit.keys():
            continue
        outfit[group] = str(rng.choice(sorted(GARMENTS[group])))
    return outfit


def garment_bbox(slot: str, variant: str) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a garment in the figure frame."""
    pts = np.concatenate([p.points for part in GARMENTS[slot][variant] for p in part.polys if p.add])
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())
