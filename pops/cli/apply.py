"""`pops apply`: run one operator (or an equation of operators) on files and write the output embeddings."""

from __future__ import annotations

from pathlib import Path

import typer

from pops.base import checks
from pops.base.files import check_output
from pops.base.reference import RELEASED_OPERATORS
from pops.cli import placement
from pops.cli.app import OVERWRITE_HELP, app, checked, fail, run_or_fail, sampling_options

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DROP = ("-", "none", "_")


@app.command()
def apply(
    inputs: list[str] = typer.Argument(
        None,
        help="One input per slot of the operator, in slot order: an embedding file (.safetensors/.pt, e.g. the "
        "output of an earlier `pops apply`), an image (when the operator carries an image encoder), a word for a text "
        "slot, or '-'/'none' to drop the slot. With --models: a single equation such as 'scene(texturing(a.png, "
        "b.png), c.png)'. Or an operator's name then its inputs (texturing object.jpg texture.jpg): run and render "
        "it like an equation, with the released operators unless --models DIR is given.",
    ),
    model: Path | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Operator folder written by save_pretrained (or `pops demo`); a joint folder with --kind.",
    ),
    models: Path | None = typer.Option(
        None,
        "--models",
        help="Models folder (operators/<kind>/, renderers), for equations and for OPERATOR INPUT…; "
        f"{RELEASED_OPERATORS} = the paper's released operators from the hub (the default for OPERATOR INPUT…).",
    ),
    base: str | None = typer.Option(
        None, help="Kandinsky 2.2 prior (hub id or local folder) to load a released checkpoint on."
    ),
    checkpoint: str | None = typer.Option(
        None,
        help="Released pOps weights: a local .pth or owner/repo:path (e.g. "
        "pOpsPaper/operators:models/texturing/learned_prior.pth).",
    ),
    kind: str | None = typer.Option(
        None,
        help="Which operator of a joint --model folder (one prior for several operators) to run; or the kind of a "
        "released --checkpoint whose path does not name it.",
    ),
    seed: int = typer.Option(0, help="Seed of the torch.Generator that draws all sampling noise (0 to 2**64 - 1)."),
    guidance_scale: float | None = typer.Option(
        None,
        "--guidance-scale",
        "-g",
        help="Classifier-free guidance scale, 1 to 100; 1 = no guidance (default: the operator's own).",
    ),
    steps: int | None = typer.Option(
        None,
        help="Number of sampling steps, 1 to 1000 (default: the operator's own — 25, or 1 for a distilled student).",
    ),
    num_samples: int = typer.Option(1, "--num-samples", "-n", help="Samples per input row."),
    layout: str = typer.Option("compact", help="Condition layout: compact (fast) or padded (the reference's)."),
    sampler: str | None = typer.Option(
        None,
        help="unclip (the reference's ancestral loop), ddim (deterministic), ddim-linspace (ddim from t 999 to 0, "
        "2+ steps) or dpmpp (DPM-Solver++); few-step samplers take --steps 1-8 (default: the operator's own, unclip).",
    ),
    draws: int | None = typer.Option(
        None,
        help="Samples averaged into each output (an estimate of the posterior mean; default: the operator's own, "
        "1 unless its folder says).",
    ),
    out: Path = typer.Option(
        Path("pops_output.safetensors"),
        "--out",
        "-o",
        help="Output embeddings (.safetensors), or a folder for equations.",
    ),
    render: str = typer.Option(
        "auto",
        help="Equations: render with the models folder's renderer (auto, retrieval, decoder, kandinsky, ipadapter, "
        "ipadapter-depth) or none.",
    ),
    step_seed: list[str] | None = typer.Option(
        None, "--step-seed", help="Equations: LABEL=N seeds one step (repeatable)."
    ),
    replay: Path | None = typer.Option(
        None, help="Equations: re-run the record.json of an earlier run (same equation, seeds, settings)."
    ),
    device: str | None = placement.DEVICE,
    dtype: str | None = placement.DTYPE,
    cpu_offload: bool = placement.CPU_OFFLOAD,
    generator_device: str | None = typer.Option(
        None,
        "--generator-device",
        help="Where the sampling noise is drawn: cpu (default; the same numbers on every machine) or cuda (the "
        "reference's generator: on a GPU, the same seed gives the reference's samples). A replay keeps its record's.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Apply an operator to its inputs and save the sampled embeddings (which `pops apply` accepts back as inputs).

    With --models (or --replay), evaluate an equation of operators instead (see docs/EQUATIONS.md). From pictures to
    pictures in one command: `pops apply texturing object.jpg texture.jpg -n 4 -o out/` runs the paper's released
    operator (from the hub, on the Kandinsky 2.2 prior, rendered by Kandinsky 2.2), or the one in --models DIR."""
    if (
        inputs
        and model is None
        and base is None
        and checkpoint is None
        and replay is None
        and _names_operator(inputs[0])
    ):
        from pops.equation.cli import call_equation

        inputs = [call_equation(inputs[0], inputs[1:])]
        models = models or Path(RELEASED_OPERATORS)
    from pops.base.devices import check_placement

    run_or_fail(check_placement, device, dtype, generator_device)
    checked(checks.seed, seed, "--seed")
    sampling = sampling_options(
        guidance_scale=guidance_scale, num_inference_steps=steps, sampler=sampler, draws=draws, layout=layout
    )
    checked(checks.count, num_samples, "--num-samples")
    if models is not None or replay is not None:
        if model is not None or base is not None:
            fail("--models (equations) cannot be combined with --model/--base")
        if replay is None and (not inputs or len(inputs) != 1):
            fail("with --models, give exactly one equation (quote it)")
        from pops.equation.cli import run_equation_cli

        run_or_fail(
            run_equation_cli,
            inputs[0] if inputs else None,
            models_dir=models,
            out_dir=out,
            seed=seed,
            sampling=sampling,
            num_samples=num_samples,
            render=render,
            step_seeds=step_seed,
            replay=replay,
            device=device,
            dtype=dtype,
            cpu_offload=cpu_offload or None,  # unset: the renderer folder's own setting
            generator_device=generator_device,
            overwrite=overwrite,
        )
        return
    run_or_fail(check_output, out, overwrite=overwrite, what="--out")
    _check_operator_options(model, base, checkpoint, out)
    where = (device, dtype, generator_device or "cpu")
    run_or_fail(_apply, inputs or [], (model, base, checkpoint, kind), seed, num_samples, out, sampling, where)


def _names_operator(text: str) -> bool:
    """Whether a first input is an operator's name (texturing, texture, …) rather than a file."""
    from pops.base.registry import REGISTRY

    names = set(REGISTRY) | {alias for spec in REGISTRY.values() for alias in spec.aliases}
    return text in names and not Path(text).exists()


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
    from pops.base.devices import make_generator, place
    from pops.base.readers import read_image
    from pops.base.reference import KANDINSKY_PRIOR
    from pops.embeddings.files import save_embeddings
    from pops.operators.operator import Operator

    # Pictures are decoded (and a file that is none refused) before the operator loads: a released one takes minutes.
    pictures = {t: read_image(t) for t in inputs if Path(t).suffix.lower() in IMAGE_SUFFIXES and Path(t).exists()}
    model, base, checkpoint, kind = operator
    if model is not None:
        if not model.exists():
            raise FileNotFoundError(f"no such operator folder: {model}")
        op = Operator.from_pretrained(model, kind=kind)
    else:
        op = Operator.from_pretrained(base or KANDINSKY_PRIOR, checkpoint=checkpoint, kind=kind)
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
        model=str(model or checkpoint),
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


def read_input(op, slot, text: str, pictures: dict | None = None):
    """One CLI input for `slot` as a tensor: (N, D) image embeddings, (1, T, W) token rows, or None (dropped).
    `pictures`: images already decoded, by input text."""
    from pops.embeddings.files import EMBEDDING_SUFFIXES, load_embeddings

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
    from pops.base.readers import read_image

    image = pictures[text] if pictures and text in pictures else read_image(path)  # no picture: refused first
    if op.image_encoder is None:
        raise ValueError(f"input {slot.name!r}: this operator has no image encoder; give an embedding file")
    return op.image_encoder.encode([image])
