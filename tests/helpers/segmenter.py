"""Tiny IS-Nets (RMBG-1.4's architecture, `pops.generate.isnet`, a few channels wide) written as weights files, the
way the segmenter's folder holds the real ones: random weights, or weights that matte a centred blob."""

from __future__ import annotations

from pathlib import Path

import torch

from pops.generate.isnet import ISNet


def random_isnet(unit: int = 1, seed: int = 0) -> ISNet:
    """Random convolutions (torch's initialisation) and random batch-norm affine and running statistics."""
    torch.manual_seed(seed)
    net = ISNet(unit)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return net.eval()


def blob_isnet(unit: int = 1, level: float = 4.4, sharpness: float = 5.0) -> ISNet:
    """An IS-Net that mattes a soft centred blob whatever the picture: the input convolution ignores the pixels (a
    constant map), every other convolution averages its window, and the zero padding makes the averages fall off
    towards the borders; the first side output thresholds that bump at `level` (at a 32 px input, about a
    third of the picture is foreground, and the corners are background)."""
    net = ISNet(unit)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.fill_(1.0 / (module.in_channels * 9))
                module.bias.zero_()
        net.conv_in.weight.zero_()
        net.conv_in.bias.fill_(1.0)
        net.side1.weight.mul_(sharpness)
        net.side1.bias.fill_(-sharpness * level)
    return net.eval()


def save_isnet(net: ISNet, path: Path) -> Path:
    """The state dict as `model.safetensors` (or, for a .pth path, a torch file of tensors)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
