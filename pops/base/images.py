"""Image operations on numpy arrays that more than one room needs (the world's drawing, the data recipes' masks)."""

from __future__ import annotations

import numpy as np


def erode(a: np.ndarray, radius: int) -> np.ndarray:
    """Grey-level erosion: the min over a (2r+1)^2 square (separable; the border only sees pixels inside)."""
    out = a.copy()
    for axis in (0, 1):
        src = out.copy()
        for k in range(1, radius + 1):
            if axis == 0:
                np.minimum(out[k:], src[:-k], out=out[k:])
                np.minimum(out[:-k], src[k:], out=out[:-k])
            else:
                np.minimum(out[:, k:], src[:, :-k], out=out[:, k:])
                np.minimum(out[:, :-k], src[:, k:], out=out[:, :-k])
    return out


def dilate(a: np.ndarray, radius: int) -> np.ndarray:
    """Grey-level dilation: the max over a (2r+1)^2 square (on a 0/1 mask, binary dilation by that square)."""
    return -erode(-a, radius)
