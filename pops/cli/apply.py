"""`pops apply`: run one operator (or an equation of operators) on files and write the output embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pops.base import checks
from pops.base.devices import check_placement, make_generator, place
from pops.base.files import check_output
from pops.base.readers import read_image
from pops.base.reference import KANDINSKY_PRIOR, RELEASED_OPERATORS
from pops.base.registry import REGISTRY
from pops.cli.app import app, checked, fail, run_or_fail, sampling_options
from pops.cli.options import Overwrite
from pops.cli.placement import CpuOffload, Device, Dtype

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DROP = ("-", "none", "_")

Inputs = Annotated[
    list[str] | None,
    typer.Argument(
        help="One input per slot of the operator, in slot order: an embedding file (.safetensors/.pt, e.g. the "
        "output of an earlier `pops apply`), an image (when the operator carries an image encoder), a word for a text "
        "slot, or '-'/'none' to drop the slot. With --models: a single equation such as 'scene(texturing(a.png, "
        "b.png), c.png)'. Or an operator's name then its inputs (texturing object.jpg texture.jpg): run and render "
        "it like an equation, with the released operators unless --models DIR is given.",
    ),
]
Model = Annotated[
    Path | None,
    typer.Option(
        "--model",
        "-m",
        help="Operator folder written by save_pretrained (or `pops demo`); a joint folder with --kind.",
    ),
]
Models = Annotated[
    Path | None,
    typer.Option(
        "--models",
        help="Models folder (operators/<kind>/, renderers), for equations and for OPERATOR INPUT…; "
        f"{RELEASED_OPERATORS} = the paper's released operators from the hub (the default for OPERATOR INPUT…).",
    ),
]
Base = Annotated[
    str | None, typer.Option(help="Kandinsky 2.2 prior (hub id or local folder) to load a released checkpoint on.")
]
Checkpoint = Annotated[
    str | None,
    typer.Option(
        help="Released pOps weights: a local .pth or owner/repo:path (e.g. "
        "pOpsPaper/operators:models/texturing/learned_prior.pth).",
    ),
]
Kind = Annotated[
    str | None,
    typer.Option(
        help="Which operator of a joint --model folder (one prior for several operators) to run; or the kind of a "
        "released --checkpoint whose path does not name it.",
    ),
]
Seed = Annotated[int, typer.Option(help="Seed of the torch.Generator that draws all sampling noise (0 to 2**64 - 1).")]
GuidanceScale = Annotated[
    float | None,
    typer.Option(
        "--guidance-scale",
        "-g",
        help="Classifier-free guidance scale, 1 to 100; 1 = no guidance (default: the operator's own).",
    ),
]
Steps = Annotated[
    int | None,
    typer.Option(
        help="Number of sampling steps, 1 to 1000 (default: the operator's own — 25, or 1 for a distilled student)."
    ),
]
NumSamples = Annotated[int, typer.Option("--num-samples", "-n", help="Samples per input row.")]
Layout = Annotated[str, typer.Option(help="Condition layout: compact (fast) or padded (the reference's).")]
Sampler = Annotated[
    str | None,
    typer.Option(
        help="unclip (the reference's ancestral loop), ddim (deterministic), ddim-linspace (ddim from t 999 to 0, "
        "2+ steps) or dpmpp (DPM-Solver++); few-step samplers take --steps 1-8 (default: the operator's own, unclip).",
    ),
]
Draws = Annotated[
    int | None,
    typer.Option(
        help="Samples averaged into each output (an estimate of the posterior mean; default: the operator's own, "
        "1 unless its folder says).",
    ),
]
Out = Annotated[
    Path,
    typer.Option("--out", "-o", help="Output embeddings (.safetensors), or a folder for equations."),
]
Render = Annotated[
    str,
    typer.Option(
        help="Equations: render with the models folder's renderer (auto, retrieval, decoder, kandinsky, ipadapter, "
        "ipadapter-depth) or none.",
    ),
]
StepSeed = Annotated[
    list[str] | None, typer.Option("--step-seed", help="Equations: LABEL=N seeds one step (repeatable).")
]
Replay = Annotated[
    Path | None,
    typer.Option(help="Equations: re-run the record.json of an earlier run (same equation, seeds, settings)."),
]
# Not placement.GeneratorDevice: unset by default, so that a replay keeps its record's.
GeneratorDevice = Annotated[
    str | None,
    typer.Option(
        "--generator-device",
        help="Where the sampling noise is drawn: cpu (default; the same numbers on every machine) or cuda (the "
        "reference's generator: on a GPU, the same seed gives the reference's samples). A replay keeps its record's.",
    ),
]


@app.command()
def apply(
    inputs: Inputs = None,
    model: Model = None,
    models: Models = None,
    base: Base = None,
    checkpoint: Checkpoint = None,
    kind: Kind = None,
    seed: Seed = 0,
    guidance_scale: GuidanceScale = None,
    steps: Steps = None,
    num_samples: NumSamples = 1,
    layout: Layout = "compact",
    sampler: Sampler = None,
    draws: Draws = None,
    out: Out = Path("pops_output.safetensors"),
    render: Render = "auto",
    step_seed: StepSeed = None,
    replay: Replay = None,
    device: Device = None,
    dtype: Dtype = None,
    cpu_offload: CpuOffload = False,
    generator_device: GeneratorDevice = None,
    overwrite: Overwrite = False,
) -> None:
    """Apply an operator to its inputs and save the sampled embeddings (which `pops apply` accepts back as inputs).

    With --models (or --replay), evaluate an equation of operators instead (see docs/EQUATIONS.md). From pictures to
    pictures in one command: `pops apply texturing object.jpg texture.jpg -n 4 -o out/` runs the paper's released
    operator (from the hub, on the Kandinsky 2.2 prior, rendered by Kandinsky 2.2), or the one in --models DIR."""
    if inputs and all(v is None for v in (model, base, checkpoint, replay)) and _names_operator(inputs[0]):
        inputs, models = _operator_as_equation(inputs), models or Path(RELEASED_OPERATORS)
    run_or_fail(check_placement, device, dtype, generator_device)
    checked(checks.seed, seed, "--seed")
    sampling = sampling_options(
        guidance_scale=guidance_scale, num_inference_steps=steps, sampler=sampler, draws=draws, layout=layout
    )
    checked(checks.count, num_samples, "--num-samples")
    if models is not None or replay is not None:
        _check_equation_options(inputs, model, base, replay)
        run = dict(seed=seed, sampling=sampling, num_samples=num_samples, render=render, step_seeds=step_seed)
        where = (device, dtype, cpu_offload, generator_device)
        _run_equation(inputs, models, out, replay, where, overwrite, **run)
        return
    run_or_fail(check_output, out, overwrite=overwrite, what="--out")
    _check_operator_options(model, base, checkpoint, out)
    where = (device, dtype, generator_device or "cpu")
    run_or_fail(_apply, inputs or [], (model, base, checkpoint, kind), seed, num_samples, out, sampling, where)


def _names_operator(text: str) -> bool:
    """Whether a first input is an operator's name (texturing, texture, …) rather than a file."""
    names = set(REGISTRY) | {alias for spec in REGISTRY.values() for alias in spec.aliases}
    return text in names and not Path(text).exists()


def _operator_as_equation(inputs: list[str]) -> list[str]:
    """`texturing a.jpg b.jpg` as the one equation `texturing(a.jpg, b.jpg)`."""
    # Heavy imports here, not at the top: `pops --help` loads no torch (pops.equation.cli imports the runner).
    from pops.equation.cli import call_equation

    return [call_equation(inputs[0], inputs[1:])]


def _check_equation_options(inputs, model, base, replay) -> None:
    """The options of an equation (--models) or a replay: one `error:` line for each misuse."""
    if model is not None or base is not None:
        fail("--models (equations) cannot be combined with --model/--base")
    if replay is None and (not inputs or len(inputs) != 1):
        fail("with --models, give exactly one equation (quote it)")


def _run_equation(inputs, models, out, replay, where, overwrite: bool, **run) -> None:
    """One equation (or the record.json to replay) run, rendered and written to the folder --out."""
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    from pops.equation.cli import run_equation_cli

    device, dtype, cpu_offload, generator_device = where
    run_or_fail(
        run_equation_cli,
        inputs[0] if inputs else None,
        models_dir=models,
        out_dir=out,
        replay=replay,
        device=device,
        dtype=dtype,
        cpu_offload=cpu_offload or None,  # unset: the renderer folder's own setting
        generator_device=generator_device,
        overwrite=overwrite,
        **run,
    )


def _check_operator_options(model, base, checkpoint, out: Path) -> None:
    """The options of one operator on files (not an equation): one `error:` line for each misuse."""
    if (model is None) == (base is None and checkpoint is None):
        fail(
            "give either --model FOLDER, or --base/--checkpoint for a Kandinsky prior with released weights (or "
            "--models for an equation)"
        )
    if out.suffix != ".safetensors":
        fail(f"--out must end in .safetensors, got {out}")


def _apply(inputs, operator, seed, num_samples, out, sampling, where=()):
    """One operator on files: `operator` is (model folder, Kandinsky base, released checkpoint, kind), `sampling`
    the command's SamplingConfig (None values: the operator's own)."""
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    from pops.embeddings.io import save_embeddings

    # Pictures are decoded (and a file that is none refused) before the operator loads: a released one takes minutes.
    pictures = {t: read_image(t) for t in inputs if Path(t).suffix.lower() in IMAGE_SUFFIXES and Path(t).exists()}
    op = _load_operator(*operator)
    device, dtype, generator_device = where or (None, None, "cpu")
    place(op, device, dtype)
    spec = op.spec
    if len(inputs) != spec.num_slots:
        raise ValueError(f"{spec.kind} takes {spec.num_slots} inputs ({', '.join(spec.slot_names)}), got {len(inputs)}")
    values = [read_input(op, slot, text, pictures) for slot, text in zip(spec.slots, inputs)]
    rows = max([v.shape[0] for v in values if v is not None], default=1)
    # Before the inputs are repeated for every sample (each sampled `draws` times).
    op.check_memory(rows * num_samples, sampling.layout, sampling.draws)
    # n samples per input row: repeat every row n times (batch-1 inputs broadcast inside sample()).
    values = [None if v is None else v.repeat_interleave(num_samples, 0) if v.shape[0] > 1 else v for v in values]
    generator = make_generator(seed, generator_device)
    output = op.sample(values, batch_size=rows * num_samples, generator=generator, progress=True, sampling=sampling)
    config = op.call_config(sampling)  # what it sampled with: the record of the output file
    meta = dict(
        operator=spec.kind,
        model=str(operator[0] or operator[2]),  # the folder, else the released checkpoint
        inputs=list(inputs),
        seed=seed,
        guidance_scale=config.guidance_scale,
        steps=config.num_inference_steps,
        num_samples=num_samples,
        layout=config.layout,
        sampler=config.sampler,
        draws=config.draws,
    )
    if generator_device != "cpu":
        meta["generator_device"] = generator_device
    save_embeddings(out, output.float().cpu(), meta)
    typer.echo(f"wrote {tuple(output.shape)} {spec.kind} embeddings to {out}")


def _load_operator(model, base, checkpoint, kind):
    """The operator of --model FOLDER, or of a released --checkpoint on a Kandinsky --base."""
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    from pops.operators.operator import Operator

    if model is None:
        return Operator.from_pretrained(base or KANDINSKY_PRIOR, checkpoint=checkpoint, kind=kind)
    if not model.exists():
        raise FileNotFoundError(f"no such operator folder: {model}")
    return Operator.from_pretrained(model, kind=kind)


def read_input(op, slot, text: str, pictures: dict | None = None):
    """One CLI input for `slot` as a tensor: (N, D) image embeddings, (1, T, W) token rows, or None (dropped).
    `pictures`: images already decoded, by input text."""
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    from pops.embeddings.io import EMBEDDING_SUFFIXES, load_embeddings

    if text.lower() in DROP:
        return None
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix in EMBEDDING_SUFFIXES:
        if slot.kind == "text":
            return load_embeddings(path)[0][None]  # (T, W) token rows
        return load_embeddings(path, dim=op.embedding_dim)[0]
    if slot.kind == "text":
        if suffix in IMAGE_SUFFIXES:
            raise ValueError(f"input {slot.name!r} is a text slot; give a word, not {path}")
        if op.text_encoder is None:
            raise ValueError(f"input {slot.name!r}: this operator has no text encoder; give token rows (.safetensors)")
        return op.text_encoder.token_rows([text])[0][None]
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(
            f"input {slot.name!r}: {text!r} is neither an embedding file ({', '.join(EMBEDDING_SUFFIXES)}) nor an image"
        )
    image = pictures[text] if pictures and text in pictures else read_image(path)  # no picture: refused first
    if op.image_encoder is None:
        raise ValueError(f"input {slot.name!r}: this operator has no image encoder; give an embedding file")
    return op.image_encoder.encode([image])
