"""A small convolutional decoder, trained on the world's (embedding, image) pairs, that draws any embedding.

Unlike retrieval it can show embeddings that match no gallery image (an operator's new combinations). It is trained
for about two minutes on one CPU thread, with two losses: a pixel loss (L1 + MSE), which alone gives blurry blobs that
the encoder does not recognise, and an embedding loss: the decoded picture goes through the frozen image encoder,
exactly as `decoder_fidelity` re-encodes it (bicubic resize to the encoder's resolution, its normalisation), and
3 x (1 - cosine) to the source embedding is added. That second loss is what makes pictures recognisable: measured,
recognisability grows with the number of pictures re-encoded far more than with pixel-loss steps. The encoder's
backward pass is its cost, so it runs on a sub-batch.

Architecture: per-dimension standardisation of the embedding (statistics of the training set, stored as buffers) ->
linear -> (C, stem_size, stem_size) feature map -> one (nearest upsample x2, 3x3 conv, BatchNorm, SiLU) block per
doubling -> 3x3 conv -> sigmoid RGB. The wide linear stem learns the layout quickly; measured, an 8x8 map rather
than 4x4 doubles re-encoded top-1 at the same cost, and a 12x12 map drawing 48 px lifts it again (25% -> 40%).
(BatchNorm, not GroupNorm: GroupNorm's backward under bf16 autocast is several times slower on a CPU;
channels-last activations and a fused AdamW also keep a step cheap.)

`decoder_fidelity` measures how recognisable its pictures are: decode, re-encode with the image encoder, and ask
whether the re-encoded picture retrieves its own source among the gallery's embeddings (top-1 / top-5, vs chance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from pops.base.files import atomic_write_bytes
from pops.base.schema import from_mapping, to_mapping
from pops.encoders.efficientnet import PIXEL_MEAN, PIXEL_STD, cpu_has_fast_bf16
from pops.renderers import RENDERER_CONFIG_NAME, read_renderer_config, write_renderer_config

WEIGHTS_NAME = "decoder.safetensors"
RENDERER_TYPE = "decoder"
# Version of the saved weights' layout; folders of another version are refused with a one-line reason (version 1
# had a 4x4 stem and no `stem_size`).
WEIGHTS_FORMAT = "pops-decoder/2"


@dataclass
class DecoderConfig:
    embed_dim: int = 1280
    # Output side in pixels (stem_size times a power of two). The demo draws 48 px from a 12x12 stem (see
    # pops.demo.DemoConfig's decoder settings for what was measured).
    image_size: int = 32
    stem_size: int = 8  # side of the feature map the linear stem draws
    base_channels: int = 32  # channels at full resolution; doubled at every halving of the side ...
    max_channels: int = 64  # ... up to this many

    def channels(self) -> list[int]:
        """Feature channels at sides stem_size, 2 stem_size, ..., image_size."""
        if self.stem_size < 2:
            raise ValueError(f"stem_size must be at least 2, got {self.stem_size}")
        doublings = int(round(math.log2(max(self.image_size, 1) / self.stem_size)))
        if doublings < 1 or self.stem_size * 2**doublings != self.image_size:
            raise ValueError(
                f"image_size must be stem_size ({self.stem_size}) times a power of two (at least 2), "
                f"got {self.image_size}"
            )
        return [min(self.base_channels * 2 ** (doublings - i), self.max_channels) for i in range(doublings + 1)]


class ConvDecoder(nn.Module):
    """(B, embed_dim) raw embeddings -> (B, 3, S, S) RGB in [0, 1]."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        ch = config.channels()
        self.register_buffer("embed_mean", torch.zeros(config.embed_dim))
        self.register_buffer("embed_std", torch.ones(config.embed_dim))
        self.stem = nn.Linear(config.embed_dim, ch[0] * config.stem_size**2)
        self.stem_norm = nn.BatchNorm2d(ch[0])
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.SiLU(),
            )
            for c_in, c_out in zip(ch[:-1], ch[1:])
        )
        self.to_rgb = nn.Conv2d(ch[-1], 3, 3, padding=1)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        x = (embeds - self.embed_mean) / self.embed_std
        side = self.config.stem_size
        x = self.stem(x).view(len(x), -1, side, side)
        x = F.silu(self.stem_norm(x)).contiguous(memory_format=torch.channels_last)
        for block in self.blocks:
            x = block(x)
        return torch.sigmoid(self.to_rgb(x))


def images_to_tensor(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """PIL images -> (N, 3, size, size) float32 in [0, 1] (area-averaged down to the decoder's size)."""
    arrays = [np.asarray(img.convert("RGB").resize((size, size), Image.BOX), dtype=np.uint8) for img in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255.0)


def tensor_to_images(x: torch.Tensor) -> list[Image.Image]:
    arrays = (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a, "RGB") for a in arrays]


class DecoderRenderer:
    """Renders (B, D) raw embeddings with a trained `ConvDecoder` (in fp32); `losses` holds the training curve.

    `output_size`: side of the returned pictures (bicubic upscaling of the decoder's output, for display); None
    returns the decoder's native `config.image_size`.
    """

    def __init__(self, model: ConvDecoder, *, output_size: int | None = None):
        self.model = model.eval().requires_grad_(False)
        self.config = model.config
        self.output_size = output_size
        self.losses: list[float] = []

    @property
    def dim(self) -> int:
        return self.config.embed_dim

    @torch.inference_mode()
    def decode(self, embeds: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(B, 3, S, S) float32 pixels in [0, 1]."""
        if embeds.ndim == 1:
            embeds = embeds.unsqueeze(0)
        if embeds.ndim != 2 or embeds.shape[1] != self.dim:
            raise ValueError(f"expected (B, {self.dim}) embeddings, got shape {tuple(embeds.shape)}")
        outs = []
        for start in range(0, len(embeds), batch_size):
            outs.append(self.model(embeds[start : start + batch_size].float()))
        return torch.cat(outs) if outs else torch.empty(0, 3, self.config.image_size, self.config.image_size)

    def render(self, embeds: torch.Tensor, *, generator: torch.Generator | None = None) -> list[Image.Image]:
        """One picture per embedding (deterministic; `generator` is accepted for the protocol)."""
        pictures = tensor_to_images(self.decode(embeds))
        if self.output_size and self.output_size != self.config.image_size:
            pictures = [p.resize((self.output_size, self.output_size), Image.BICUBIC) for p in pictures]
        return pictures

    def save_pretrained(self, directory: str | Path) -> Path:
        """Writes decoder.safetensors + renderer.json (type "decoder" + DecoderConfig) into `directory`, atomically."""
        directory = Path(directory)
        state = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        atomic_write_bytes(directory / WEIGHTS_NAME, save(state, metadata={"format": WEIGHTS_FORMAT}))
        write_renderer_config(directory, RENDERER_TYPE, to_mapping(self.config))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, output_size: int | None = None) -> DecoderRenderer:
        directory = Path(directory)
        for name in (RENDERER_CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"no {name} in {directory} (not a saved DecoderRenderer)")
        config = from_mapping(
            DecoderConfig, read_renderer_config(directory, RENDERER_TYPE), what=f"{directory / RENDERER_CONFIG_NAME}"
        )
        weights = directory / WEIGHTS_NAME
        try:
            with safe_open(str(weights), "pt") as f:
                saved_format = (f.metadata() or {}).get("format")
        except Exception as exc:  # not a safetensors file (SafetensorError)
            raise ValueError(f"cannot load {weights}: {str(exc).splitlines()[0]}") from None
        if saved_format != WEIGHTS_FORMAT:
            raise ValueError(
                f"cannot load {weights}: saved as {saved_format or 'an unknown format'}, this version reads "
                f"{WEIGHTS_FORMAT} (train the decoder again, e.g. with pops demo)"
            )
        try:
            config.channels()
            model = ConvDecoder(config)
            model.load_state_dict(load_file(str(weights)))
        except Exception as exc:  # a bad config (ValueError), damaged file or weights of another shape
            raise ValueError(f"cannot load {directory / WEIGHTS_NAME}: {str(exc).splitlines()[0]}") from None
        return cls(model, output_size=output_size)


def encoder_embeds(encoder: Any, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) pixels in [0, 1] -> (B, D) embeddings through `encoder`'s network, differentiably.

    The same path as `encoder.encode` on the pictures the decoder renders (bicubic resize to the encoder's
    resolution, then its normalisation; the uint8 rounding of a PIL picture is the only step left out). Needs an
    encoder that exposes its network the way `EfficientNetEncoder` does (`net`, `resolution`, `bf16`).
    """
    res = encoder.resolution
    if pixels.shape[-1] != res:
        pixels = F.interpolate(pixels, size=(res, res), mode="bicubic", align_corners=False)
    x = ((pixels * 255.0 - PIXEL_MEAN) / PIXEL_STD).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(encoder.bf16)):
        return encoder.net.extract_features(x).mean(dim=(2, 3)).float()


def train_decoder(
    embeds: torch.Tensor,
    images: Sequence[Image.Image],
    *,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 3e-3,
    config: DecoderConfig | None = None,
    encoder: Any | None = None,
    embedding_weight: float = 3.0,
    embedding_batch: int = 8,
    bf16: bool | None = None,
    seed: int = 0,
    progress: bool = True,
) -> DecoderRenderer:
    """Fits a `ConvDecoder` to (embedding, image) pairs: AdamW, one-cycle learning rate, L1 + MSE pixel loss, and,
    given the image `encoder` that made `embeds`, `embedding_weight` x (1 - cosine) between the re-encoded decoding
    and its source for the first `embedding_batch` rows of every batch (see `encoder_embeds`; 0 turns it off).

    `embeds` (N, D) raw embeddings of `images` (N PIL images). Returns the renderer, with the per-step loss in
    `.losses`. `bf16` None: bfloat16 autocast where the CPU computes bf16 natively. Deterministic for a given seed.
    """
    if bf16 is None:
        bf16 = cpu_has_fast_bf16()
    _check_training_set(embeds, images, steps, batch_size, embedding_weight, embedding_batch)
    config = config or DecoderConfig(embed_dim=embeds.shape[1])
    if config.embed_dim != embeds.shape[1]:
        raise ValueError(f"config.embed_dim {config.embed_dim} != embedding width {embeds.shape[1]}")
    use_encoder = encoder is not None and embedding_weight > 0 and embedding_batch > 0
    if use_encoder and getattr(encoder, "dim", embeds.shape[1]) != embeds.shape[1]:
        raise ValueError(f"the encoder makes {encoder.dim}-d embeddings, the decoder is given {embeds.shape[1]}-d")
    generator = torch.Generator().manual_seed(seed)
    x = embeds.detach().float()
    model = _new_decoder(config, x, seed)
    target = images_to_tensor(images, config.image_size)
    sources = F.normalize(x, dim=-1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4, fused=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="training decoder", unit="step", disable=not progress):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pred = model(x[idx])
        pred = pred.float()
        loss = F.l1_loss(pred, target[idx]) + F.mse_loss(pred, target[idx])
        if use_encoder:
            k = min(embedding_batch, len(idx))
            loss = loss + embedding_weight * _embedding_loss(encoder, pred[:k], sources[idx[:k]])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    renderer = DecoderRenderer(model)
    renderer.losses = losses
    return renderer


def _check_training_set(embeds, images, steps: int, batch_size: int, embedding_weight, embedding_batch) -> None:
    if embeds.ndim != 2 or embeds.shape[0] != len(images):
        raise ValueError(f"need (N, D) embeddings for N images; got {tuple(embeds.shape)} for {len(images)} images")
    if len(images) == 0 or steps < 1 or batch_size < 1:
        raise ValueError("train_decoder needs at least one image, steps >= 1 and batch_size >= 1")
    if embedding_weight < 0 or embedding_batch < 0:
        raise ValueError("embedding_weight and embedding_batch must be non-negative")


def _new_decoder(config: DecoderConfig, x: torch.Tensor, seed: int) -> ConvDecoder:
    """A freshly initialised decoder (from `seed`) that standardises embeddings with the statistics of `x`."""
    torch.manual_seed(seed)  # the layers' initialisation
    model = ConvDecoder(config)
    model.embed_mean.copy_(x.mean(0))
    # Clamp: features that are (almost) constant over the training set would otherwise blow up.
    model.embed_std.copy_(x.std(0, unbiased=False).clamp(min=1e-2 * float(x.std()) + 1e-6))
    return model


def _embedding_loss(encoder, pictures: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """1 - cosine between the re-encoded `pictures` and their (unit) source embeddings, averaged."""
    re_encoded = F.normalize(encoder_embeds(encoder, pictures), dim=-1)
    return (1.0 - (re_encoded * sources).sum(-1)).mean()


@torch.inference_mode()
def decoder_fidelity(
    renderer: DecoderRenderer,
    encoder: Any,
    embeds: torch.Tensor,
    gallery_embeds: torch.Tensor | None = None,
    *,
    batch_size: int = 64,
) -> dict[str, float]:
    """How recognisable decoded pictures are: decode `embeds`, re-encode the pictures with `encoder`, and retrieve.

    Row i of `embeds` must be row i of `gallery_embeds` (default: `embeds` itself, so the gallery is the decoded
    set). Returns top-1 / top-5 accuracy of the re-encoded picture finding its own source among the gallery, the
    chance level 1/M, and mean cosine of re-encoded picture to its source vs to the other gallery entries.
    """
    gallery = embeds if gallery_embeds is None else gallery_embeds
    if gallery.shape[0] < embeds.shape[0] or gallery.shape[1] != embeds.shape[1]:
        raise ValueError("gallery_embeds must hold the decoded embeddings as its first rows, with the same width")
    n, m = embeds.shape[0], gallery.shape[0]
    if n == 0:
        raise ValueError("no embeddings to decode")
    pictures = renderer.render(embeds)
    re_encoded = F.normalize(encoder.encode(pictures, batch_size=batch_size).float(), dim=-1)
    sims = re_encoded @ F.normalize(gallery.float(), dim=-1).T  # (n, m)
    own = sims[torch.arange(n), torch.arange(n)]
    rank = (sims > own.unsqueeze(1)).sum(1)  # how many gallery entries beat the source
    others = (sims.sum(1) - own) / max(m - 1, 1)
    return {
        "top1": float((rank == 0).float().mean()),
        "top5": float((rank < 5).float().mean()),
        "chance_top1": 1.0 / m,
        "cos_to_source": float(own.mean()),
        "cos_to_others": float(others.mean()),
        "n": float(n),
        "gallery": float(m),
    }
