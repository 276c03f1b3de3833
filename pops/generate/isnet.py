"""IS-Net, the network of BRIA's RMBG-1.4 background remover, written here so that its weights load as plain tensors.

RMBG-1.4 (`briaai/RMBG-1.4`) is an IS-Net from "Highly Accurate Dichotomous Image Segmentation" (Qin et al. 2022):
a U-shaped encoder-decoder whose every stage is itself a small U-net, a residual U-block (RSU). The encoder is a
strided 3x3 convolution and six RSU stages (heights 7, 6, 5, 4, then two "dilated" RSU-4F that keep their
resolution and widen their receptive field with dilation instead of pooling), each followed by a 2x max-pool; the
decoder walks back up with five RSU stages, each fed its deeper neighbour (upsampled) beside the encoder's output at
its level. A 3x3 convolution on each decoder level (and on the deepest encoder stage) gives six side outputs,
upsampled to the input and squashed by a sigmoid; the first (the finest) is the matte.

The hub repository ships this network as remote code; pops never runs it. This module is the architecture, and
`load_isnet` reads the published state dict (`model.safetensors`, or `model.pth` as tensors only) into it. The module
names are the checkpoint's own (`stage1.rebnconvin.conv_s1.weight`, `side1.bias`, ...): they are its file format.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# Channel counts in units of `unit` channels (RMBG-1.4: unit = 16, so the encoder's stage 1 is 64 channels wide):
# stage name -> (height, dilated, in, mid, out).
ENCODER = {
    "stage1": (7, False, 4, 2, 4),
    "stage2": (6, False, 4, 2, 8),
    "stage3": (5, False, 8, 4, 16),
    "stage4": (4, False, 16, 8, 32),
    "stage5": (4, True, 32, 16, 32),
    "stage6": (4, True, 32, 16, 32),
}
DECODER = {
    "stage5d": (4, True, 64, 16, 32),
    "stage4d": (4, False, 64, 8, 16),
    "stage3d": (5, False, 32, 4, 8),
    "stage2d": (6, False, 16, 2, 4),
    "stage1d": (7, False, 8, 1, 4),
}
# The side outputs' input widths, finest first: decoder levels 1-5, then the deepest encoder stage.
SIDES = (4, 4, 8, 16, 32, 32)
RMBG_UNIT = 16


def _resized(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`x` bilinearly resized to `like`'s height and width (as is when they already match)."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class ConvBnRelu(nn.Module):
    """3x3 convolution (dilated by `dilation`, padded to keep the size), batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, dilation: int = 1):
        super().__init__()
        self.conv_s1 = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn_s1(self.conv_s1(x)))


class RSU(nn.Module):
    """A residual U-block of `height` levels: an input convolution to `cout` channels, then a small U-net on it
    (`mid` channels; `height - 1` encoder levels, a bottom level dilated by 2, decoder levels that take the level
    below beside the encoder's skip), added back onto the input convolution's output.

    Plain blocks halve the resolution between encoder levels; dilated ones (RSU-4F) keep it and dilate level i by
    2^(i-1) instead, on the way down and on the way up.
    """

    def __init__(self, height: int, cin: int, mid: int, cout: int, dilated: bool = False):
        super().__init__()
        self.height, self.dilated = height, dilated
        self.rebnconvin = ConvBnRelu(cin, cout)
        for level in range(1, height + 1):
            down = ConvBnRelu(cout if level == 1 else mid, mid, self._dilation(level, bottom=level == height))
            self.add_module(f"rebnconv{level}", down)
        for level in range(height - 1, 0, -1):
            up = ConvBnRelu(2 * mid, cout if level == 1 else mid, self._dilation(level))
            self.add_module(f"rebnconv{level}d", up)

    def _dilation(self, level: int, bottom: bool = False) -> int:
        if self.dilated:
            return 2 ** (level - 1)
        return 2 if bottom else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = self.rebnconvin(x)
        skips, h = [], top
        for level in range(1, self.height):
            h = getattr(self, f"rebnconv{level}")(h)
            skips.append(h)
            if not self.dilated and level < self.height - 1:
                h = _pool(h)
        h = getattr(self, f"rebnconv{self.height}")(h)
        for level in range(self.height - 1, 0, -1):
            skip = skips[level - 1]
            h = getattr(self, f"rebnconv{level}d")(torch.cat([_resized(h, skip), skip], 1))
        return h + top


class ISNet(nn.Module):
    """The IS-Net of RMBG-1.4 (`unit=16`); a smaller `unit` gives the same architecture, narrower (for tests).

    `forward(x)` takes (B, 3, H, W) pixels normalised as `pixels / 255 - 0.5` and returns the six side outputs,
    finest first, each (B, 1, H, W) in (0, 1).
    """

    def __init__(self, unit: int = RMBG_UNIT):
        super().__init__()
        self.unit = unit
        self.conv_in = nn.Conv2d(3, 4 * unit, 3, stride=2, padding=1)
        for name, (height, dilated, cin, mid, cout) in {**ENCODER, **DECODER}.items():
            self.add_module(name, RSU(height, cin * unit, mid * unit, cout * unit, dilated))
        for i, width in enumerate(SIDES, start=1):
            self.add_module(f"side{i}", nn.Conv2d(width * unit, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.conv_in(x)
        encoded = []
        for i in range(1, len(ENCODER) + 1):
            h = getattr(self, f"stage{i}")(h)
            encoded.append(h)
            if i < len(ENCODER):
                h = _pool(h)
        levels = [h]  # deepest first: stage 6, then decoder levels 5 .. 1
        for i in range(len(DECODER), 0, -1):
            skip = encoded[i - 1]
            h = getattr(self, f"stage{i}d")(torch.cat([_resized(h, skip), skip], 1))
            levels.append(h)
        levels.reverse()  # finest first, as the side outputs are numbered
        return [torch.sigmoid(_resized(getattr(self, f"side{i}")(f), x)) for i, f in enumerate(levels, start=1)]


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or a torch file read as tensors only (`weights_only`)."""
    from pops.base.readers import load_torch, read_safetensors

    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path, "segmenter weights")[0]
    state = load_torch(path, "segmenter weights")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a plain state dict of tensors (segmenter weights)")
    return state


def load_isnet(path: str | Path) -> ISNet:
    """An ISNet with the weights in `path` (its width read from them), in eval mode; ValueError (one line) if the
    file is not an IS-Net state dict."""
    state = read_state(path)
    first = state.get("conv_in.weight")
    if first is None or first.ndim != 4 or first.shape[1:] != (3, 3, 3) or first.shape[0] % 4:
        raise ValueError(f"{path}: not IS-Net (RMBG-1.4) weights: no conv_in.weight of shape (4k, 3, 3, 3)")
    net = ISNet(unit=first.shape[0] // 4)
    expected = net.state_dict()
    # Batch norm's step counters are bookkeeping for training; a checkpoint may leave them out.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = [
            f"{len(names)} {what} (e.g. {names[0]})"
            for names, what in ((missing, "missing"), (unexpected, "unexpected"), (wrong, "of another shape"))
            if names
        ]
        raise ValueError(f"{path}: not IS-Net (RMBG-1.4) weights: tensors {', '.join(parts)}")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise ValueError(f"{path}: segmenter weights hold NaN or inf values ({bad})")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)
    return net.eval()
