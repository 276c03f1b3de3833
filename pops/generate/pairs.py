"""From a generated dataset (`pops generate`) to training pairs (`pops.embeddings.pairs.Pairs`), through the embedding
cache.

Every example of every manifest (docs/DATA_FORMAT.md) becomes one or more pairs, slot by slot in registry order:

* an image role → that image's embedding; `null` → the slot is absent (zeros, `present` False);
* texturing's `{"patch_of": ROLE, "mask": ASSET}` → a texture patch cut inside the mask. The reference cuts a new
  patch at every training step; with cached embeddings we precompute `patches_per_sample` patches per example
  and emit one pair per patch;
* instruct's word slot → a word drawn with `sample_instruction` (`words_per_image` draws per picture): its token
  rows are the slot, and the text embedding of its alignment text is `align_text`. The target is the picture
  itself (the reference has no edited pictures).

All random draws of example e of sample i come from a generator seeded with (seed, i, e), so the pairs do not
depend on the order or grouping of the work, and a rerun cuts the same patches — which are then cache hits, like
every image: a second run encodes nothing. Examples whose files cannot be read are skipped and reported.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from pops.base.registry import OperatorSpec, get_spec
from pops.embeddings.cache import EmbeddingCache
from pops.embeddings.pairs import PairRow, Pairs, PairsAssembler
from pops.generate.embedding import open_rgb
from pops.generate.instruct import sample_instruction
from pops.generate.storage import iter_samples, read_dataset_info, sample_file
from pops.generate.texturing import INSIDE, cut_texture_patch

logger = logging.getLogger(__name__)

# The reference's patch side: uniform in [min(96, m - 1), m] with m = half the object box's shorter side; 96 px is
# at its 512 px images, so the lower bound scales with the image.
REFERENCE_SIZE, REFERENCE_MIN_PATCH = 512, 96
# How many skipped examples `info["skipped"]` lists one by one (the count is always complete).
MAX_LISTED_SKIPS = 100


class SkipExample(Exception):
    """An example that cannot become pairs (an undecodable file, an empty mask); it is skipped with the reason."""


def patch_side(box: tuple[int, int, int, int], image_size: tuple[int, int], rng: np.random.Generator) -> int:
    """The side of a texture patch for an object in `box` (x0, y0, x1, y1), drawn as the reference does."""
    largest = max(1, min(box[2] - box[0], box[3] - box[1]) // 2)
    smallest = max(1, min(round(REFERENCE_MIN_PATCH * min(image_size) / REFERENCE_SIZE), largest - 1))
    return int(rng.integers(smallest, largest + 1))


def mask_box(mask: Image.Image) -> tuple[int, int, int, int]:
    """Bounding box of the mask's inside pixels (the whole image when there are none)."""
    inside = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0 >= INSIDE
    if not inside.any():
        return (0, 0, mask.width, mask.height)
    ys, xs = np.nonzero(inside)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


@dataclass
class _Draw:
    """One pair before encoding: an image (or None) per image slot, the target, and instruct's word."""

    images: list[Image.Image | None]
    target: Image.Image
    word: str | None = None
    text: str | None = None


class _SampleFiles:
    """The files of one sample, each opened once (the same object for every pair that uses it)."""

    def __init__(self, manifest: dict):
        self.folder = Path(manifest["dir"])
        self.images, self.assets = manifest.get("images", {}), manifest.get("assets", {})
        self._open: dict[tuple[str, str], Image.Image] = {}

    def _get(self, table: dict, kind: str, role: str, mode: str) -> Image.Image:
        key = (kind, role)
        if key not in self._open:
            if role not in table:
                raise SkipExample(f"the manifest lists no {kind} {role!r}")
            path = sample_file(self.folder, role, table[role])  # outside the sample: refused, not skipped
            try:
                if mode == "RGB":
                    self._open[key] = open_rgb(path)  # the pixels `pops embed` cached
                else:
                    with Image.open(path) as im:
                        self._open[key] = im.convert(mode)
            except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError ... for damaged or missing files
                raise SkipExample(f"cannot decode {path.name}: {type(exc).__name__}: {exc}") from None
        return self._open[key]

    def image(self, role: str) -> Image.Image:
        return self._get(self.images, "image", role, "RGB")

    def mask(self, role: str) -> Image.Image:
        return self._get(self.assets, "asset", role, "L")


class _PairBuilder:
    def __init__(
        self, spec: OperatorSpec, cache, *, patches_per_sample: int, words_per_image: int, seed: int, chunk_images: int
    ):
        self.spec, self.cache, self.seed = spec, cache, seed
        self.patches_per_sample, self.words_per_image = patches_per_sample, words_per_image
        self.chunk_images = chunk_images
        self.out: PairsAssembler | None = None
        self.texts: list[str] = []  # instruct: each pair's alignment text
        self.skipped: list[dict] = []
        self.skip_count = 0
        self._images: list[Image.Image] = []  # this chunk's images to encode
        self._slot_of: dict[int, int] = {}  # id(image) -> position in self._images (shared images encoded once)
        self._pending: list[PairRow] = []  # this chunk's pairs, their images as positions in self._images

    def draw_count(self, example: dict) -> int:
        """How many pairs one example gives: a pair per texture patch, per instruct word, or just one."""
        if any(isinstance(v, dict) for v in example.get("inputs", {}).values()):
            return self.patches_per_sample
        return self.words_per_image if self.spec.text_slots else 1

    def allocate(self, manifests: list[dict]) -> None:
        capacity = sum(self.draw_count(e) for m in manifests for e in m.get("examples", []))
        self.out = PairsAssembler(self.spec, capacity, self.cache.dim)

    # ----- one example → draws ------------------------------------------------------------------------------
    def _draws(self, manifest: dict, files: _SampleFiles, example: dict, rng: np.random.Generator) -> list[_Draw]:
        inputs = example.get("inputs", {})
        unknown = set(inputs) - set(self.spec.slot_names)
        if unknown:
            raise SkipExample(f"inputs {sorted(unknown)} are not slots of {self.spec.kind}")
        draws = []
        for _ in range(self.draw_count(example)):
            images, word, text = [], None, None
            for slot in self.spec.slots:
                value = inputs.get(slot.name)
                if slot.kind == "text":
                    meta = manifest.get("meta", {})
                    if not meta.get("object"):
                        raise SkipExample("the manifest's meta names no object to phrase the instruction with")
                    word, text = sample_instruction(meta["object"], rng, meta.get("placement") or "")
                elif value is None:
                    images.append(None)
                elif isinstance(value, str):
                    images.append(files.image(value))
                elif isinstance(value, dict) and "patch_of" in value and "mask" in value:
                    images.append(self._patch(manifest, files, value, rng))
                else:
                    raise SkipExample(f"slot {slot.name!r}: unsupported input {value!r}")
            if not isinstance(example.get("target"), str):
                raise SkipExample("the example names no target image")
            draws.append(_Draw(images, files.image(example["target"]), word, text))
        return draws

    def _patch(self, manifest: dict, files: _SampleFiles, value: dict, rng: np.random.Generator) -> Image.Image:
        image, mask = files.image(value["patch_of"]), files.mask(value["mask"])
        if mask.size != image.size:
            mask = mask.resize(image.size, Image.NEAREST)
        box = manifest.get("meta", {}).get("box") or mask_box(mask)
        try:
            return cut_texture_patch(image, mask, patch_side(tuple(box), image.size, rng), rng)
        except ValueError as exc:  # an empty mask
            raise SkipExample(str(exc)) from None

    # ----- bookkeeping --------------------------------------------------------------------------------------
    def _position(self, image: Image.Image | None) -> int | None:
        if image is None:
            return None
        if id(image) not in self._slot_of:
            self._slot_of[id(image)] = len(self._images)
            self._images.append(image)
        return self._slot_of[id(image)]

    def add_sample(self, manifest: dict) -> None:
        files = _SampleFiles(manifest)
        for e, example in enumerate(manifest.get("examples", [])):
            rng = np.random.default_rng([self.seed, int(manifest["index"]), e])
            try:
                draws = self._draws(manifest, files, example, rng)
            except SkipExample as exc:
                self._skip(manifest["index"], e, str(exc))
                continue
            for d in draws:
                self._pending.append(self._row(d))
                if d.text is not None:
                    self.texts.append(d.text)
        if len(self._images) >= self.chunk_images:
            self.flush()

    def _row(self, draw: _Draw) -> PairRow:
        """The draw's images as positions in this chunk (each image once), its word in the text slot."""
        images = iter(draw.images)
        inputs = tuple(draw.word if slot.kind == "text" else self._position(next(images)) for slot in self.spec.slots)
        return PairRow(inputs, self._position(draw.target))

    def _skip(self, index: int, example: int, reason: str) -> None:
        self.skip_count += 1
        if len(self.skipped) < MAX_LISTED_SKIPS:
            self.skipped.append({"index": int(index), "example": example, "reason": reason})
        # On stderr through tqdm (so a running progress bar stays intact); also to the log for library users.
        tqdm.write(f"skipping sample {index} example {example}: {reason}", file=sys.stderr)
        logger.info("skipping sample %s example %s: %s", index, example, reason)

    def flush(self) -> None:
        """Encode this chunk's images through the cache and add its pending pairs."""
        if self._pending:
            self.out.add(self._pending, self.cache.encode(self._images, progress=False))
        self._images, self._slot_of, self._pending = [], {}, []


def _word_rows(text_encoder, batch_size: int = 64):
    """`encode_words` for the assembler: instruct's word rows, each distinct word encoded once."""

    def encode_words(words: list[str]) -> list[torch.Tensor]:
        unique_words = sorted(set(words))
        rows = {}
        for s in range(0, len(unique_words), batch_size):
            chunk = unique_words[s : s + batch_size]
            rows.update(zip(chunk, text_encoder.token_rows(chunk)))
        return [rows[w] for w in words]

    return encode_words


def _align_text(text_encoder, texts: list[str], dim: int, batch_size: int = 64) -> torch.Tensor | None:
    """Instruct's alignment embeddings (each distinct text encoded once); None outside a shared text-image space."""
    if int(text_encoder.dim) != dim:
        # The alignment term compares the operator's output with a text embedding: only possible in a shared space
        # (CLIP's). MiniLM (384-d) next to EfficientNet (1280-d) has none, so those pairs carry no align_text.
        logger.warning("text embeddings are %s-d, image embeddings %s-d: no align_text", text_encoder.dim, dim)
        return None
    unique_texts = sorted(set(texts))
    embeds = text_encoder.encode(unique_texts, batch_size=batch_size).float()
    index = {t: i for i, t in enumerate(unique_texts)}
    return embeds[torch.tensor([index[t] for t in texts], dtype=torch.long)]


@contextmanager
def _cache(cache_root: str | Path | None, image_encoder, batch_size: int) -> Iterator[Any]:
    if cache_root is not None:
        yield EmbeddingCache(cache_root, image_encoder, batch_size=batch_size)
        return
    with tempfile.TemporaryDirectory(prefix="pops-pairs-cache-") as tmp:  # nothing kept: every image is encoded
        yield EmbeddingCache(tmp, image_encoder, batch_size=batch_size)


def _encoder_id(encoder) -> str | None:
    return getattr(encoder, "encoder_id", None) if encoder is not None else None


def build_pairs(
    dataset_dir: str | Path,
    operator: str,
    *,
    image_encoder,
    text_encoder=None,
    cache_root: str | Path | None = None,
    patches_per_sample: int = 4,
    words_per_image: int = 4,
    seed: int = 0,
    progress: bool = True,
    batch_size: int = 64,
    chunk_images: int = 512,
) -> Pairs:
    """The training pairs of a generated dataset, every image embedded by `image_encoder` through the cache.

    `image_encoder`: an `Encoder` with an `encoder_id` (the cache namespace; use the encoder `pops embed` used to
    reuse its cache). `text_encoder`: a `TextEncoder`, required for instruct. `cache_root`: the embedding cache
    folder (None: a temporary one, so everything is encoded). `patches_per_sample`: texture patches per texturing
    example; `words_per_image`: word draws per instruct picture. `seed`: the patches and words. `batch_size`:
    images per encoder batch; `chunk_images`: images per cache call (bounds memory). `info` records the source
    dataset, the encoders, the settings, the skipped examples and the cache statistics of this run.
    """
    spec = get_spec(operator)
    dataset, manifests = _checked_dataset(
        dataset_dir, operator, spec, text_encoder, (patches_per_sample, words_per_image, batch_size, chunk_images)
    )
    with _cache(cache_root, image_encoder, batch_size) as cache:
        builder = _PairBuilder(
            spec,
            cache,
            patches_per_sample=patches_per_sample,
            words_per_image=words_per_image,
            seed=seed,
            chunk_images=chunk_images,
        )
        builder.allocate(manifests)
        for manifest in tqdm(manifests, desc=f"pairs [{operator}]", unit="sample", disable=not progress):
            builder.add_sample(manifest)
        builder.flush()
        stats = cache.stats
    out = builder.out
    if out.count == 0:
        raise ValueError(f"{dataset_dir}: no example could be read ({builder.skip_count} skipped)")
    align = _align_text(text_encoder, builder.texts, int(image_encoder.dim)) if spec.text_slots else None
    info = {
        "source": {k: dataset.get(k) for k in ("format", "operator", "seed", "recipe", "models")},
        "image_encoder": _encoder_id(image_encoder),
        "text_encoder": _encoder_id(text_encoder) if spec.text_slots else None,
        "patches_per_sample": patches_per_sample,
        "words_per_image": words_per_image,
        "seed": seed,
        **_run_counts(manifests, builder, stats),
    }
    if spec.text_slots:
        info["words"] = out.words[spec.text_slots[0]]  # the drawn word of each pair (the rows are its encoding)
    encode_words = _word_rows(text_encoder) if spec.text_slots else None
    return out.pairs(encode_words, align_text=align, info=info)


def _checked_dataset(dataset_dir, operator: str, spec: OperatorSpec, text_encoder, counts) -> tuple[dict, list[dict]]:
    """The dataset's description and its sample manifests, once the request is checked against them: the dataset is
    `operator`'s, the counts are at least 1, a text slot has a text encoder, and there are samples."""
    dataset = read_dataset_info(dataset_dir)
    if dataset.get("operator") != operator:
        raise ValueError(f"{dataset_dir} holds a {dataset.get('operator')!r} dataset, not {operator!r}")
    if min(counts) < 1:
        raise ValueError("patches_per_sample, words_per_image, batch_size and chunk_images must be at least 1")
    if spec.text_slots and text_encoder is None:
        raise ValueError(f"{operator} has a text slot: pass a text_encoder")
    manifests = list(iter_samples(dataset_dir))
    if not manifests:
        raise ValueError(f"{dataset_dir} holds no samples yet; run `pops generate` first")
    return dataset, manifests


def _run_counts(manifests: list[dict], builder: _PairBuilder, stats) -> dict:
    """What this run read, made, skipped and encoded (the last part of the pairs' `info`)."""
    return {
        "samples": len(manifests),
        "pairs": builder.out.count,
        "skipped_examples": builder.skip_count,
        "skipped": builder.skipped,
        "cache": {"hits": stats.hits, "misses": stats.misses, "encoded": stats.encoded},
    }
