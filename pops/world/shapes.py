"""The world's objects: recognisable shapes as coloured parts in canonical coordinates.

Canonical coordinates: the object is centred on (0, 0) and fits the unit disc; y points down (as on screen). A pose
(centre, radius, angle — all in units of the image size) maps it to pixels, so every object renders at any size.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pops.world.raster import Part, Poly, circle, ellipse, rect, regular


def _part(name: str, colour, *polys, shade: float = 1.0, outline: bool = True) -> Part:
    polys = tuple(p if isinstance(p, Poly) else Poly(np.asarray(p, dtype=np.float64)) for p in polys)
    return Part(name, polys, colour, shade, outline=outline)


def _hole(points) -> Poly:
    return Poly(np.asarray(points, dtype=np.float64), add=False)


def _star(points: int = 5, outer: float = 1.0, inner: float = 0.42) -> np.ndarray:
    t = np.deg2rad(-90.0 + 180.0 * np.arange(2 * points) / points)
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(t), r * np.sin(t) + 0.06], axis=1)


def heart_outline(n: int = 96) -> np.ndarray:
    # The classic parametric heart, flipped to y-down and scaled into the unit disc.
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = 13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x / 16.5, -(y + 2.5) / 15.5], axis=1)


def _cross(w: float = 0.32, r: float = 0.95) -> np.ndarray:
    return np.array(
        [[-w, -r], [w, -r], [w, -w], [r, -w], [r, w], [w, w], [w, r], [-w, r], [-w, w], [-r, w], [-r, -w], [-w, -w]]
    )


def _teardrop(cy: float = 0.35, r: float = 0.62) -> np.ndarray:
    # A circle at the bottom with the two tangents from the tip (0, -1): the arc spans the angles away from the tip.
    alpha = np.rad2deg(np.arccos(r / (cy + 1.0)))
    arc = ellipse(0.0, cy, r, r, 48, start=-90.0 + alpha, end=270.0 - alpha)
    return np.concatenate([[[0.0, -1.0]], arc])


def _rotated_ellipse(cx, cy, rx, ry, angle_deg, n=40) -> np.ndarray:
    pts = ellipse(0.0, 0.0, rx, ry, n)
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return pts @ rot.T + [cx, cy]


def _named_shapes() -> dict[str, tuple[Part, ...]]:
    """The named objects, a data table: each name's parts in canonical coordinates."""
    s: dict[str, tuple[Part, ...]] = {}
    s["circle"] = (_part("body", (245, 140, 40), circle(0, 0, 0.95, 96)),)
    s["square"] = (_part("body", (50, 110, 220), rect(-0.78, -0.78, 0.78, 0.78)),)
    s["triangle"] = (_part("body", (60, 170, 80), regular(3, 1.1, -90.0, cy=0.2)),)
    s["star"] = (_part("body", (250, 195, 30), _star()),)
    s["heart"] = (_part("body", (225, 40, 60), heart_outline()),)
    s["cross"] = (_part("body", (20, 160, 160), _cross()),)
    s["moon"] = (_part("body", (120, 130, 215), circle(-0.1, 0, 0.95, 96), _hole(circle(0.35, -0.22, 0.8, 96))),)
    s["ring"] = (_part("body", (150, 70, 200), circle(0, 0, 0.95, 96), _hole(circle(0, 0, 0.56, 96))),)
    s["arrow"] = (
        _part(
            "body",
            (220, 60, 160),
            [[-1, -0.22], [0.15, -0.22], [0.15, -0.62], [1, 0], [0.15, 0.62], [0.15, 0.22], [-1, 0.22]],
        ),
    )
    s["diamond"] = (_part("body", (40, 190, 230), [[0, -1], [0.66, 0], [0, 1], [-0.66, 0]]),)
    s["hexagon"] = (_part("body", (150, 160, 40), regular(6, 0.95, 0.0)),)
    s["pentagon"] = (_part("body", (40, 60, 150), regular(5, 0.98, -90.0, cy=0.08)),)
    s["teardrop"] = (_part("body", (70, 150, 240), _teardrop()),)
    s["cloud"] = (
        _part(
            "body",
            (175, 190, 215),
            rect(-0.72, 0.05, 0.72, 0.5),
            circle(-0.72, 0.27, 0.23),
            circle(0.72, 0.27, 0.23),
            circle(-0.38, 0.02, 0.38),
            circle(0.1, -0.18, 0.5),
            circle(0.55, 0.06, 0.36),
        ),
    )
    s["house"] = (
        _part("walls", (235, 205, 150), rect(-0.68, -0.12, 0.68, 0.9)),
        _part("roof", (185, 60, 50), [[-0.95, -0.05], [0, -0.95], [0.95, -0.05]], shade=0.75),
        _part("door", (120, 75, 40), rect(-0.18, 0.38, 0.18, 0.9), shade=0.6),
        _part("window", (140, 200, 240), rect(0.3, 0.12, 0.56, 0.38), shade=1.2),
    )
    s["tree"] = (
        _part("trunk", (125, 80, 40), rect(-0.14, 0.45, 0.14, 1.0), shade=0.6),
        _part(
            "crown",
            (45, 150, 65),
            [[-0.8, 0.55], [0, -0.35], [0.8, 0.55]],
            [[-0.65, 0.18], [0, -0.7], [0.65, 0.18]],
            [[-0.5, -0.22], [0, -1.0], [0.5, -0.22]],
        ),
    )
    s["lightning"] = (
        _part(
            "body",
            (255, 205, 0),
            [[-0.05, -1.0], [0.55, -1.0], [0.15, -0.2], [0.6, -0.2], [-0.35, 1.0], [-0.05, 0.1], [-0.5, 0.1]],
        ),
    )
    angles = np.deg2rad(np.arange(0, 360, 60) - 90)
    petals = [_rotated_ellipse(0.55 * np.cos(a), 0.55 * np.sin(a), 0.45, 0.28, np.rad2deg(a)) for a in angles]
    s["flower"] = (
        _part("petals", (240, 120, 180), *petals),
        _part("centre", (250, 200, 40), circle(0, 0, 0.3), shade=1.2),
    )
    s["fish"] = (
        _part("tail", (235, 95, 60), [[0.4, 0], [0.98, -0.5], [0.84, 0], [0.98, 0.5]], shade=0.75),
        _part("fin", (235, 95, 60), [[-0.3, -0.38], [0.05, -0.7], [0.25, -0.3]], shade=0.75),
        _part("body", (250, 130, 80), ellipse(-0.1, 0, 0.7, 0.45, 80), _hole(circle(-0.5, -0.1, 0.09, 24))),
    )
    s["mushroom"] = (
        _part("stem", (240, 225, 200), [[-0.22, 0.0], [0.22, 0.0], [0.3, 0.95], [-0.3, 0.95]], shade=1.15),
        _part(
            "cap",
            (210, 50, 40),
            np.concatenate([ellipse(0, 0.1, 0.95, 0.95, 48, 180, 360), ellipse(0, 0.1, 0.95, 0.2, 24, 0, 180)]),
            shade=0.85,
        ),
        _part(
            "spots",
            (250, 245, 235),
            circle(-0.45, -0.2, 0.14),
            circle(0.1, -0.55, 0.16),
            circle(0.5, -0.15, 0.12),
            shade=1.25,
            outline=False,
        ),
    )
    return s


PROCEDURAL_PREFIX = "proc-"


def procedural_name(index: int) -> str:
    """The name of the procedural object number `index` ("proc-17")."""
    return f"{PROCEDURAL_PREFIX}{int(index)}"


@lru_cache(maxsize=4096)
def procedural_shape(index: int) -> tuple[Part, ...]:
    """Procedural object number `index`: a smooth random outline (a few radial harmonics), one bright colour, and
    for half of them a second part (a disc or a band) of another colour. The same index draws the same object in
    every world. These objects exist for training only: they are never a candidate class, and each one shows an
    operator a new object to carry its word, texture or scene onto, so it learns the operation rather than a lookup
    of the named objects' combinations."""
    rng = np.random.default_rng([7919, int(index)])
    t = np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False)
    radius = np.ones_like(t)
    for harmonic in range(2, 7):
        radius += rng.uniform(0.0, 0.35 / harmonic * 2.0) * np.cos(harmonic * t + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.5:  # half the outlines are polygons: 3-8 corners at jittered, evenly spread angles
        corners = int(rng.integers(3, 9))
        t = 2.0 * np.pi * (np.arange(corners) + rng.uniform(-0.25, 0.25, corners)) / corners
        radius = rng.uniform(0.7, 1.0, corners)
    points = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    points *= rng.uniform(0.8, 0.98) / np.linalg.norm(points, axis=1).max()  # fits the unit disc
    colour = tuple(int(c) for c in rng.integers(30, 250, size=3))
    parts = [_part("body", colour, points)]
    if rng.random() < 0.5:
        second = tuple(int(c) for c in rng.integers(30, 250, size=3))
        if rng.random() < 0.5:
            cx, cy = rng.uniform(-0.25, 0.25, size=2)
            parts.append(_part("spot", second, circle(cx, cy, rng.uniform(0.15, 0.3)), shade=0.8))
        else:
            y = rng.uniform(-0.3, 0.3)
            parts.append(_part("band", second, rect(-0.45, y - 0.1, 0.45, y + 0.1), shade=0.8))
    return tuple(parts)


class ShapeTable(dict):
    """The named objects (iteration, len and SHAPE_NAMES see only these) plus the procedural ones, built on first
    lookup of a "proc-<n>" name."""

    def __missing__(self, name: str) -> tuple[Part, ...]:
        index = _procedural_index(name)
        if index is None:
            raise KeyError(name)
        return procedural_shape(index)

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or _procedural_index(name) is not None


def _procedural_index(name) -> int | None:
    if isinstance(name, str) and name.startswith(PROCEDURAL_PREFIX) and name[len(PROCEDURAL_PREFIX) :].isdigit():
        return int(name[len(PROCEDURAL_PREFIX) :])
    return None


SHAPES: ShapeTable = ShapeTable(_named_shapes())
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)
