"""`pops generate`: the paper's data-generation pipelines, sharded with `accelerate launch` and resumable."""

from __future__ import annotations

from pathlib import Path

import typer

from pops.base import checks
from pops.cli.app import app, checked, fail, run_or_fail


@app.command()
def generate(
    operator: str = typer.Argument(
        ..., help="Which operator's data to make: texturing, union, scene, instruct or composition."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder. An existing one is resumed: samples already there are skipped."
    ),
    num_samples: int = typer.Option(
        ..., "--num-samples", "-n", help="Make samples 0 .. N-1 (the paper used ~50k per operator)."
    ),
    seed: int = typer.Option(
        0, help="Sample i depends only on (seed, i): same seed, same data, however it is sharded."
    ),
    models_from: Path | None = typer.Option(
        None,
        "--models-from",
        help="Folder with local copies of the models, one sub-folder each: sdxl-turbo/, owlv2/, rmbg/, sd2-depth/, "
        "sdxl-inpainting/, human-parsing/ (a datasets save_to_disk folder). Default: the hub ids.",
    ),
    image_size: int = typer.Option(512, help="Side of the SDXL-Turbo (and inpainting) images."),
    image_format: str = typer.Option(
        "jpg", help="File format of the RGB images: jpg (quality 95) or png. Masks are always png."
    ),
    turbo_steps: int = typer.Option(1, help="SDXL-Turbo denoising steps (guidance is off, as SDXL-Turbo expects)."),
    depth_steps: int = typer.Option(50, help="SD2-depth steps per texture re-render (texturing)."),
    depth_guidance: float = typer.Option(7.5, help="SD2-depth classifier-free guidance (texturing)."),
    inpaint_steps: int = typer.Option(20, help="SDXL inpainting steps for the empty background (scene)."),
    inpaint_guidance: float = typer.Option(8.0, help="SDXL inpainting guidance (scene)."),
    segmenter_size: int = typer.Option(1024, help="Input side of the RMBG-1.4 background remover."),
    dtype: str | None = typer.Option(
        None, help="fp16, bf16 or fp32 for the diffusion pipelines (default: fp16 on a GPU, fp32 on a CPU)."
    ),
    device: str | None = typer.Option(None, help="Device for the models (default: this process's accelerate device)."),
    option: list[str] = typer.Option(
        [],
        "--option",
        help="A recipe setting KEY=VALUE (repeatable), e.g. --option max_iou=0.2; unknown keys list the valid ones.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar per process."),
) -> None:
    """Generate an operator's training data with real models (SDXL-Turbo, OWLv2, RMBG-1.4, SD2-depth, SDXL inpainting,
    ATR parsing). Scale out with `accelerate launch --multi_gpu --num_processes K -m pops generate ...`; kill and
    rerun to resume."""
    checked(checks.count, num_samples, "--num-samples")
    checked(checks.seed, seed, "--seed")
    if image_format not in ("jpg", "png"):
        fail(f"--image-format must be jpg or png, got {image_format!r}")
    for name, value in (
        ("--turbo-steps", turbo_steps),
        ("--depth-steps", depth_steps),
        ("--inpaint-steps", inpaint_steps),
    ):
        checked(checks.steps, value, name)
    for name, value in (("--image-size", image_size), ("--segmenter-size", segmenter_size)):
        checked(checks.image_side, value, name)
    checked(checks.guidance, depth_guidance, "--depth-guidance")
    checked(checks.guidance, inpaint_guidance, "--inpaint-guidance")
    from pops.base.devices import check_dtype_name, resolve_device

    run_or_fail(check_dtype_name, dtype)
    if device is not None:
        run_or_fail(resolve_device, device)
    if models_from is not None and not models_from.is_dir():
        fail(f"no such folder for --models-from: {models_from}")
    pairs = {}
    for item in option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--option expects KEY=VALUE, got {item!r}")
        pairs[key.strip()] = value.strip()
    summary = run_or_fail(
        _generate,
        operator,
        out,
        num_samples,
        seed,
        models_from,
        image_format,
        pairs,
        progress,
        device,
        dict(
            image_size=image_size,
            turbo_steps=turbo_steps,
            depth_steps=depth_steps,
            depth_guidance=depth_guidance,
            inpaint_steps=inpaint_steps,
            inpaint_guidance=inpaint_guidance,
            segmenter_size=segmenter_size,
            dtype=dtype,
        ),
    )
    _print_summary(operator, out, summary)
    if summary.failed:
        fail(f"{summary.failed} sample(s) failed (see {out}/logs/); rerun the same command to retry them", code=1)


def _print_summary(operator: str, out: Path, summary) -> None:
    from pops.generate.sharding import current_shard

    if current_shard([]).is_main:
        typer.echo(f"{operator} -> {out}: {summary.line()}")
        for r in summary.ranks if len(summary.ranks) > 1 else []:
            typer.echo(
                f"  rank {r['rank']}: {r['indices']} indices, made {r['made']}, rejected {r['rejected']}, "
                f"skipped {r['skipped']}, failed {r['failed']}"
            )


def _check_resumable(out: Path, operator: str, seed: int) -> None:
    """An existing --out is resumed only when it is a dataset of the same operator and seed (the rest of its identity
    is checked when generation starts)."""
    from pops.base.files import check_output
    from pops.generate.storage import DATASET_FILE, read_dataset_info

    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is not a folder")
    check_output(out, overwrite=True, folder=True, what="--out")
    if (out / DATASET_FILE).exists():
        existing = read_dataset_info(out)
        for key, value in (("operator", operator), ("seed", seed)):
            if existing.get(key) != value:
                raise ValueError(
                    f"{out} holds a dataset generated with a different {key} ({existing.get(key)!r} vs {value!r}); "
                    "use another --out folder"
                )


def _generate(operator, out, num_samples, seed, models_from, image_format, options, progress, device, settings):
    from pops.generate.models import ModelSettings, load_models, model_sources
    from pops.generate.recipe import config_from_options
    from pops.generate.runner import generate, get_recipe

    recipe = get_recipe(operator)
    config = config_from_options(recipe.Config, options)
    _check_resumable(out, operator, seed)  # before any model loads
    settings = ModelSettings(**settings)
    sources = model_sources(recipe.REQUIRES, models_from)
    models = load_models(recipe.REQUIRES, models_from=models_from, settings=settings, device=device)
    # Where the models came from is recorded for the reader, not checked on resume (paths differ between machines).
    info = {
        "models": {role: Path(s).name if models_from else s for role, s in sources.items()},
        "model_settings": settings.as_dict(),
    }
    return generate(
        operator,
        out,
        num_samples=num_samples,
        seed=seed,
        models=models,
        config=config,
        image_format=image_format,
        progress=progress,
        info=info,
    )
