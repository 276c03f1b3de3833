"""`pops render`: turn an embedding file into pictures with the paper's real renderers (Kandinsky 2.2 or SDXL)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from tqdm.auto import tqdm

from pops.base import checks
from pops.base.devices import check_placement
from pops.base.files import atomic_write, check_output
from pops.base.readers import read_image
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
from pops.cli.app import app, checked, fail, run_or_fail
from pops.cli.options import Overwrite
from pops.cli.placement import CpuOffload, Device, Dtype, GeneratorDevice

RENDERERS = ("kandinsky", "ipadapter", "ipadapter-depth")

Embeddings = Annotated[
    Path,
    typer.Argument(help="Embedding file: (N, D) .safetensors written by `pops apply` / `pops embed`, or a .pt tensor."),
]
Renderer = Annotated[
    str,
    typer.Option(
        "--render",
        "-r",
        help="kandinsky (Kandinsky 2.2 decoder), ipadapter (SDXL + IP-Adapter) or ipadapter-depth (… + depth "
        "ControlNet).",
    ),
]
Out = Annotated[
    Path, typer.Option("--out", "-o", help="Folder for the PNGs (created if missing): <file stem>_<index>.png.")
]
Steps = Annotated[int | None, typer.Option(help="Denoising steps (default: 50, as in the paper).")]
Guidance = Annotated[
    float | None, typer.Option(help="Classifier-free guidance (default: 4 for kandinsky, 5 for SDXL).")
]
Size = Annotated[
    int | None, typer.Option(help="Side of the square images in pixels (default: 512 kandinsky, 1024 SDXL).")
]
Seed = Annotated[int, typer.Option(help="Image i is drawn with seed + i, whatever the batch it is rendered in.")]
BatchSize = Annotated[int, typer.Option(help="Embeddings rendered per pipeline call.")]
Structure = Annotated[
    Path | None, typer.Option(help="ipadapter-depth: the image (input A) whose depth map shapes every render.")
]
# Where each model of the renderers comes from: a hub id or a local folder.
Decoder = Annotated[str, typer.Option(help="kandinsky: decoder hub id or local folder.")]
Prior = Annotated[
    str, typer.Option(help="kandinsky: repo or folder whose image_encoder/ gives the zero-image negative.")
]
Sdxl = Annotated[str, typer.Option(help="ipadapter*: SDXL base hub id or local folder.")]
IpAdapter = Annotated[str, typer.Option(help="ipadapter*: IP-Adapter hub repo or local folder.")]
IpAdapterWeight = Annotated[str, typer.Option(help="ipadapter*: weights file inside --ip-adapter.")]
Controlnet = Annotated[str, typer.Option(help="ipadapter-depth: depth ControlNet hub id or local folder.")]
DepthModel = Annotated[str, typer.Option(help="ipadapter-depth: DPT depth estimator hub id or local folder.")]
Vae = Annotated[
    str, typer.Option(help="ipadapter-depth: SDXL VAE hub id or local folder; 'base' keeps the base model's own.")
]


@app.command()
def render(
    embeddings: Embeddings,
    renderer: Renderer = "kandinsky",
    out: Out = ...,
    steps: Steps = None,
    guidance: Guidance = None,
    size: Size = None,
    seed: Seed = 0,
    batch_size: BatchSize = 4,
    structure: Structure = None,
    decoder: Decoder = KANDINSKY_DECODER,
    prior: Prior = KANDINSKY_PRIOR,
    sdxl: Sdxl = SDXL_BASE,
    ip_adapter: IpAdapter = IP_ADAPTER_REPO,
    ip_adapter_weight: IpAdapterWeight = IP_ADAPTER_WEIGHT,
    controlnet: Controlnet = CONTROLNET_DEPTH,
    depth_model: DepthModel = DEPTH_ESTIMATOR,
    vae: Vae = FP16_FIX_VAE,
    device: Device = None,
    dtype: Dtype = None,
    cpu_offload: CpuOffload = False,
    generator_device: GeneratorDevice = "cpu",
    overwrite: Overwrite = False,
) -> None:
    """Render every embedding of a file to a PNG with Kandinsky 2.2 or SDXL + IP-Adapter (the paper's renderers)."""
    if renderer not in RENDERERS:
        fail(f"--render must be one of {', '.join(RENDERERS)}, got {renderer!r}")
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
    # Heavy imports here, not at the top: `pops --help` loads no torch (nor diffusers); each only for its renderer.
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
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    from pops.embeddings.io import load_embeddings
    from pops.renderers.pipelines import seeded_generators

    device, dtype, cpu_offload, generator_device = place
    embeds, _ = load_embeddings(embeddings)  # the inputs are read (and refused) before any model loads
    extra = {}
    if structure is not None and renderer == "ipadapter-depth":
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
