"""`pops eval`: score trained operators on held-out combinations against ground truth and the baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pops.base import checks
from pops.base.devices import check_placement
from pops.base.files import atomic_write_text, check_output
from pops.base.registry import get_spec
from pops.cli.app import app, checked, fail, run_or_fail, sampling_options
from pops.cli.options import Overwrite, Threads
from pops.cli.placement import Device, Dtype, GeneratorDevice

Models = Annotated[
    Path,
    typer.Option(
        "--models",
        "-m",
        help="A models folder with operators/<kind>/ (what `pops demo` writes), or a joint folder (one prior for "
        "several operators, e.g. MODELS/operators/joint) to score its operators.",
    ),
]
Operators = Annotated[
    list[str] | None,
    typer.Option("--operator", help="Evaluate only these operators (repeatable) (default: every operator in MODELS)."),
]
Data = Annotated[
    Path | None,
    typer.Option(
        help="Folder with <kind>-test*.safetensors pairs and <kind>-gallery.safetensors (default: MODELS/data, or "
        "the data/ of the models folder a joint folder sits in).",
    ),
]
Seeds = Annotated[int, typer.Option(help="Sampling seeds per operator; the table shows mean ± std.")]
Guidance = Annotated[
    list[float] | None,
    typer.Option(
        "--guidance",
        help="Also report at this guidance scale (repeatable); the registry's scale is always reported.",
    ),
]
Steps = Annotated[
    int | None,
    typer.Option(
        help="Sampling steps (1-1000, unclip and ddim-linspace at least 2; default: each operator's own — 25, a "
        "student 1).",
    ),
]
Sampler = Annotated[
    str | None,
    typer.Option(
        help="unclip (the reference's 25-step ancestral loop), ddim, ddim-linspace or dpmpp (default: each "
        "operator's own).",
    ),
]
Draws = Annotated[
    int | None,
    typer.Option(help="Samples averaged into each output (default: each operator's own, 1 unless its folder says)."),
]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Also write the table as JSON here.")]


@app.command(name="eval")
def eval_(
    models: Models,
    operators: Operators = None,
    data: Data = None,
    seeds: Seeds = 3,
    guidance: Guidance = None,
    steps: Steps = None,
    sampler: Sampler = None,
    draws: Draws = None,
    out: Out = None,
    threads: Threads = None,
    device: Device = None,
    dtype: Dtype = None,
    generator_device: GeneratorDevice = "cpu",
    overwrite: Overwrite = False,
) -> None:
    """Sample every operator on its held-out test pairs (and instruct on held-out synonyms) and print cosine to the
    true target and top-1 retrieval of the true class, next to averaging, input A only and the oracle."""
    checked(checks.count, seeds, "--seeds")
    sampling = sampling_options(num_inference_steps=steps, sampler=sampler, draws=draws)
    checked(checks.threads, threads, "--threads")
    for scale in guidance or ():
        checked(checks.guidance, scale, "--guidance")
    if not models.is_dir():
        fail(f"no such models folder: {models}")
    if out is not None:
        if out.suffix != ".json":
            fail(f"--out must end in .json, got {out}")
        run_or_fail(check_output, out, overwrite=overwrite, what="--out")
    run_or_fail(check_placement, device, dtype, generator_device)
    where = (device, dtype, generator_device)
    table = run_or_fail(_eval, models, operators, data, seeds, tuple(guidance or ()), sampling, out, threads, where)
    typer.echo(table.to_text())


def _eval(models, operators, data, seeds, guidance, sampling, out, threads, where=(None, None, "cpu")):
    """The command's work: load the operators and the test data, run the evaluation harness, write the JSON."""
    # Heavy imports here, not at the top: `pops --help` loads no torch (nor diffusers).
    import torch

    from pops.evaluation import evaluate_operators, load_test_data

    # One thread unless asked, as the demo's operators (pops.demo.plan.choose_threads says why).
    torch.set_num_threads(threads or 1)
    loaded = _load_operators(models, operators, where[:2])
    if data is None:
        data = _default_data(models)
    test_data = load_test_data(data, list(loaded))
    for kind, op in loaded.items():
        if test_data[kind].gallery.shape[1] != op.embedding_dim:
            raise ValueError(
                f"the {kind} test data holds {test_data[kind].gallery.shape[1]}-d embeddings, its operator works in "
                f"{op.embedding_dim}-d"
            )
    table, _ = evaluate_operators(
        loaded,
        test_data,
        seeds=seeds,
        guidance_scales=guidance,
        extra_seeds=seeds,
        sampling=sampling,
        generator_device=where[2],
    )
    if out is not None:
        atomic_write_text(out, table.to_json())
    return table


def _load_operators(models: Path, operators: list[str] | None, placement: tuple) -> dict:
    """The operators to score, by kind (--operator, or every one in MODELS), placed on --device/--dtype. Each kind
    resolves as in equations and the UI (pops.models.model_set: its own folder, else a joint one)."""
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    from pops.models.model_set import ModelSet

    device, dtype = placement
    model_set = ModelSet(models, load_encoders=False, device=device, dtype=dtype)
    kinds = list(dict.fromkeys(operators)) if operators else model_set.available()
    for kind in kinds:
        get_spec(kind)
    if not kinds:
        raise FileNotFoundError(
            f"no trained operators under {models} (expected operators/<kind>/){model_set.unreadable_note()}"
        )
    loaded = {}
    for kind in kinds:
        if kind not in model_set.available():
            raise FileNotFoundError(model_set.missing_message(kind))
        loaded[kind] = model_set.operator(kind)
    return loaded


def _default_data(models: Path) -> Path:
    """MODELS/data, or the data/ of the models folder a joint folder sits in."""
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    from pops.models.layout import folder_roots

    return next((r / "data" for r in folder_roots(models) if (r / "data").is_dir()), models / "data")
