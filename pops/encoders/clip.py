"""The paper's embedding space: CLIP ViT-bigG/14 image and text encoders as shipped with the Kandinsky 2.2 prior.

`CLIPImageEncoder` gives the 1280-d `image_embeds` every pOps operator reads and writes (preprocessing by the
repo's `CLIPImageProcessor`, 224 px). `CLIPTextEncoder` gives the projected `text_embeds` (instruct's
text-alignment loss) and the per-token rows instruct is conditioned on. Both take already-built transformers
objects, so tests can run them on tiny random models of the same classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from pops.base.devices import resolve_device, resolve_dtype
from pops.base.hub import resolve_model
from pops.base.readers import read_image
from pops.base.reference import KANDINSKY_PRIOR


def default_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on (cuda when available); a one-line ValueError for hardware this machine lacks."""
    return resolve_device(device)


def default_dtype(device: torch.device, dtype: torch.dtype | str | None = None) -> torch.dtype:
    """fp16 on a GPU (as the reference runs), fp32 on a CPU (fp16 there is slow or unsupported)."""
    return resolve_dtype(dtype, device)


def as_rgb(item: Any) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, (str, Path)):
        return read_image(item)
    raise ValueError(f"expected a PIL image or an image path, got {type(item).__name__}")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _batches(items: Sequence[Any], batch_size: int, progress: bool, desc: str):
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    starts = range(0, len(items), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress or len(starts) < 2):
        yield items[start : start + batch_size]


class _CLIPPart:
    """What the two CLIP encoders share: device and dtype, loading from the Kandinsky repo (hub id or local folder)
    and recording where the weights came from, so operator folders rebuild them (`to_config` / `from_config`)."""

    type_name = ""  # "clip-image" | "clip-text"
    what = ""  # for the offline error message
    placeable = True  # from_config takes device= and dtype= (pops.encoders.load_encoder)

    def __init__(self, model, *, device: str | torch.device | None = None, dtype=None):
        self.device = default_device(device)
        self.dtype = default_dtype(self.device, dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.dim = int(model.config.projection_dim)
        # Where the weights came from (set by from_pretrained); recorded in operator folders by to_config().
        self.source: dict | None = None

    @property
    def encoder_id(self) -> str:
        """Names weights and precision, so embedding caches of different CLIPs (or dtypes) never mix."""
        name = Path(self.source["repo"]).name if self.source else "in-memory"
        return f"{self.type_name}/{name}/{_dtype_name(self.dtype)}"

    def to_config(self) -> dict:
        if self.source is None:
            raise ValueError(f"this {self.what} was built from model objects; there is no source to record")
        return {"type": self.type_name, **self.source}

    @classmethod
    def from_config(cls, config: dict, **kwargs):
        options = {k: v for k, v in config.items() if k != "type"}
        return cls.from_pretrained(options.pop("repo", KANDINSKY_PRIOR), **options, **kwargs)

    @classmethod
    def _load(cls, repo_or_path: str, model_cls, helper_cls, subfolders: dict[str, str], dtype, device):
        """Build from `repo_or_path`: the model from subfolders["subfolder"], the processor or tokenizer from the
        other entry of `subfolders` (whose key is recorded as is in the config)."""
        source = resolve_model(repo_or_path, what=cls.what)
        dev = default_device(device)
        model = model_cls.from_pretrained(source, subfolder=subfolders["subfolder"], dtype=default_dtype(dev, dtype))
        (helper_subfolder,) = [v for k, v in subfolders.items() if k != "subfolder"]
        encoder = cls(model, helper_cls.from_pretrained(source, subfolder=helper_subfolder), device=dev, dtype=dtype)
        encoder.source = {"repo": str(repo_or_path), **subfolders}
        return encoder


class CLIPImageEncoder(_CLIPPart):
    """CLIPVisionModelWithProjection + CLIPImageProcessor → (N, dim) float32 `image_embeds`.

    `resize`: squash every picture to `resize` × `resize` before the processor's own resize and centre crop, as the
    reference's inference scripts do (512) for the released operators — the pictures they were trained on were not,
    so the default is None (the processor alone). It changes the embedding of a non-square picture, so it is part of
    the encoder's id and config.
    """

    modality = "image"
    type_name, what = "clip-image", "CLIP image encoder"

    def __init__(
        self, model, processor, *, device: str | torch.device | None = None, dtype=None, resize: int | None = None
    ):
        super().__init__(model, device=device, dtype=dtype)
        self.processor = processor
        if resize is not None and resize < 1:
            raise ValueError(f"resize must be a positive size in pixels, got {resize}")
        self.resize = resize
        self._zero: torch.Tensor | None = None

    @property
    def encoder_id(self) -> str:
        return super().encoder_id + (f"/resize{self.resize}" if self.resize else "")

    def to_config(self) -> dict:
        return {**super().to_config(), **({"resize": self.resize} if self.resize else {})}

    @classmethod
    def from_pretrained(
        cls,
        repo_or_path: str = KANDINSKY_PRIOR,
        *,
        subfolder: str = "image_encoder",
        processor_subfolder: str = "image_processor",
        dtype=None,
        device: str | torch.device | None = None,
        resize: int | None = None,
    ) -> CLIPImageEncoder:
        # transformers is imported when a model is loaded: importing the encoders stays light
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        subfolders = {"subfolder": subfolder, "processor_subfolder": processor_subfolder}
        encoder = cls._load(repo_or_path, CLIPVisionModelWithProjection, CLIPImageProcessor, subfolders, dtype, device)
        if resize is not None:
            if resize < 1:
                raise ValueError(f"resize must be a positive size in pixels, got {resize}")
            encoder.resize = resize
        return encoder

    @property
    def crop_size(self) -> tuple[int, int]:
        crop = getattr(self.processor, "crop_size", None) or {}
        size = self.model.config.image_size
        return int(crop.get("height", size)), int(crop.get("width", size))

    @torch.no_grad()
    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Already-preprocessed (N, 3, H, W) pixels → (N, dim) float32."""
        out = self.model(pixel_values=pixel_values.to(device=self.device, dtype=self.dtype))
        return out.image_embeds.float().cpu()

    def encode(self, items: Sequence[Any], *, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """PIL images (or image paths) → (N, dim) float32 image embeddings."""
        items = list(items)
        if not items:
            return torch.zeros(0, self.dim)
        rows = []
        for chunk in _batches(items, batch_size, progress, "encoding images"):
            images = [as_rgb(x) for x in chunk]
            if self.resize:
                images = [im.resize((self.resize, self.resize)) for im in images]
            pixels = self.processor(images=images, return_tensors="pt").pixel_values
            rows.append(self.encode_pixels(pixels))
        return torch.cat(rows)

    def zero_image_embedding(self) -> torch.Tensor:
        """(1, dim): the embedding of an all-zeros input, the Kandinsky decoder's negative.

        As in the reference (KandinskyPriorPipeline.get_zero_embed) the zeros are *pixel values* — already past the
        processor's normalisation — at the processor's crop size, passed straight through the model.
        """
        if self._zero is None:
            height, width = self.crop_size
            self._zero = self.encode_pixels(torch.zeros(1, 3, height, width))
        return self._zero.clone()


class CLIPTextEncoder(_CLIPPart):
    """CLIPTextModelWithProjection + CLIPTokenizer: projected `text_embeds`, and per-token rows for instruct."""

    modality = "text"
    type_name, what = "clip-text", "CLIP text encoder"

    def __init__(self, model, tokenizer, *, device: str | torch.device | None = None, dtype=None):
        super().__init__(model, device=device, dtype=dtype)
        self.tokenizer = tokenizer
        self.width = int(model.config.hidden_size)
        self.max_length = int(min(tokenizer.model_max_length, model.config.max_position_embeddings))

    @classmethod
    def from_pretrained(
        cls,
        repo_or_path: str = KANDINSKY_PRIOR,
        *,
        subfolder: str = "text_encoder",
        tokenizer_subfolder: str = "tokenizer",
        dtype=None,
        device: str | torch.device | None = None,
    ) -> CLIPTextEncoder:
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        subfolders = {"subfolder": subfolder, "tokenizer_subfolder": tokenizer_subfolder}
        return cls._load(repo_or_path, CLIPTextModelWithProjection, CLIPTokenizer, subfolders, dtype, device)

    @staticmethod
    def _texts(texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("expected a list of strings (one string is a list of one)")
        return list(texts)

    @torch.no_grad()
    def _run(self, texts: list[str]):
        # Padded to the full context and run without a mask, like the reference: CLIP's text transformer is
        # causal, so the rows up to EOS (and the pooled EOS row) do not see the padding.
        tokens = self.tokenizer(
            texts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        )
        out = self.model(input_ids=tokens.input_ids.to(self.device))
        return out, tokens.attention_mask.sum(dim=1)

    def encode(self, items: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """Texts → (N, dim) float32 projected `text_embeds` (not normalised)."""
        items = self._texts(items)
        if not items:
            return torch.zeros(0, self.dim)
        rows = []
        for chunk in _batches(items, batch_size, progress, "encoding texts"):
            rows.append(self._run(chunk)[0].text_embeds.float().cpu())
        return torch.cat(rows)

    def token_rows(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Per text, (T_i, width) float32 `last_hidden_state` rows of BOS, the text's tokens and EOS."""
        texts = self._texts(texts)
        if not texts:
            return []
        out, lengths = self._run(texts)
        hidden = out.last_hidden_state.float().cpu()
        return [hidden[i, : int(n)].clone() for i, n in enumerate(lengths)]
