"""`pops embed`: encode every image of a generated dataset into the embedding cache (sharded, resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pops.base import checks
from pops.base.devices import check_dtype_name, resolve_device
from pops.base.files import check_output
from pops.base.reference import KANDINSKY_PRIOR
from pops.cli.app import app, checked, fail, run_or_fail

ENCODERS = ("efficientnet", "clip")

DatasetDir = Annotated[Path, typer.Argument(help="A folder written by `pops generate`.")]
Out = Annotated[
    Path,
    typer.Option("--out", "-o", help="Embedding cache folder (shared by datasets and runs; created if missing)."),
]
Encoder = Annotated[
    str,
    typer.Option(
        help="efficientnet (the embedded world's EfficientNet-Lite0) or clip (CLIP ViT-bigG/14, the paper's space).",
    ),
]
ClipModel = Annotated[
    str,
    typer.Option(
        help="CLIP source (hub id or local folder with image_encoder/ and image_processor/), for --encoder clip.",
    ),
]
Resolution = Annotated[
    int | None, typer.Option(help="EfficientNet input side, a multiple of 32 (default: the encoder's).")
]
Bf16 = Annotated[
    bool | None,
    typer.Option(
        "--bf16/--fp32",
        help="EfficientNet under bfloat16 autocast (default: where the CPU computes bf16 natively).",
    ),
]
Dtype = Annotated[
    str | None, typer.Option(help="CLIP weights dtype: fp16, bf16 or fp32 (default: fp16 on a GPU, fp32 on a CPU).")
]
Device = Annotated[str | None, typer.Option(help="CLIP device (default: this process's accelerate device).")]
BatchSize = Annotated[int, typer.Option(help="Images per encoder batch.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar per process.")]


@app.command()
def embed(
    dataset_dir: DatasetDir,
    out: Out,
    encoder: Encoder = "efficientnet",
    clip_model: ClipModel = KANDINSKY_PRIOR,
    resolution: Resolution = None,
    bf16: Bf16 = None,
    dtype: Dtype = None,
    device: Device = None,
    batch_size: BatchSize = 64,
    progress: Progress = True,
) -> None:
    """Encode every image of a generated dataset once; later reads of the same pixels are cache hits.
    Scale out with `accelerate launch --multi_gpu --num_processes K -m pops embed ...`; rerun to finish an
    interrupted run."""
    check_encoder_options(encoder, resolution, batch_size, dtype, device)
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file; the embedding cache is a folder")
    if out.resolve() == dataset_dir.resolve():
        fail(f"--out {out} is the dataset folder itself; the embedding cache goes in a folder of its own")
    run_or_fail(check_output, out, overwrite=True, folder=True, what="--out")  # a cache is added to, not replaced
    if not dataset_dir.is_dir():
        fail(f"no such dataset folder: {dataset_dir}")
    summary = run_or_fail(
        _embed, dataset_dir, out, encoder, clip_model, resolution, bf16, dtype, device, batch_size, progress
    )
    # Heavy imports here, not at the top: `pops --help` loads no torch (accelerate's state).
    from pops.generate.sharding import current_shard

    if current_shard([]).is_main:
        typer.echo(f"{dataset_dir} -> {out}: {summary.line()}")


# The largest EfficientNet input side (the world draws at most 1024 px pictures; larger sides only cost memory).
MAX_RESOLUTION = 1024


def check_encoder_options(encoder: str, resolution: int | None, batch_size: int, dtype, device) -> None:
    """The encoder options `pops embed` and `pops pairs` share, checked before any model loads (one line each)."""
    if encoder not in ENCODERS:
        fail(f"--encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
    checked(checks.count, batch_size, "--batch-size")
    if resolution is not None and (resolution < 32 or resolution > MAX_RESOLUTION or resolution % 32):
        fail(f"--resolution must be a multiple of 32 from 32 to {MAX_RESOLUTION}, got {resolution}")
    side = resolution or 224
    what = f"encoding batches of {batch_size} pictures at {side} px"
    run_or_fail(checks.memory, checks.image_batch_bytes(batch_size, side), what, "give a smaller --batch-size")
    run_or_fail(check_dtype_name, dtype)
    if device is not None:
        run_or_fail(resolve_device, device)


def _embed(dataset_dir, out, encoder, clip_model, resolution, bf16, dtype, device, batch_size, progress):
    # Heavy imports here, not at the top: `pops --help` loads no torch; each encoder only when chosen.
    from pops.embeddings.cache import EmbeddingCache
    from pops.generate.embedding import embed_dataset
    from pops.generate.storage import read_dataset_info

    read_dataset_info(dataset_dir)  # a clear error before any model is loaded
    if encoder == "efficientnet":
        from pops.encoders.efficientnet import EfficientNetEncoder

        enc = EfficientNetEncoder(bf16=bf16) if resolution is None else EfficientNetEncoder(resolution, bf16=bf16)
        encoder_id = enc.encoder_id
    else:
        from pops.encoders.clip import CLIPImageEncoder
        from pops.generate.sharding import state

        enc = CLIPImageEncoder.from_pretrained(clip_model, dtype=dtype, device=device or state().device)
        # Named by model and weights dtype, so caches of different CLIPs (or precisions) never mix.
        encoder_id = (
            getattr(enc, "encoder_id", None)
            or f"clip-image/{Path(clip_model).name}/{str(enc.dtype).removeprefix('torch.')}"
        )
    cache = EmbeddingCache(out, enc, encoder_id, batch_size=batch_size)
    return embed_dataset(dataset_dir, cache, progress=progress)
