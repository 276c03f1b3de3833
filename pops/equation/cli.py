"""`pops apply "EQUATION" --models DIR`: run an equation, render it, and write a reproducible record (the files are
described in pops/equation/record.py; OUT/.cache/ keeps the step embeddings for the next run into the same folder).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from pops.base.files import check_output
from pops.base.registry import get_spec
from pops.core.sampling import SamplingConfig, call_sampling
from pops.equation.ast import Call, Drop, File, Text
from pops.equation.printer import format_node
from pops.equation.record import (
    check_inputs_unchanged,
    check_renderable,
    clear_result,
    output_folder,
    parse_step_seeds,
    read_record,
    render_steps,
    write_result,
)
from pops.equation.runner import EquationRunner
from pops.equation.validate import operator_names
from pops.models.model_set import ModelSet, check_renderer_choice


def run_equation_cli(
    expr: str | None,
    models_dir: str | Path | None,
    out_dir: str | Path,
    seed: int = 0,
    sampling: SamplingConfig | None = None,
    num_samples: int = 1,
    render: str = "auto",
    *,
    step_seeds: list[str] | dict | None = None,
    replay: str | Path | None = None,
    cache_dir: str | Path | None = None,
    base_dir: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    cpu_offload: bool | None = None,
    generator_device: str | None = None,
    overwrite: bool = False,
    **values,
):
    """Run `expr` with the operators under `models_dir` (each step sampling as `sampling`, or its values as keywords,
    says: pops.core.sampling.call_sampling; None values the operator's own), render it and write everything to
    `out_dir`.

    `replay`: a record.json from an earlier run; its equation, seeds and settings are used (`expr` must be None),
    `models_dir` may point the run at a moved models folder. Bad input raises ValueError / FileNotFoundError (the
    CLI turns them into a one-line error). `device`/`dtype`/`cpu_offload` place the models (pops.models.model_set);
    `generator_device` draws the noise there (a replay keeps its record's). An `out_dir` holding an earlier result
    is refused unless `overwrite` (its OUT/.cache is reused either way). Returns the EquationResult.
    """
    check_renderer_choice(render)
    seeds = parse_step_seeds(step_seeds)
    call = dict(sampling=call_sampling(sampling, **values), seed=seed, seeds=seeds, num_samples=num_samples)
    if replay is not None:
        if expr:
            raise ValueError("give either an equation or --replay RECORD, not both")
        record = read_record(replay)
        check_inputs_unchanged(record)
        expr, call = _recorded_call(record, replay)
        base_dir = record.get("base_dir")
        models_dir = models_dir or record.get("models")
        render = (record.get("renderer") or "none") if render == "auto" else render
        generator_device = generator_device or record.get("generator_device", "cpu")
    if not expr or not expr.strip():
        raise ValueError("give an equation, e.g. 'scene(texture(chair.png, wood.png), beach.png)'")
    if models_dir is None:
        raise ValueError("give --models DIR: the folder holding the trained operators")
    out = output_folder(out_dir)
    models = ModelSet.coerce(models_dir, device=device, dtype=dtype, cpu_offload=cpu_offload)
    runner = EquationRunner(models, cache_dir=Path(cache_dir) if cache_dir else out / ".cache")
    where = dict(base_dir=base_dir, generator_device=generator_device or "cpu")
    result, pictures = _run_and_write(runner, expr, out, render, call, where, overwrite)
    (echo or typer.echo)(_summary(result, pictures, out))
    return result


def _recorded_call(record: dict, replay) -> tuple[str, dict]:
    """The equation of a record.json and how it was called (sampling, seed, seeds, num_samples)."""
    try:
        expr = str(record["equation"])
        call = dict(
            seed=int(record["seed"]),
            seeds={str(k): int(v) for k, v in record["seeds"].items()},
            num_samples=int(record["num_samples"]),
            sampling=SamplingConfig(
                record.get("sampler"),
                record["num_inference_steps"],
                record["guidance_scale"],
                record.get("draws"),
                record["layout"],
            ),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"{replay}: not a complete equation record ({type(exc).__name__}: {exc})") from None
    return expr, call


def _run_and_write(runner: EquationRunner, expr: str, out: Path, render: str, call: dict, where: dict, overwrite):
    """Every check before anything loads or runs, then the run, its pictures and its files in `out`. `where`:
    base_dir (of the equation's files) and generator_device. Returns (EquationResult, pictures or None)."""
    plan = runner.validate(expr, base_dir=where["base_dir"])  # every error, before anything loads or runs
    runner.check_pictures(plan)
    check_output(out, overwrite=overwrite, folder=True, what="--out")
    check_renderable(runner.models.renderer_name(render), plan)  # before the renderer loads
    renderer = runner.models.renderer(render)
    result = runner.run(plan, **call, **where, progress=True)
    pictures = None
    if renderer is not None:
        pictures = render_steps(renderer, result, call["seed"], where["generator_device"])
    renderer_name = runner.models.renderer_name(render) if renderer is not None else None
    if overwrite:
        clear_result(out)  # no picture or step of the earlier result stays beside the new one
    write_result(result, out, pictures, renderer_name)
    return result, pictures


def _summary(result, pictures: dict | None, out: Path) -> str:
    """The line a finished run prints."""
    n_calls = sum(1 for s in result.computed if s.op == "call")
    return (
        f"ran {n_calls} operator step{'s' * (n_calls != 1)} ({result.num_cached} from cache) in "
        f"{result.seconds:.1f} s; wrote {tuple(result.output.shape)} embeddings"
        + (f" and {len(pictures['output'])} picture(s)" if pictures else " (no renderer: embeddings only)")
        + f" to {out}/ — reproduce with `pops apply --replay {out / 'record.json'}`"
    )


DROP_WORDS = ("-", "none", "_")


def call_equation(name: str, inputs: list[str]) -> str:
    """`pops apply texturing a.jpg b.jpg` as an equation: `texturing(a.jpg, b.jpg)` (paths quoted as needed; a
    text slot's input is a word, '-'/'none'/'_' drops a slot). `name` is an operator or one of its short names."""
    spec = get_spec(operator_names()[name])
    args = []
    for i, text in enumerate(inputs):
        if text.lower() in DROP_WORDS:
            args.append(Drop())
        elif i < spec.num_slots and spec.slots[i].kind == "text":
            args.append(Text(text))
        else:
            args.append(File(text))
    return format_node(Call(name, tuple(args)))
