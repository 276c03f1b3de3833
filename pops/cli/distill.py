"""`pops distill TEACHER -o OUT`: a one-pass student of a trained operator (pops.train.distill)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pops.base import checks
from pops.base.files import check_output, write_folder
from pops.base.reference import OPERATOR_CONFIG_NAME
from pops.cli.app import app, checked, fail, run_or_fail
from pops.cli.options import Overwrite, Threads

Teacher = Annotated[Path, typer.Argument(help="The teacher: an operator folder (save_pretrained format).")]
Data = Annotated[
    Path,
    typer.Option(
        "--data", help="Training pairs of the teacher's operator (.safetensors), e.g. MODELS/data/<kind>-train."
    ),
]
Out = Annotated[Path, typer.Option("--out", "-o", help="The student's folder (must not exist, or be empty).")]
Steps = Annotated[int, typer.Option(help="Optimiser steps (AdamW).")]
Noises = Annotated[int, typer.Option(help="Initial noises per training condition (teacher targets: pairs × noises).")]
Seed = Annotated[int, typer.Option(help="Seed of the noises and of the batch order.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Samples per optimiser step.")]
Lr = Annotated[float, typer.Option(help="Learning rate.")]
StudentSteps = Annotated[
    int,
    typer.Option(
        "--student-steps", help="The student's passes: it is trained through its own ddim call of this many steps."
    ),
]
Recombine = Annotated[
    int,
    typer.Option(
        help="Also train on the pairs recombined within their input classes (this many copies; a demo's pairs)."
    ),
]


@app.command()
def distill(
    teacher: Teacher,
    data: Data,
    out: Out,
    steps: Steps = 150,
    noises: Noises = 2,
    seed: Seed = 0,
    batch_size: BatchSize = 64,
    lr: Lr = 1e-4,
    student_steps: StudentSteps = 1,
    recombine: Recombine = 1,
    threads: Threads = None,
    overwrite: Overwrite = False,
) -> None:
    """Distil TEACHER into a student that samples in ONE forward pass, or a few (direct regression, Luhman & Luhman
    2021).

    The targets are the teacher's guided deterministic samples (ddim, 25 steps, its own guidance scale) from
    NOISES initial noises per condition of DATA (absent slots stay the null condition); the student, a copy of the
    teacher, learns to map each noise and condition to its target through its own call — ddim with STUDENT-STEPS
    steps (1: one pass at t = 999) — without the unconditional pass. OUT is a normal operator folder saved with that
    call as its default (sampler ddim, STUDENT-STEPS steps, guidance 1), so `pops apply --model OUT …` and
    `pops eval` use it as it is. Its model card names the teacher and the call."""
    checked(checks.threads, threads, "--threads")
    if not (teacher / OPERATOR_CONFIG_NAME).is_file():
        fail(f"not an operator folder: {teacher}")
    run_or_fail(check_output, out, overwrite=overwrite, folder=True, what="--out")
    if out.resolve() == teacher.resolve():
        fail("--out is the teacher's own folder; give another")
    config = dict(
        steps=steps,
        noises=noises,
        seed=seed,
        batch_size=batch_size,
        lr=lr,
        student_steps=student_steps,
        recombine=recombine,
    )
    student = run_or_fail(_distill, teacher, data, config, threads)
    run_or_fail(_save_atomically, student, out)
    summary = student.training["summary"]
    passes = summary["student_steps"]
    typer.echo(
        f"student of {teacher} saved to {out} (final loss {summary['final_loss']:.4f}; "
        f"it samples in {passes} pass{'es' if passes > 1 else ''} by default)"
    )


def _distill(teacher, data, settings: dict, threads):
    # Heavy imports here, not at the top: `pops --help` loads no torch (nor diffusers).
    import torch

    from pops.embeddings.pairs import Pairs
    from pops.operators.operator import Operator
    from pops.train.distill import DistillConfig, distill

    config = DistillConfig(**settings)
    config.check()  # bad numbers fail before anything loads
    # One thread unless asked, as the demo's operators (pops.demo.plan.choose_threads says why).
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
