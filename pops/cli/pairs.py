"""`pops pairs`: turn a generated dataset and its embedding cache into the training-pairs file `pops train` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pops.base import checks
from pops.base.files import check_output
from pops.base.reference import KANDINSKY_PRIOR
from pops.base.registry import get_spec
from pops.cli.app import app, checked, fail, run_or_fail
from pops.cli.embed import check_encoder_options
from pops.cli.options import Overwrite

DatasetDir = Annotated[
    Path, typer.Argument(help="A folder written by `pops generate` (its dataset.json names the operator).")
]
Out = Annotated[Path, typer.Option("--out", "-o", help="The pairs file to write (.safetensors; written atomically).")]
Encoder = Annotated[
    str,
    typer.Option(
        help="efficientnet (the embedded world's EfficientNet-Lite0) or clip (CLIP ViT-bigG/14, the paper's space). "
        "Use the one `pops embed` used.",
    ),
]
ClipModel = Annotated[
    str,
    typer.Option(
        help="CLIP source (hub id or local folder with image_encoder/, image_processor/, and for instruct "
        "text_encoder/, tokenizer/), for --encoder clip.",
    ),
]
Cache = Annotated[
    Path | None,
    typer.Option(
        help="Embedding cache folder (the `pops embed --out` folder); images found there are not encoded again. "
        "Default: a temporary cache, so every image is encoded.",
    ),
]
PatchesPerSample = Annotated[
    int, typer.Option(help="Texturing: texture patches cut (and embedded) per target render; one pair per patch.")
]
WordsPerImage = Annotated[int, typer.Option(help="Instruct: words drawn per picture; one pair per word.")]
Seed = Annotated[
    int,
    typer.Option(
        help="Seed of the patch positions and sizes and of the drawn words (sample i's draws depend on seed and i "
        "only).",
    ),
]
Resolution = Annotated[
    int | None,
    typer.Option(help="EfficientNet input side, a multiple of 32 (default: the encoder's); as given to `pops embed`."),
]
Bf16 = Annotated[
    bool | None,
    typer.Option(
        "--bf16/--fp32",
        help="EfficientNet under bfloat16 autocast (default: where the CPU computes bf16 natively); as given to "
        "`pops embed`.",
    ),
]
Dtype = Annotated[
    str | None,
    typer.Option(
        help="CLIP weights dtype: fp16, bf16 or fp32 (default: fp16 on a GPU, fp32 on a CPU); as given to `pops "
        "embed`.",
    ),
]
Device = Annotated[str | None, typer.Option(help="CLIP device (default: a GPU when there is one).")]
BatchSize = Annotated[int, typer.Option(help="Images per encoder batch.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]


@app.command()
def pairs(
    dataset_dir: DatasetDir,
    out: Out,
    encoder: Encoder = "efficientnet",
    clip_model: ClipModel = KANDINSKY_PRIOR,
    cache: Cache = None,
    patches_per_sample: PatchesPerSample = 4,
    words_per_image: WordsPerImage = 4,
    seed: Seed = 0,
    resolution: Resolution = None,
    bf16: Bf16 = None,
    dtype: Dtype = None,
    device: Device = None,
    batch_size: BatchSize = 64,
    progress: Progress = True,
    overwrite: Overwrite = False,
) -> None:
    """Write an operator's training pairs (pops.embeddings.pairs.Pairs) from a generated dataset: every image embedded
    through the cache (run `pops embed` first to reuse its work), texture patches cut, instruct words drawn and
    encoded."""
    check_encoder_options(encoder, resolution, batch_size, dtype, device)
    checked(checks.count, patches_per_sample, "--patches-per-sample")
    checked(checks.count, words_per_image, "--words-per-image")
    checked(checks.seed, seed, "--seed")
    if not dataset_dir.is_dir():
        fail(f"no such dataset folder: {dataset_dir}")
    run_or_fail(check_output, out, overwrite=overwrite, what="--out")
    if out.suffix != ".safetensors":
        fail(f"--out must end in .safetensors, got {out}")
    encoding = dict(
        encoder=encoder, clip_model=clip_model, resolution=resolution, bf16=bf16, dtype=dtype, device=device
    )
    draws = dict(patches_per_sample=patches_per_sample, words_per_image=words_per_image, seed=seed)
    result = run_or_fail(_pairs, dataset_dir, out, encoding, draws, cache, batch_size, progress)
    info = result.info
    typer.echo(
        f"{dataset_dir} -> {out}: {info['pairs']} {result.kind} pairs from {info['samples']} samples, "
        f"{info['skipped_examples']} examples skipped; images: {info['cache']['encoded']} encoded, "
        f"{info['cache']['hits']} cache hits"
    )


def _pairs(dataset_dir, out, encoding: dict, draws: dict, cache, batch_size, progress):
    """The dataset's pairs, every image embedded through the cache, saved to `out`. `encoding`: the encoder options,
    `draws`: how patches and words are drawn."""
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    from pops.generate.pairs import build_pairs
    from pops.generate.storage import read_dataset_info

    operator = read_dataset_info(dataset_dir).get("operator")  # a clear error before any model is loaded
    image_encoder, text_encoder = _load_encoders(get_spec(operator).text_slots, **encoding)
    pairs = build_pairs(
        dataset_dir,
        operator,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        cache_root=cache,
        batch_size=batch_size,
        progress=progress,
        **draws,
    )
    pairs.save(out)
    return pairs


def _load_encoders(text_slots, encoder, clip_model, resolution, bf16, dtype, device) -> tuple:
    """(image encoder, text encoder or None: only for an operator with text slots) of --encoder."""
    # Heavy imports here, not at the top: `pops --help` loads no torch; each encoder only when chosen.
    if encoder == "efficientnet":
        from pops.encoders.efficientnet import EfficientNetEncoder

        image_encoder = (
            EfficientNetEncoder(bf16=bf16) if resolution is None else EfficientNetEncoder(resolution, bf16=bf16)
        )
        if not text_slots:
            return image_encoder, None
        from pops.encoders.minilm import MiniLMEncoder  # transformers: only when the operator takes words

        return image_encoder, MiniLMEncoder()
    from pops.encoders.clip import CLIPImageEncoder, CLIPTextEncoder

    image_encoder = CLIPImageEncoder.from_pretrained(clip_model, dtype=dtype, device=device)
    text_encoder = CLIPTextEncoder.from_pretrained(clip_model, dtype=dtype, device=device) if text_slots else None
    return image_encoder, text_encoder
