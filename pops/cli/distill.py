"""`pops distill TEACHER -o OUT`: a one-pass student of a trained operator (pops.train.distill)."""

from __future__ import annotations

from pathlib import Path

import typer

from pops import checks
from pops.cli.app import OVERWRITE_HELP, app, checked, fail, run_or_fail
from pops.files import check_output, write_folder
from pops.reference import OPERATOR_CONFIG_NAME


@app.command()
def distill(
    teacher: Path = typer.Argument(..., help="The teacher: an operator folder (save_pretrained format)."),
    data: Path = typer.Option(
        ..., "--data", help="Training pairs of the teacher's operator (.safetensors), e.g. MODELS/data/<kind>-train."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The student's folder (must not exist, or be empty)."),
    steps: int = typer.Option(150, help="Optimiser steps (AdamW)."),
    noises: int = typer.Option(2, help="Initial noises per training condition (teacher targets: pairs × noises)."),
    seed: int = typer.Option(0, help="Seed of the noises and of the batch order."),
    batch_size: int = typer.Option(64, "--batch-size", help="Samples per optimiser step."),
    lr: float = typer.Option(1e-4, help="Learning rate."),
    threads: int | None = typer.Option(None, help="Torch threads, at most the cores (default: 1)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Distil TEACHER into a student that samples in ONE forward pass (direct regression, Luhman & Luhman 2021).

    The targets are the teacher's guided deterministic samples (ddim, 25 steps, its own guidance scale) from
    NOISES initial noises per condition of DATA (absent slots stay the null condition); the student, a copy of the
    teacher, learns to map each noise and condition to its target in one pass at t = 999, without the unconditional
    pass. OUT is a normal operator folder saved with sampler ddim and guidance 1; call it with 1 step
    (`pops apply --model OUT --steps 1 …`, `pops eval … --steps 1`). Its model card names the teacher."""
    checked(checks.threads, threads, "--threads")
    if not (teacher / OPERATOR_CONFIG_NAME).is_file():
        fail(f"not an operator folder: {teacher}")
    run_or_fail(check_output, out, overwrite=overwrite, folder=True, what="--out")
    if out.resolve() == teacher.resolve():
        fail("--out is the teacher's own folder; give another")
    student = run_or_fail(_distill, teacher, data, steps, noises, seed, batch_size, lr, threads)
    run_or_fail(_save_atomically, student, out)
    summary = student.training["summary"]
    typer.echo(f"student of {teacher} saved to {out} (final loss {summary['final_loss']:.4f}; call it with 1 step)")


def _distill(teacher, data, steps, noises, seed, batch_size, lr, threads):
    # Lazy: `pops --help` stays fast (torch and diffusers load only when the command runs).
    import torch

    from pops.operator import Operator
    from pops.pairs import Pairs
    from pops.train.distill import DistillConfig, distill

    config = DistillConfig(steps=steps, noises=noises, batch_size=batch_size, lr=lr, seed=seed)
    config.check()  # bad numbers fail before anything loads
    # One thread unless asked, as the demo's operators (pops.demo.config.choose_threads says why).
    torch.set_num_threads(threads or 1)
    # Encoders are named, not built (they build on first use): the student keeps them, so it takes images and words
    # as its teacher does.
    op = Operator.from_pretrained(teacher)
    pairs = Pairs.load(data)
    return distill(op, pairs, config, teacher_name=str(teacher), log=lambda line: typer.echo(line, err=True))


def _save_atomically(student, out: Path) -> None:
    """OUT is whole or as it was, never half written: built as a hidden sibling, then moved into place (with
    --overwrite, replacing the whole earlier folder)."""
    write_folder(out, student.save_pretrained, keep_others=False)
