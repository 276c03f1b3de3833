"""`pops generate`: the paper's data-generation pipelines, sharded with `accelerate launch` and resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pops.base import checks
from pops.base.devices import check_dtype_name, resolve_device
from pops.base.files import check_output
from pops.cli.app import app, checked, fail, run_or_fail

Operator = Annotated[
    str, typer.Argument(help="Which operator's data to make: texturing, union, scene, instruct or composition.")
]
Out = Annotated[
    Path,
    typer.Option("--out", "-o", help="Output folder. An existing one is resumed: samples already there are skipped."),
]
NumSamples = Annotated[
    int, typer.Option("--num-samples", "-n", help="Make samples 0 .. N-1 (the paper used ~50k per operator).")
]
Seed = Annotated[
    int, typer.Option(help="Sample i depends only on (seed, i): same seed, same data, however it is sharded.")
]
ModelsFrom = Annotated[
    Path | None,
    typer.Option(
        "--models-from",
        help="Folder with local copies of the models, one sub-folder each: sdxl-turbo/, owlv2/, rmbg/, sd2-depth/, "
        "sdxl-inpainting/, human-parsing/ (a datasets save_to_disk folder). Default: the hub ids.",
    ),
]
ImageSize = Annotated[int, typer.Option(help="Side of the SDXL-Turbo (and inpainting) images.")]
ImageFormat = Annotated[
    str, typer.Option(help="File format of the RGB images: jpg (quality 95) or png. Masks are always png.")
]
TurboSteps = Annotated[int, typer.Option(help="SDXL-Turbo denoising steps (guidance is off, as SDXL-Turbo expects).")]
DepthSteps = Annotated[int, typer.Option(help="SD2-depth steps per texture re-render (texturing).")]
DepthGuidance = Annotated[float, typer.Option(help="SD2-depth classifier-free guidance (texturing).")]
InpaintSteps = Annotated[int, typer.Option(help="SDXL inpainting steps for the empty background (scene).")]
InpaintGuidance = Annotated[float, typer.Option(help="SDXL inpainting guidance (scene).")]
SegmenterSize = Annotated[int, typer.Option(help="Input side of the RMBG-1.4 background remover.")]
Dtype = Annotated[
    str | None,
    typer.Option(help="fp16, bf16 or fp32 for the diffusion pipelines (default: fp16 on a GPU, fp32 on a CPU)."),
]
Device = Annotated[str | None, typer.Option(help="Device for the models (default: this process's accelerate device).")]
Option = Annotated[
    list[str],
    typer.Option(
        "--option",
        help="A recipe setting KEY=VALUE (repeatable), e.g. --option max_iou=0.2; unknown keys list the valid ones.",
    ),
]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar per process.")]


@app.command()
def generate(
    operator: Operator,
    out: Out,
    num_samples: NumSamples,
    seed: Seed = 0,
    models_from: ModelsFrom = None,
    image_size: ImageSize = 512,
    image_format: ImageFormat = "jpg",
    turbo_steps: TurboSteps = 1,
    depth_steps: DepthSteps = 50,
    depth_guidance: DepthGuidance = 7.5,
    inpaint_steps: InpaintSteps = 20,
    inpaint_guidance: InpaintGuidance = 8.0,
    segmenter_size: SegmenterSize = 1024,
    dtype: Dtype = None,
    device: Device = None,
    option: Option = [],  # noqa: B006  (typer's empty list: no --option given; never mutated)
    progress: Progress = True,
) -> None:
    """Generate an operator's training data with real models (SDXL-Turbo, OWLv2, RMBG-1.4, SD2-depth, SDXL inpainting,
    ATR parsing). Scale out with `accelerate launch --multi_gpu --num_processes K -m pops generate ...`; kill and
    rerun to resume."""
    checked(checks.count, num_samples, "--num-samples")
    checked(checks.seed, seed, "--seed")
    settings = dict(
        image_size=image_size,
        turbo_steps=turbo_steps,
        depth_steps=depth_steps,
        depth_guidance=depth_guidance,
        inpaint_steps=inpaint_steps,
        inpaint_guidance=inpaint_guidance,
        segmenter_size=segmenter_size,
        dtype=dtype,
    )
    _check_model_settings(image_format, settings)
    if device is not None:
        run_or_fail(resolve_device, device)
    if models_from is not None and not models_from.is_dir():
        fail(f"no such folder for --models-from: {models_from}")
    recipe = _recipe_options(option)
    where = (models_from, device)
    summary = run_or_fail(_generate, operator, out, num_samples, seed, where, image_format, recipe, progress, settings)
    _print_summary(operator, out, summary)
    if summary.failed:
        fail(f"{summary.failed} sample(s) failed (see {out}/logs/); rerun the same command to retry them", code=1)


def _check_model_settings(image_format: str, settings: dict) -> None:
    """The models' settings (steps, guidance, sides, dtype) and the image format, one `error:` line each."""
    if image_format not in ("jpg", "png"):
        fail(f"--image-format must be jpg or png, got {image_format!r}")
    for flag, name in (
        ("--turbo-steps", "turbo_steps"),
        ("--depth-steps", "depth_steps"),
        ("--inpaint-steps", "inpaint_steps"),
    ):
        checked(checks.steps, settings[name], flag)
    for flag, name in (("--image-size", "image_size"), ("--segmenter-size", "segmenter_size")):
        checked(checks.image_side, settings[name], flag)
    checked(checks.guidance, settings["depth_guidance"], "--depth-guidance")
    checked(checks.guidance, settings["inpaint_guidance"], "--inpaint-guidance")
    run_or_fail(check_dtype_name, settings["dtype"])


def _recipe_options(items: list[str]) -> dict[str, str]:
    """--option KEY=VALUE settings as {KEY: VALUE}."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--option expects KEY=VALUE, got {item!r}")
        options[key.strip()] = value.strip()
    return options


def _print_summary(operator: str, out: Path, summary) -> None:
    # Heavy imports here, not at the top: `pops --help` loads no torch (accelerate's state).
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
    # Heavy imports here, not at the top: `pops --help` loads no torch.
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


def _generate(operator, out, num_samples, seed, where, image_format, options, progress, settings):
    """The recipe's models loaded (from --models-from, else the hub) on `where` = (models_from, device), then the
    samples made (or resumed)."""
    # Heavy imports here, not at the top: `pops --help` loads no torch (nor diffusers).
    from pops.generate.models import ModelSettings, load_models, model_sources
    from pops.generate.recipe import config_from_options
    from pops.generate.runner import generate, get_recipe

    models_from, device = where
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
