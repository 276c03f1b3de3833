"""`pops render`: turn an embedding file into pictures with the paper's real renderers (Kandinsky 2.2 or SDXL)."""

from __future__ import annotations

from pathlib import Path

import typer

from pops.base import checks
from pops.base.files import check_output
from pops.base.reference import (
    CONTROLNET_DEPTH,
    DEPTH_ESTIMATOR,
    FP16_FIX_VAE,
    IP_ADAPTER_REPO,
    IP_ADAPTER_WEIGHT,
    KANDINSKY_DECODER,
    KANDINSKY_PRIOR,
    SDXL_BASE,
)
from pops.cli import placement
from pops.cli.app import OVERWRITE_HELP, app, checked, fail, run_or_fail

RENDERERS = ("kandinsky", "ipadapter", "ipadapter-depth")


@app.command()
def render(
    embeddings: Path = typer.Argument(
        ..., help="Embedding file: (N, D) .safetensors written by `pops apply` / `pops embed`, or a .pt tensor."
    ),
    renderer: str = typer.Option(
        "kandinsky",
        "--render",
        "-r",
        help="kandinsky (Kandinsky 2.2 decoder), ipadapter (SDXL + IP-Adapter) or ipadapter-depth (… + depth "
        "ControlNet).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for the PNGs (created if missing): <file stem>_<index>.png."
    ),
    steps: int | None = typer.Option(None, help="Denoising steps (default: 50, as in the paper)."),
    guidance: float | None = typer.Option(
        None, help="Classifier-free guidance (default: 4 for kandinsky, 5 for SDXL)."
    ),
    size: int | None = typer.Option(
        None, help="Side of the square images in pixels (default: 512 kandinsky, 1024 SDXL)."
    ),
    seed: int = typer.Option(0, help="Image i is drawn with seed + i, whatever the batch it is rendered in."),
    batch_size: int = typer.Option(4, help="Embeddings rendered per pipeline call."),
    structure: Path | None = typer.Option(
        None, help="ipadapter-depth: the image (input A) whose depth map shapes every render."
    ),
    decoder: str = typer.Option(KANDINSKY_DECODER, help="kandinsky: decoder hub id or local folder."),
    prior: str = typer.Option(
        KANDINSKY_PRIOR, help="kandinsky: repo or folder whose image_encoder/ gives the zero-image negative."
    ),
    sdxl: str = typer.Option(SDXL_BASE, help="ipadapter*: SDXL base hub id or local folder."),
    ip_adapter: str = typer.Option(IP_ADAPTER_REPO, help="ipadapter*: IP-Adapter hub repo or local folder."),
    ip_adapter_weight: str = typer.Option(IP_ADAPTER_WEIGHT, help="ipadapter*: weights file inside --ip-adapter."),
    controlnet: str = typer.Option(CONTROLNET_DEPTH, help="ipadapter-depth: depth ControlNet hub id or local folder."),
    depth_model: str = typer.Option(
        DEPTH_ESTIMATOR, help="ipadapter-depth: DPT depth estimator hub id or local folder."
    ),
    vae: str = typer.Option(
        FP16_FIX_VAE, help="ipadapter-depth: SDXL VAE hub id or local folder; 'base' keeps the base model's own."
    ),
    device: str | None = placement.DEVICE,
    dtype: str | None = placement.DTYPE,
    cpu_offload: bool = placement.CPU_OFFLOAD,
    generator_device: str = placement.GENERATOR_DEVICE,
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Render every embedding of a file to a PNG with Kandinsky 2.2 or SDXL + IP-Adapter (the paper's renderers)."""
    if renderer not in RENDERERS:
        fail(f"--render must be one of {', '.join(RENDERERS)}, got {renderer!r}")
    from pops.base.devices import check_placement

    run_or_fail(check_placement, device, dtype, generator_device)
    checked(checks.count, batch_size, "--batch-size")
    checked(checks.steps, steps, "--steps")
    checked(checks.guidance, guidance, "--guidance")
    checked(checks.seed, seed, "--seed")
    if size is not None:
        checked(checks.image_side, size, "--size")
    run_or_fail(check_output, out, overwrite=overwrite, folder=True, what="--out")
    if renderer == "ipadapter-depth" and structure is None:
        fail("--render ipadapter-depth needs --structure IMAGE (input A, whose depth the renders follow)")
    options = {
        k: v for k, v in dict(num_inference_steps=steps, guidance_scale=guidance, size=size).items() if v is not None
    }
    sources = dict(
        decoder=decoder,
        prior=prior,
        sdxl=sdxl,
        ip_adapter=ip_adapter,
        ip_adapter_weight=ip_adapter_weight,
        controlnet=controlnet,
        depth_model=depth_model,
        vae=None if vae == "base" else vae,
    )
    place = (device, dtype, cpu_offload, generator_device)
    written = run_or_fail(_render, embeddings, renderer, out, options, sources, seed, batch_size, structure, place)
    typer.echo(f"wrote {len(written)} image(s) to {out}")


def build_renderer(renderer: str, sources: dict, options: dict, device, dtype, cpu_offload: bool):
    """Build one of the real renderers from hub ids / local folders (fails at once, in one line, when offline).
    A saved renderer folder loads with pops.renderers.load_renderer instead."""
    common = dict(device=device, dtype=dtype, cpu_offload=cpu_offload, **options)
    if renderer == "kandinsky":
        from pops.renderers.kandinsky import KandinskyRenderer

        return KandinskyRenderer.from_pretrained(sources["decoder"], prior=sources["prior"], **common)
    ip = dict(ip_adapter=sources["ip_adapter"], ip_adapter_weight=sources["ip_adapter_weight"])
    if renderer == "ipadapter":
        from pops.renderers.ipadapter import IPAdapterRenderer

        return IPAdapterRenderer.from_pretrained(sources["sdxl"], **ip, **common)
    from pops.renderers.ipadapter_depth import IPAdapterDepthRenderer

    return IPAdapterDepthRenderer.from_pretrained(
        sources["sdxl"],
        controlnet=sources["controlnet"],
        depth_estimator=sources["depth_model"],
        vae=sources["vae"],
        **ip,
        **common,
    )


def _render(embeddings, renderer, out, options, sources, seed, batch_size, structure, place):
    from tqdm.auto import tqdm

    from pops.base.files import atomic_write
    from pops.embeddings.files import load_embeddings
    from pops.renderers.pipelines import seeded_generators

    device, dtype, cpu_offload, generator_device = place
    embeds, _ = load_embeddings(embeddings)  # the inputs are read (and refused) before any model loads
    extra = {}
    if structure is not None and renderer == "ipadapter-depth":
        from pops.base.readers import read_image

        extra["structure"] = read_image(structure, "structure image")
    model = build_renderer(renderer, sources, options, device, dtype, cpu_offload)
    if embeds.shape[1] != model.dim:
        raise ValueError(
            f"{embeddings}: embeddings are {embeds.shape[1]}-d but the {renderer} renderer takes {model.dim}-d"
        )
    out.mkdir(parents=True, exist_ok=True)
    written = []
    starts = range(0, embeds.shape[0], batch_size)
    for start in tqdm(starts, desc=f"rendering ({renderer})", unit="batch", disable=len(starts) < 2):
        chunk = embeds[start : start + batch_size]
        generators = seeded_generators(seed + start, len(chunk), device=generator_device)
        images = model.render(chunk, generator=generators, **extra)
        for offset, image in enumerate(images):
            path = out / f"{embeddings.stem}_{start + offset:04d}.png"  # image i drawn with seed + i
            atomic_write(path, lambda tmp, image=image: image.save(tmp, format="PNG"))
            written.append(path)
    return written
