"""`pops demo`: the embedded world end to end — world, encoder cache, five operators, evaluation, renderers, report."""

from __future__ import annotations

from pathlib import Path

import typer

from pops.cli.app import app, run_or_fail
from pops.demo.recipes import default_train_per_class


@app.command()
def demo(
    out: Path = typer.Option(
        Path("outputs/demo"),
        "--out",
        "-o",
        help="Output folder: operators/, renderer/, data/, report.html (a models folder for `pops apply --models` "
        "and `pops eval`).",
    ),
    quick: bool = typer.Option(
        False,
        "--quick",
        help="A reduced run (smaller world, fewer steps) that finishes in about a minute; its numbers are a smoke "
        "test, not the result.",
    ),
    seed: int = typer.Option(0, help="World seed (which combinations are held out, every jitter) and training seed."),
    operators: list[str] | None = typer.Option(
        None, "--operator", help="Run only these operators (repeatable) (default: all five)."
    ),
    cache_dir: Path | None = typer.Option(
        None, help="Embedding cache folder (default: OUT/cache); reruns read embeddings from it instead of encoding."
    ),
    joint: bool = typer.Option(
        True,
        "--joint/--no-joint",
        help="Also train ONE model for all operators (a learned operator row) and show it beside them (method 'pops "
        "joint'), saved as OUT/operators/joint; each operator then runs on whichever of the two scores higher on its "
        "validation classes (method 'pops chosen').",
    ),
    vocabulary: bool = typer.Option(
        True,
        "--vocabulary/--no-vocabulary",
        help="Instruct (and the joint model's instruct) keep the words they were trained on and read a word they "
        "never saw, such as a held-out synonym, as the nearest of them.",
    ),
    retrain: bool = typer.Option(
        False,
        "--retrain",
        help="Train the operators again even when OUT holds operators trained with the same settings and data.",
    ),
    steps: int | None = typer.Option(None, help="Optimiser steps per operator (default: 500)."),
    batch_size: int | None = typer.Option(None, help="Training batch size (default: 64)."),
    train_per_class: int | None = typer.Option(
        None,
        help="Training samples per training class, for every operator (default: "
        + ", ".join(f"{kind} {n}" for kind, n in default_train_per_class().items())
        + ").",
    ),
    eval_seeds: int | None = typer.Option(
        None, help="Sampling seeds the operators are evaluated over at their own guidance scale (default: 3, quick 1)."
    ),
    guidance: list[float] | None = typer.Option(
        None,
        "--guidance",
        help="Also report the operators at this guidance scale (repeatable, one seed); each operator's own scale "
        "(chosen on validation classes) and the registry's are always reported.",
    ),
    threads: int | None = typer.Option(
        None,
        help="Torch threads per process (default: 1; a second thread gains little on these small models and stalls "
        "when another process holds a core).",
    ),
    workers: int | None = typer.Option(
        None, help="Processes that train and evaluate operators side by side (default: one per core, at most 2)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars per stage."),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace operator folders under OUT that no earlier demo wrote (without it they are refused; the demo's "
        "own are reused, or retrained when their settings or data changed).",
    ),
) -> None:
    """Generate the embedded world, encode it (once, cached), train all five operators, evaluate them on held-out
    combinations against the averaging baseline, render examples and write OUT/report.html. Prints the metrics."""
    overrides = dict(
        out=out,
        seed=seed,
        cache_dir=cache_dir,
        joint=joint,
        vocabulary=vocabulary,
        retrain=retrain,
        threads=threads,
        workers=workers,
        progress=progress,
        overwrite=overwrite,
    )
    if operators:
        overrides["operators"] = tuple(dict.fromkeys(operators))
    for key, value in (
        ("steps", steps),
        ("batch_size", batch_size),
        ("train_per_class", train_per_class),
        ("eval_seeds", eval_seeds),
    ):
        if value is not None:
            overrides[key] = value
    if guidance:
        overrides["guidance_scales"] = tuple(guidance)
    _print_result(run_or_fail(_demo, quick, overrides))


def _print_result(result) -> None:
    from pops.demo import format_seconds

    typer.echo(result.table.to_text())
    typer.echo(format_seconds(result.seconds))
    typer.echo(
        f"images encoded this run: {result.encoded}; operators trained: "
        f"{', '.join(result.trained) or 'none (reused)'}; "
        f"{result.workers} worker process(es) x {result.threads} torch thread(s)"
    )
    typer.echo("guidance chosen on validation classes: " + ", ".join(f"{k} {v:g}" for k, v in result.guidance.items()))
    if result.joint_guidance:
        chosen = ", ".join(f"{k} {v:g}" for k, v in result.joint_guidance.items())
        typer.echo(f"joint model's guidance (chosen the same way): {chosen}")
    if result.chosen:
        picks = ", ".join(f"{k} {v}" for k, v in result.chosen.items())
        typer.echo(f"model chosen per operator on validation classes (pops chosen): {picks}")
    typer.echo(f"report: {result.report}")


def _demo(quick: bool, overrides: dict):
    from pops.demo import DemoConfig, quick_config, run_demo

    config = quick_config(**overrides) if quick else DemoConfig(**overrides)
    return run_demo(config)
