"""`pops models`: make models folders of the paper's real models — import released operators, write renderer
folders, or the whole folder at once (pops.models.released, pops.renderers.settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pops.base import checks
from pops.base.devices import check_dtype_name
from pops.base.files import check_output
from pops.base.reference import KANDINSKY_PRIOR, RELEASED_KINDS, RELEASED_OPERATORS
from pops.cli.app import app, checked, fail, run_or_fail
from pops.cli.options import Overwrite

models_app = typer.Typer(
    help=(
        "Make models folders of the paper's real models: import released operators, build training-free (subspace) "
        "operators, write renderer folders."
    ),
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")

REAL_RENDERERS = ("kandinsky", "ipadapter", "ipadapter-depth")
KINDS = ", ".join(RELEASED_KINDS)
SET_HELP = (
    "A renderer setting KEY=VALUE (repeatable), e.g. base=my/sdxl-finetune (any SDXL checkpoint in diffusers layout), "
    "decoder=DIR, num_inference_steps=30, dtype=fp16; see docs/REAL_MODELS.md."
)
Settings = Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)]


def parse_settings(items: list[str] | None) -> dict:
    """["size=768", "vae=null"] → {"size": 768, "vae": None} (values read as YAML scalars; checked by the renderer's
    settings later)."""
    import yaml  # here, not at the top: only `--set` reads YAML, and `pops --help` stays 15 ms faster

    settings = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        settings[key.strip()] = parsed if isinstance(parsed, (str, int, float, bool, type(None))) else value
    return settings


def _check_dtype(dtype: str | None) -> None:
    run_or_fail(check_dtype_name, dtype)


@models_app.command(name="import")
def import_(
    checkpoint: Annotated[
        str,
        typer.Argument(
            help="A released learned_prior.pth: a local file, owner/repo:path/in/repo, or an operator's name "
            f"({KINDS}) for its file in {RELEASED_OPERATORS}.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The operator folder to write (new or empty).")],
    kind: Annotated[str | None, typer.Option(help="Operator kind (default: read from the checkpoint's path).")] = None,
    base: Annotated[
        str, typer.Option(help="Kandinsky 2.2 prior the weights load on: hub id or local folder.")
    ] = KANDINSKY_PRIOR,
    dtype: Annotated[
        str | None,
        typer.Option(
            help="Store the weights as fp16 or bf16 (half the size; they load back as fp32). Default: fp32, exact."
        ),
    ] = None,
) -> None:
    """Import a released pOps operator into an operator folder (safetensors, CLIP encoder config, model card)."""
    _check_dtype(dtype)
    run_or_fail(check_output, out, overwrite=True, folder=True, what="--out")  # new or empty: atomic_folder says
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    from pops.models.released import import_operator, released_checkpoint

    if checkpoint in RELEASED_KINDS and not Path(checkpoint).exists():
        kind, checkpoint = kind or checkpoint, released_checkpoint(checkpoint)
    op = run_or_fail(import_operator, checkpoint, out, kind=kind, base=base, dtype=dtype)
    typer.echo(f"wrote the {op.spec.kind} operator ({op.source['weights_dtype']}) to {out}")


@models_app.command(name="real")
def real(
    out: Annotated[Path, typer.Argument(help="The models folder to write (new or empty).")],
    base: Annotated[str, typer.Option(help="Kandinsky 2.2 prior: hub id or local folder.")] = KANDINSKY_PRIOR,
    checkpoints: Annotated[
        str,
        typer.Option(
            help="Where the released operators are: the hub repo, or a local copy "
            "(DIR/models/<kind>/learned_prior.pth).",
        ),
    ] = RELEASED_OPERATORS,
    operators: Annotated[
        list[str] | None,
        typer.Option("--operator", help=f"Import only these (repeatable); default: all four ({KINDS})."),
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="Store the operators' weights as fp16 or bf16 (default fp32).")
    ] = None,
    render: Annotated[
        str, typer.Option(help=f"The renderer folder to write: {', '.join(REAL_RENDERERS)}.")
    ] = "kandinsky",
    settings: Settings = None,
) -> None:
    """Write a complete real models folder: the released operators on the Kandinsky 2.2 prior (with its CLIP
    ViT-bigG encoders) and a renderer folder, ready for `pops apply --models`, `pops serve` and `pops eval`."""
    _check_dtype(dtype)
    run_or_fail(check_output, out, overwrite=True, folder=True, what="OUT")  # new or empty: atomic_folder says
    if render not in REAL_RENDERERS:
        fail(f"--render must be one of {', '.join(REAL_RENDERERS)}, got {render!r}")
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    from pops.models.released import write_real_models

    values = run_or_fail(parse_settings, settings)
    kinds = list(operators or RELEASED_KINDS)
    run_or_fail(
        write_real_models,
        out,
        base=base,
        checkpoints=checkpoints,
        kinds=kinds,
        dtype=dtype,
        renderer=render,
        renderer_settings=values,
        log=lambda line: typer.echo(line, err=True),
    )
    typer.echo(f"wrote {len(kinds)} operator(s) and a {render} renderer to {out}")


@models_app.command(name="subspace")
def subspace(
    out: Annotated[Path, typer.Argument(help="The folder to write (new), a models folder of its own.")],
    base: Annotated[
        str, typer.Option(help="Kandinsky 2.2 prior: hub id or local folder (its CLIP ViT-bigG encoders).")
    ] = KANDINSKY_PRIOR,
    operators: Annotated[
        list[str] | None,
        typer.Option("--operator", help=f"Only these operators (repeatable); default: {KINDS}."),
    ] = None,
    rank: Annotated[int, typer.Option(help="Dimensions of each concept's subspace.")] = 16,
    captions: Annotated[int, typer.Option(help="Captions embedded per concept.")] = 2000,
    overwrite: Overwrite = False,
) -> None:
    """Write training-free operators (IP-Composer's concept subspaces from CLIP ViT-bigG text): the peer a user would
    try before training one. The folder runs as a models folder: `pops apply EQUATION --models OUT`."""
    checked(checks.count, rank, "--rank")
    checked(checks.count, captions, "--captions")
    run_or_fail(check_output, out, overwrite=overwrite, folder=True, what="OUT")
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    from pops.models.training_free import TEMPLATES, write_real_subspace

    kinds = list(dict.fromkeys(operators or RELEASED_KINDS))
    unknown = [k for k in kinds if k not in TEMPLATES]
    if unknown:
        fail(f"no training-free operator for {', '.join(unknown)}; choose among {', '.join(TEMPLATES)}")
    run_or_fail(write_real_subspace, out, base=base, kinds=kinds, rank=rank, per_concept=captions)
    typer.echo(f"wrote {len(kinds)} training-free operator(s) to {out}")


@models_app.command(name="renderer")
def renderer(
    folder: Annotated[Path, typer.Argument(help="The renderer folder to write, e.g. MODELS/renderers/ipadapter.")],
    type_name: Annotated[
        str, typer.Option("--type", help=f"Renderer type: {', '.join(REAL_RENDERERS)}.")
    ] = "kandinsky",
    settings: Settings = None,
    overwrite: Overwrite = False,
) -> None:
    """Write a renderer folder of the real stack (its renderer.json; the reference's settings where not --set)."""
    if type_name not in REAL_RENDERERS:
        fail(f"--type must be one of {', '.join(REAL_RENDERERS)}, got {type_name!r}")
    # Heavy imports here, not at the top: `pops --help` loads no torch (nor diffusers).
    from pops.renderers import RENDERER_CONFIG_NAME
    from pops.renderers.settings import write_renderer_folder

    run_or_fail(check_output, folder, overwrite=True, folder=True, what="FOLDER")
    run_or_fail(check_output, folder / RENDERER_CONFIG_NAME, overwrite=overwrite, what="renderer settings")

    values = run_or_fail(parse_settings, settings)
    path = run_or_fail(write_renderer_folder, folder, type_name, **values)
    typer.echo(f"wrote {path}")
