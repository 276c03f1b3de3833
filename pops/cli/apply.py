"""`pops apply`: run one operator (or an equation of operators) on files and write the output embeddings."""

from __future__ import annotations

from pathlib import Path

import typer

from pops.cli.app import app, fail, run_or_fail

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DROP = ("-", "none", "_")


@app.command()
def apply(
    inputs: list[str] = typer.Argument(
        None,
        help="One input per slot of the operator, in slot order: an embedding file (.safetensors/.pt, e.g. the "
        "output of an earlier `pops apply`), an image (when the operator carries an image encoder), a word for a text "
        "slot, or '-'/'none' to drop the slot. With --models: a single equation such as 'scene(texturing(a.png, "
        "b.png), c.png)'.",
    ),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Operator folder written by save_pretrained (or `pops demo`)."
    ),
    models: Path | None = typer.Option(None, "--models", help="Folder of operator folders, for equations."),
    base: str | None = typer.Option(
        None, help="Kandinsky 2.2 prior (hub id or local folder) to load a released checkpoint on."
    ),
    checkpoint: str | None = typer.Option(
        None,
        help="Released pOps weights: a local .pth or owner/repo:path (e.g. "
        "pOpsPaper/operators:models/texturing/learned_prior.pth).",
    ),
    kind: str | None = typer.Option(None, help="Operator kind when it cannot be read from --checkpoint's path."),
    seed: int = typer.Option(0, help="Seed of the torch.Generator that draws all sampling noise."),
    guidance_scale: float | None = typer.Option(
        None, "--guidance-scale", "-g", help="Classifier-free guidance scale (default: the operator's own)."
    ),
    steps: int | None = typer.Option(
        None, help="Number of sampling steps (default: the operator's own — 25, or 1 for a distilled student)."
    ),
    num_samples: int = typer.Option(1, "--num-samples", "-n", help="Samples per input row."),
    layout: str = typer.Option("compact", help="Condition layout: compact (fast) or padded (the reference's)."),
    sampler: str | None = typer.Option(
        None,
        help="unclip (the reference's ancestral loop), ddim (deterministic), ddim-linspace (ddim from t 999 to 0, "
        "2+ steps) or dpmpp (DPM-Solver++); few-step samplers take --steps 1-8 (default: the operator's own, unclip).",
    ),
    out: Path = typer.Option(
        Path("pops_output.safetensors"),
        "--out",
        "-o",
        help="Output embeddings (.safetensors), or a folder for equations.",
    ),
    render: str = typer.Option(
        "auto", help="Equations: render with the models folder's renderer (auto, retrieval, decoder) or none."
    ),
    step_seed: list[str] | None = typer.Option(
        None, "--step-seed", help="Equations: LABEL=N seeds one step (repeatable)."
    ),
    replay: Path | None = typer.Option(
        None, help="Equations: re-run the record.json of an earlier run (same equation, seeds, settings)."
    ),
) -> None:
    """Apply an operator to its inputs and save the sampled embeddings (which `pops apply` accepts back as inputs).

    With --models (or --replay), evaluate an equation of operators instead (see docs/EQUATIONS.md)."""
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
            guidance_scale=guidance_scale,
            steps=25 if steps is None else steps,
            num_samples=num_samples,
            render=render,
            layout=layout,
            sampler=sampler,
            step_seeds=step_seed,
            replay=replay,
        )
        return
    _check_operator_options(model, base, checkpoint, num_samples, steps, out)
    run_or_fail(
        _apply,
        inputs or [],
        model,
        base,
        checkpoint,
        kind,
        seed,
        guidance_scale,
        steps,
        num_samples,
        layout,
        out,
        sampler,
    )


def _check_operator_options(model, base, checkpoint, num_samples: int, steps: int, out: Path) -> None:
    """The options of one operator on files (not an equation): one `error:` line for each misuse."""
    if (model is None) == (base is None and checkpoint is None):
        fail(
            "give either --model FOLDER, or --base/--checkpoint for a Kandinsky prior with released weights (or "
            "--models for an equation)"
        )
    if num_samples < 1 or (steps is not None and steps < 1):
        fail("--num-samples and --steps must be ≥ 1")
    if out.suffix != ".safetensors":
        fail(f"--out must end in .safetensors, got {out}")


def _apply(inputs, model, base, checkpoint, kind, seed, guidance_scale, steps, num_samples, layout, out, sampler=None):
    import torch

    from pops.embeddings_io import save_embeddings
    from pops.operator import Operator
    from pops.reference import KANDINSKY_PRIOR

    if model is not None:
        if not model.exists():
            raise FileNotFoundError(f"no such operator folder: {model}")
        op = Operator.from_pretrained(model)
    else:
        op = Operator.from_pretrained(base or KANDINSKY_PRIOR, checkpoint=checkpoint, kind=kind)
    spec = op.spec
    if len(inputs) != spec.num_slots:
        raise ValueError(f"{spec.name} takes {spec.num_slots} inputs ({', '.join(spec.slot_names)}), got {len(inputs)}")
    values = [read_input(op, slot, text) for slot, text in zip(spec.slots, inputs)]
    rows = max([v.shape[0] for v in values if v is not None], default=1)
    # n samples per input row: repeat every row n times (batch-1 inputs broadcast inside sample()).
    values = [None if v is None else v.repeat_interleave(num_samples, 0) if v.shape[0] > 1 else v for v in values]
    output = op.sample(
        values,
        guidance_scale=guidance_scale,
        num_inference_steps=steps,
        batch_size=rows * num_samples,
        generator=torch.Generator().manual_seed(seed),
        layout=layout,
        progress=True,
        sampler=sampler,
    )
    meta = dict(
        operator=spec.name,
        model=str(model or checkpoint),
        inputs=list(inputs),
        seed=seed,
        guidance_scale=op.guidance_scale if guidance_scale is None else guidance_scale,
        steps=op.sampling(sampler, steps)[1],
        num_samples=num_samples,
        layout=layout,
        sampler=op.sampling(sampler, steps)[0],
    )
    save_embeddings(out, output, meta)
    typer.echo(f"wrote {tuple(output.shape)} {spec.name} embeddings to {out}")


def read_input(op, slot, text: str):
    """One CLI input for `slot` as a tensor: (N, D) image embeddings, (1, T, W) token rows, or None (dropped)."""
    from pops.embeddings_io import EMBEDDING_SUFFIXES, load_embeddings

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
    if not path.is_file():
        raise FileNotFoundError(f"no such image: {path}")
    if op.image_encoder is None:
        raise ValueError(f"input {slot.name!r}: this operator has no image encoder; give an embedding file")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            image = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: cannot decode image ({exc})") from None
    return op.image_encoder.encode([image])
