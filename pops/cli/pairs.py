"""`pops pairs`: turn a generated dataset and its embedding cache into the training-pairs file `pops train` reads."""

from __future__ import annotations

from pathlib import Path

import typer

from pops.base import checks
from pops.base.files import check_output
from pops.base.reference import KANDINSKY_PRIOR
from pops.cli.app import OVERWRITE_HELP, app, checked, fail, run_or_fail


@app.command()
def pairs(
    dataset_dir: Path = typer.Argument(
        ..., help="A folder written by `pops generate` (its dataset.json names the operator)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The pairs file to write (.safetensors; written atomically)."),
    encoder: str = typer.Option(
        "efficientnet",
        help="efficientnet (the embedded world's EfficientNet-Lite0) or clip (CLIP ViT-bigG/14, the paper's space). "
        "Use the one `pops embed` used.",
    ),
    clip_model: str = typer.Option(
        KANDINSKY_PRIOR,
        help="CLIP source (hub id or local folder with image_encoder/, image_processor/, and for instruct "
        "text_encoder/, tokenizer/), for --encoder clip.",
    ),
    cache: Path | None = typer.Option(
        None,
        help="Embedding cache folder (the `pops embed --out` folder); images found there are not encoded again. "
        "Default: a temporary cache, so every image is encoded.",
    ),
    patches_per_sample: int = typer.Option(
        4, help="Texturing: texture patches cut (and embedded) per target render; one pair per patch."
    ),
    words_per_image: int = typer.Option(4, help="Instruct: words drawn per picture; one pair per word."),
    seed: int = typer.Option(
        0,
        help="Seed of the patch positions and sizes and of the drawn words (sample i's draws depend on seed and i "
        "only).",
    ),
    resolution: int | None = typer.Option(
        None, help="EfficientNet input side, a multiple of 32 (default: the encoder's); as given to `pops embed`."
    ),
    bf16: bool | None = typer.Option(
        None,
        "--bf16/--fp32",
        help="EfficientNet under bfloat16 autocast (default: where the CPU computes bf16 natively); as given to "
        "`pops embed`.",
    ),
    dtype: str | None = typer.Option(
        None,
        help="CLIP weights dtype: fp16, bf16 or fp32 (default: fp16 on a GPU, fp32 on a CPU); as given to `pops "
        "embed`.",
    ),
    device: str | None = typer.Option(None, help="CLIP device (default: a GPU when there is one)."),
    batch_size: int = typer.Option(64, help="Images per encoder batch."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Write an operator's training pairs (pops.embeddings.pairs.Pairs) from a generated dataset: every image embedded
    through the cache (run `pops embed` first to reuse its work), texture patches cut, instruct words drawn and
    encoded."""
    from pops.cli.embed import check_encoder_options

    check_encoder_options(encoder, resolution, batch_size, dtype, device)
    checked(checks.count, patches_per_sample, "--patches-per-sample")
    checked(checks.count, words_per_image, "--words-per-image")
    checked(checks.seed, seed, "--seed")
    if not dataset_dir.is_dir():
        fail(f"no such dataset folder: {dataset_dir}")
    run_or_fail(check_output, out, overwrite=overwrite, what="--out")
    if out.suffix != ".safetensors":
        fail(f"--out must end in .safetensors, got {out}")
    result = run_or_fail(
        _pairs,
        dataset_dir,
        out,
        encoder,
        clip_model,
        cache,
        patches_per_sample,
        words_per_image,
        seed,
        resolution,
        bf16,
        dtype,
        device,
        batch_size,
        progress,
    )
    info = result.info
    typer.echo(
        f"{dataset_dir} -> {out}: {info['pairs']} {result.kind} pairs from {info['samples']} samples, "
        f"{info['skipped_examples']} examples skipped; images: {info['cache']['encoded']} encoded, "
        f"{info['cache']['hits']} cache hits"
    )


def _pairs(
    dataset_dir,
    out,
    encoder,
    clip_model,
    cache,
    patches_per_sample,
    words_per_image,
    seed,
    resolution,
    bf16,
    dtype,
    device,
    batch_size,
    progress,
):
    from pops.base.registry import get_spec
    from pops.generate.pairs import build_pairs
    from pops.generate.storage import read_dataset_info

    operator = read_dataset_info(dataset_dir).get("operator")  # a clear error before any model is loaded
    spec = get_spec(operator)
    text_encoder = None
    if encoder == "efficientnet":
        from pops.encoders.efficientnet import EfficientNetEncoder

        image_encoder = (
            EfficientNetEncoder(bf16=bf16) if resolution is None else EfficientNetEncoder(resolution, bf16=bf16)
        )
        if spec.text_slots:
            from pops.encoders.minilm import MiniLMEncoder

            text_encoder = MiniLMEncoder()
    else:
        from pops.encoders.clip import CLIPImageEncoder, CLIPTextEncoder

        image_encoder = CLIPImageEncoder.from_pretrained(clip_model, dtype=dtype, device=device)
        if spec.text_slots:
            text_encoder = CLIPTextEncoder.from_pretrained(clip_model, dtype=dtype, device=device)
    pairs = build_pairs(
        dataset_dir,
        operator,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        cache_root=cache,
        patches_per_sample=patches_per_sample,
        words_per_image=words_per_image,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
    pairs.save(out)
    return pairs
