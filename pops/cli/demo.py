"""`pops demo`: the embedded world end to end — world, encoder cache, five operators, evaluation, renderers, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pops.cli.app import app, run_or_fail
from pops.demo.training_recipes import default_train_per_class

Out = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Output folder: operators/, renderers/, data/, report.html (a models folder for `pops apply --models` "
        "and `pops eval`).",
    ),
]
Quick = Annotated[
    bool,
    typer.Option(
        "--quick",
        help="A reduced run (smaller world, fewer steps) that finishes in about a minute; its numbers are a smoke "
        "test, not the result.",
    ),
]
Seed = Annotated[
    int, typer.Option(help="World seed (which combinations are held out, every jitter) and training seed.")
]
Operators = Annotated[
    list[str] | None,
    typer.Option("--operator", help="Run only these operators (repeatable) (default: all five)."),
]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        help="Embedding cache folder (default: OUT/cache); reruns read embeddings from it instead of encoding."
    ),
]
Joint = Annotated[
    bool | None,
    typer.Option(
        "--joint/--no-joint",
        help="Also train ONE model for all operators (a learned operator row) and show it beside them (method 'pops "
        "joint'), saved as OUT/operators/joint; an operator then runs on it only where it beats the separate one on "
        "validation classes by more than the noise (method 'pops chosen'). Default: with --quick only (it costs the "
        "full demo about a third of its time).",
        show_default=False,
    ),
]
Vocabulary = Annotated[
    bool,
    typer.Option(
        "--vocabulary/--no-vocabulary",
        help="Instruct (and the joint model's instruct) keep the words they were trained on and read a word they "
        "never saw, such as a held-out synonym, as the nearest of them.",
    ),
]
Retrain = Annotated[
    bool,
    typer.Option(
        "--retrain",
        help="Train the operators again even when OUT holds operators trained with the same settings and data.",
    ),
]
Steps = Annotated[int | None, typer.Option(help="Optimiser steps per operator (default: 500).")]
BatchSize = Annotated[int | None, typer.Option(help="Training batch size (default: 64).")]
TrainPerClass = Annotated[
    int | None,
    typer.Option(
        help="Training samples per training class, for every operator (default: "
        + ", ".join(f"{kind} {n}" for kind, n in default_train_per_class().items())
        + ").",
    ),
]
EvalSeeds = Annotated[
    int | None,
    typer.Option(
        help="Sampling seeds the operators are evaluated over at their own guidance scale (default: 3, quick 1)."
    ),
]
Guidance = Annotated[
    list[float] | None,
    typer.Option(
        "--guidance",
        help="Also report the operators at this guidance scale (repeatable, one seed); each operator's own scale "
        "(chosen on validation classes) and the registry's are always reported.",
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(
        help="Torch threads per process (default: 1; a second thread gains little on these small models and stalls "
        "when another process holds a core).",
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(help="Processes that train and evaluate operators side by side (default: one per core, at most 2)."),
]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars per stage.")]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace operator folders under OUT that no earlier demo wrote (without it they are refused; the demo's "
        "own are reused, or retrained when their settings or data changed).",
    ),
]


@app.command()
def demo(
    out: Out = Path("outputs/demo"),
    quick: Quick = False,
    seed: Seed = 0,
    operators: Operators = None,
    cache_dir: CacheDir = None,
    joint: Joint = None,
    vocabulary: Vocabulary = True,
    retrain: Retrain = False,
    steps: Steps = None,
    batch_size: BatchSize = None,
    train_per_class: TrainPerClass = None,
    eval_seeds: EvalSeeds = None,
    guidance: Guidance = None,
    threads: Threads = None,
    workers: Workers = None,
    progress: Progress = True,
    overwrite: Overwrite = False,
) -> None:
    """Generate the embedded world, encode it (once, cached), train all five operators, evaluate them on held-out
    combinations against the averaging baseline, render examples and write OUT/report.html. Prints the metrics."""
    overrides = dict(
        out=out,
        seed=seed,
        cache_dir=cache_dir,
        vocabulary=vocabulary,
        retrain=retrain,
        threads=threads,
        workers=workers,
        progress=progress,
        overwrite=overwrite,
    )
    if operators:
        overrides["operators"] = tuple(dict.fromkeys(operators))
    given = dict(
        joint=joint, steps=steps, batch_size=batch_size, train_per_class=train_per_class, eval_seeds=eval_seeds
    )
    overrides.update({key: value for key, value in given.items() if value is not None})
    if guidance:
        overrides["guidance_scales"] = tuple(guidance)
    _print_result(run_or_fail(_demo, quick, overrides))


def _print_result(result) -> None:
    # Heavy imports here, not at the top: `pops --help` loads no torch (pops.demo.plan imports it).
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
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    from pops.demo import DemoConfig, quick_config, run_demo

    config = quick_config(**overrides) if quick else DemoConfig(**overrides)
    return run_demo(config)
