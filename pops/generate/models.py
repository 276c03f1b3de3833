"""The real models behind the data recipes, each wrapped as a small callable.

Recipes only ever call these signatures, so tests (and other back-ends) plug in anything that matches:

    text_to_image(prompt, generator) -> PIL image                      SDXL-Turbo
    detector(image, queries) -> [Detection | None] (one per query)     OWLv2
    segmenter(image) -> (H, W) float32 foreground matte in [0, 1]      RMBG-1.4
    depth_to_image(image, prompt, generator) -> PIL image              SD2-depth
    inpainter(image, mask, prompt, generator) -> PIL image             SDXL inpainting
    human_parsing: len() and row(i) -> (PIL image, (H, W) int labels)  ATR human parsing (a `datasets` dataset)

`load_models` builds the real ones from the hub ids below, or from local folders (`--models-from DIR`, one
sub-folder per model, named as in FOLDERS, each in the layout its `from_pretrained` reads; the segmenter's folder
holds its weights file, SEGMENTER_WEIGHTS). No model runs code from the hub: RMBG-1.4's network is written in
`pops.generate.isnet` and its weights are read as plain tensors.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pops.base.hub import resolve_file, resolve_model
from pops.generate.sharding import state

HUB_IDS = {
    "text_to_image": "stabilityai/sdxl-turbo",
    "detector": "google/owlv2-base-patch16-ensemble",
    "segmenter": "briaai/RMBG-1.4",
    "depth_to_image": "stabilityai/stable-diffusion-2-depth",
    "inpainter": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
    "human_parsing": "mattmdjaga/human_parsing_dataset",
}
# RMBG-1.4's weights, as tensors only, in the order they are looked for (the hub repository holds both; its remote
# code is never used: the architecture is pops.generate.isnet).
SEGMENTER_WEIGHTS = ("model.safetensors", "model.pth")
FOLDERS = {
    "text_to_image": "sdxl-turbo",
    "detector": "owlv2",
    "segmenter": "rmbg",
    "depth_to_image": "sd2-depth",
    "inpainter": "sdxl-inpainting",
    "human_parsing": "human-parsing",
}
# The reference's negative prompt for the SD2-depth re-renders (its spelling fixed).
DEPTH_NEGATIVE_PROMPT = "bad, deformed, ugly, bad anatomy"


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixels of the input image
    score: float


class UndecodableImage(ValueError):
    """An input image (e.g. a dataset row) that PIL cannot decode."""


@dataclass
class GenerationModels:
    """The callables a recipe may use; a recipe names the ones it needs in its REQUIRES."""

    text_to_image: Callable[[str, torch.Generator], Image.Image] | None = None
    detector: Callable[[Image.Image, Sequence[str]], list[Detection | None]] | None = None
    segmenter: Callable[[Image.Image], np.ndarray] | None = None
    depth_to_image: Callable[[Image.Image, str, torch.Generator], Image.Image] | None = None
    inpainter: Callable[[Image.Image, Image.Image, str, torch.Generator], Image.Image] | None = None
    human_parsing: Any = None

    def require(self, roles: Iterable[str], operator: str) -> None:
        missing = [r for r in roles if getattr(self, r) is None]
        if missing:
            raise ValueError(f"the {operator} recipe needs these models, which were not given: {', '.join(missing)}")


@dataclass
class ModelSettings:
    """How the real models are run (defaults: the reference's settings)."""

    image_size: int = 512  # SDXL-Turbo / inpainting output side
    turbo_steps: int = 1
    depth_steps: int = 50
    depth_guidance: float = 7.5
    inpaint_steps: int = 20
    inpaint_guidance: float = 8.0
    segmenter_size: int = 1024  # RMBG-1.4 input side
    dtype: str | None = None  # fp16 / bf16 / fp32; default fp16 on a GPU, fp32 on a CPU

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def torch_dtype(name: str | None, device: torch.device) -> torch.dtype:
    if name is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(table)}")
    return table[name]


class TextToImage:
    """A diffusers text-to-image pipeline (SDXL-Turbo: 1 step, no guidance) as `(prompt, generator) -> image`."""

    def __init__(self, pipe, *, steps: int = 1, guidance_scale: float = 0.0, size: int = 512):
        self.pipe, self.steps, self.guidance_scale, self.size = pipe, steps, guidance_scale, size
        pipe.set_progress_bar_config(disable=True)

    @torch.inference_mode()
    def __call__(self, prompt: str, generator: torch.Generator) -> Image.Image:
        out = self.pipe(
            prompt=prompt,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            height=self.size,
            width=self.size,
            generator=generator,
        )
        return out.images[0]


class DepthToImage:
    """StableDiffusionDepth2ImgPipeline at strength 1.0: a new image with the depth (geometry) of the input."""

    def __init__(
        self, pipe, *, steps: int = 50, guidance_scale: float = 7.5, negative_prompt: str = DEPTH_NEGATIVE_PROMPT
    ):
        self.pipe, self.steps, self.guidance_scale, self.negative_prompt = pipe, steps, guidance_scale, negative_prompt
        pipe.set_progress_bar_config(disable=True)

    @torch.inference_mode()
    def __call__(self, image: Image.Image, prompt: str, generator: torch.Generator) -> Image.Image:
        out = self.pipe(
            prompt=prompt,
            image=image,
            negative_prompt=self.negative_prompt,
            strength=1.0,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            generator=generator,
        )
        return out.images[0]


class Inpainter:
    """An SDXL inpainting pipeline at strength 1.0: repaints the white part of the mask from the prompt."""

    def __init__(self, pipe, *, steps: int = 20, guidance_scale: float = 8.0):
        self.pipe, self.steps, self.guidance_scale = pipe, steps, guidance_scale
        pipe.set_progress_bar_config(disable=True)

    @torch.inference_mode()
    def __call__(self, image: Image.Image, mask: Image.Image, prompt: str, generator: torch.Generator) -> Image.Image:
        out = self.pipe(
            prompt=prompt,
            image=image,
            mask_image=mask,
            strength=1.0,
            guidance_scale=self.guidance_scale,
            num_inference_steps=self.steps,
            height=image.height,
            width=image.width,
            generator=generator,
        )
        return out.images[0]


class OwlDetector:
    """Owlv2ForObjectDetection + Owlv2Processor: for each text query, its best-scoring box (None if there is none).

    OWLv2 scores every (box, query) pair with an independent sigmoid, so each query takes the box that scores it
    highest, whichever query that box scores highest.
    """

    def __init__(self, model, processor, device: torch.device | str = "cpu"):
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = torch.device(device)

    @torch.inference_mode()
    def __call__(self, image: Image.Image, queries: Sequence[str]) -> list[Detection | None]:
        image = image.convert("RGB")
        inputs = self.processor(text=[list(queries)], images=image, return_tensors="pt").to(self.device)
        outputs = self.model(**inputs)
        scores = outputs.logits[0].float().sigmoid().cpu()  # (boxes, queries)
        cx, cy, bw, bh = outputs.pred_boxes[0].float().cpu().unbind(-1)  # centre/size, relative to the padded square
        # OWLv2 pads the image to a square at the bottom/right, so boxes are in a side x side frame.
        side, (w, h) = max(image.size), image.size
        boxes = torch.stack(
            [(cx - bw / 2) * side, (cy - bh / 2) * side, (cx + bw / 2) * side, (cy + bh / 2) * side], -1
        )
        best: list[Detection | None] = []
        for q in range(len(queries)):
            if scores.shape[0] == 0:
                best.append(None)
                continue
            i = int(scores[:, q].argmax())
            x0, y0, x1, y1 = boxes[i].tolist()
            box = (min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w), min(max(y1, 0.0), h))
            best.append(Detection(box=box, score=float(scores[i, q])))
        return best


class RMBGSegmenter:
    """BRIA RMBG-1.4 (an IS-Net, `pops.generate.isnet`): a foreground matte in [0, 1] at the input's size.

    Pre/post-processing as the model card's reference code does it: the RGB pixels bilinearly resized (as floats) to
    a square input, / 255 - 0.5; the first (finest) side output, bilinearly resized back and min-max normalised.
    """

    def __init__(self, model, *, input_size: int = 1024, device: torch.device | str = "cpu"):
        self.model = model.to(device).eval()
        self.input_size = input_size
        self.device = torch.device(device)
        self.dtype = next(model.parameters()).dtype

    @torch.inference_mode()
    def __call__(self, image: Image.Image) -> np.ndarray:
        rgb = image.convert("RGB")
        x = torch.from_numpy(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None].to(self.device)
        x = torch.nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear")
        pred = self.model((x / 255.0 - 0.5).to(self.dtype))[0].float()
        pred = torch.nn.functional.interpolate(pred, size=(rgb.height, rgb.width), mode="bilinear")[0, 0]
        pred = (pred - pred.min()) / (pred.max() - pred.min()).clamp_min(1e-8)
        return pred.cpu().numpy().astype(np.float32)


def segmenter_weights(source: str) -> str:
    """The local path of RMBG-1.4's weights: a weights file as is, the first of SEGMENTER_WEIGHTS in a folder, or
    model.safetensors from a hub repository."""
    path = Path(source)
    if path.is_file():
        return str(path)
    if path.is_dir():
        for name in SEGMENTER_WEIGHTS:
            if (path / name).is_file():
                return str(path / name)
        raise FileNotFoundError(f"{path}: no segmenter weights ({' or '.join(SEGMENTER_WEIGHTS)}) in this folder")
    return resolve_file(source, SEGMENTER_WEIGHTS[0], what="segmenter weights")


def _open(value) -> Image.Image:
    """A dataset cell (PIL image, {"bytes", "path"} dict, bytes or path) decoded; UndecodableImage if it cannot be."""
    try:
        if isinstance(value, Image.Image):
            value.load()
            return value
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        image = Image.open(io.BytesIO(value) if isinstance(value, (bytes, bytearray)) else value)
        image.load()
        return image
    except Exception as exc:  # PIL raises several types (OSError, SyntaxError, ValueError ...) on bad data
        raise UndecodableImage(f"cannot decode image: {type(exc).__name__}: {exc}") from None


class HumanParsing:
    """ATR human parsing rows (an `image` and a `mask` of ATR label ids), decoded one row at a time."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, index: int) -> tuple[Image.Image, np.ndarray]:
        record = self.rows[index]
        image = _open(record["image"]).convert("RGB")
        mask = _open(record["mask"])
        labels = np.asarray(mask if mask.mode in ("L", "P", "I", "I;16") else mask.convert("L")).astype(np.int64)
        if labels.shape != (image.height, image.width):
            raise UndecodableImage(f"mask size {labels.shape[::-1]} differs from image size {image.size}")
        return image, labels


def load_human_parsing(source: str | Path, split: str = "train") -> HumanParsing:
    """A hub dataset id (e.g. mattmdjaga/human_parsing_dataset) or a folder saved with `Dataset.save_to_disk`.

    Images are decoded lazily by us (not by `datasets`), so one corrupt row is skipped instead of failing the run.
    """
    import datasets  # heavy (pyarrow, fsspec); only the composition recipe needs it

    path = Path(source)
    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        ds = datasets.load_from_disk(str(path))
    else:
        ds = datasets.load_dataset(str(source), split=split)
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[split]
    for column in ("image", "mask"):
        if column not in ds.column_names:
            raise ValueError(f"human parsing dataset {source} has no {column!r} column (has {ds.column_names})")
        ds = ds.cast_column(column, datasets.Image(decode=False))
    return HumanParsing(ds)


def model_sources(roles: Iterable[str], models_from: str | Path | None = None) -> dict[str, str]:
    """Where each model comes from: the hub id, or DIR/<folder> with --models-from DIR."""
    sources = {}
    for role in roles:
        if models_from is None:
            sources[role] = HUB_IDS[role]
            continue
        path = Path(models_from) / FOLDERS[role]
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: --models-from needs a {FOLDERS[role]}/ folder for the {role}")
        sources[role] = str(path)
    return sources


def load_models(
    roles: Iterable[str],
    *,
    models_from: str | Path | None = None,
    settings: ModelSettings | None = None,
    device: torch.device | str | None = None,
) -> GenerationModels:
    """Load the real models for `roles` onto `device` (default: this process's accelerate device)."""
    settings = settings or ModelSettings()
    if device is None:
        device = state().device
    device = torch.device(device)
    dtype = torch_dtype(settings.dtype, device)
    models = GenerationModels()
    for role, source in model_sources(roles, models_from).items():
        setattr(models, role, _load_role(role, source, settings, device, dtype))
    return models


def _load_role(role: str, source: str, settings: ModelSettings, device: torch.device, dtype: torch.dtype):
    if role == "human_parsing":
        try:
            return load_human_parsing(source)
        except ValueError:
            raise
        except Exception as exc:  # datasets raises many types when a dataset cannot be had (offline, missing ...)
            raise ValueError(f"cannot load the human parsing dataset {source!r}: {type(exc).__name__}: {exc}") from None
    # A local folder as is; a hub id checked (or found in the local cache) at once, with a one-line error if not.
    source = resolve_model(source, what=f"{role.replace('_', ' ')} model")
    # The model libraries are imported per role: each is heavy, and a recipe loads only the roles it needs.
    if role == "text_to_image":
        from diffusers import AutoPipelineForText2Image

        pipe = AutoPipelineForText2Image.from_pretrained(source, dtype=dtype).to(device)
        return TextToImage(pipe, steps=settings.turbo_steps, size=settings.image_size)
    if role == "depth_to_image":
        from diffusers import StableDiffusionDepth2ImgPipeline

        pipe = StableDiffusionDepth2ImgPipeline.from_pretrained(source, dtype=dtype).to(device)
        return DepthToImage(pipe, steps=settings.depth_steps, guidance_scale=settings.depth_guidance)
    if role == "inpainter":
        from diffusers import AutoPipelineForInpainting

        pipe = AutoPipelineForInpainting.from_pretrained(source, dtype=dtype).to(device)
        return Inpainter(pipe, steps=settings.inpaint_steps, guidance_scale=settings.inpaint_guidance)
    if role == "detector":
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        return OwlDetector(
            Owlv2ForObjectDetection.from_pretrained(source), Owlv2Processor.from_pretrained(source), device
        )
    if role == "segmenter":
        from pops.generate.isnet import load_isnet

        model = load_isnet(segmenter_weights(source)).to(dtype)
        return RMBGSegmenter(model, input_size=settings.segmenter_size, device=device)
    raise ValueError(f"unknown model role {role!r}; known roles: {', '.join(HUB_IDS)}")
