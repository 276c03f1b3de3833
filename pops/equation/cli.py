"""`pops apply "EQUATION" --models DIR`: evaluate an equation, render it, and write a reproducible record.

Output folder:

    OUT/output.safetensors        the result, (num_samples, D), the record in its metadata
    OUT/output_<i>.png            the rendered samples (when a renderer is available)
    OUT/steps/<label>.safetensors every intermediate step (and steps/<label>_<i>.png)
    OUT/record.json               equation, seeds, settings, models and input digests; `--replay` re-runs it
    OUT/.cache/                   cached step embeddings, reused by the next run into the same folder
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from pops.embeddings_io import atomic_write


def output_folder(out_dir: str | Path) -> Path:
    """`--out x.safetensors` (the single-operator default) names the folder `x/` for an equation."""
    out = Path(out_dir).expanduser()
    return out.with_suffix("") if out.suffix == ".safetensors" else out


def step_filename(label: str) -> str:
    """A file-safe name for a step label ("step 2" -> "step_2")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "step"


def parse_step_seeds(items: list[str] | dict | None) -> dict[str, int]:
    """`["t=3", "output=7"]` (the CLI's --step-seed values) -> {"t": 3, "output": 7}."""
    if not items:
        return {}
    if isinstance(items, dict):
        return {str(k): int(v) for k, v in items.items()}
    seeds = {}
    for item in items:
        label, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"--step-seed expects LABEL=SEED (e.g. output=7), got {item!r}")
        seeds[label.strip()] = int(value)
    return seeds


def read_record(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no such record: {path}")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON record ({exc})") from None
    from pops.equation.evaluator import RECORD_FORMAT

    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or "equation" not in record:
        raise ValueError(f"{path}: not an equation record written by `pops apply` (format {RECORD_FORMAT})")
    return record


def _check_inputs_unchanged(record: dict) -> None:
    from pops.equation.cache import file_digest

    for name, digest in (record.get("files") or {}).items():
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"cannot replay: input {name} no longer exists")
        if file_digest(path) != digest:
            raise ValueError(f"cannot replay: input {name} changed since the record was written")


def render_steps(renderer, result, seed: int) -> dict[str, list]:
    """label -> PIL images of every computed step (each step rendered alone, so pictures do not depend on batching)."""
    import torch

    pictures = {}
    for step in result.computed:
        generator = torch.Generator("cpu").manual_seed(int(seed))
        embeds = result.output if step.label == "output" else step.embeds
        pictures[step.label] = renderer.render(embeds, generator=generator)
    return pictures


def write_result(result, out: Path, pictures: dict[str, list] | None, renderer_name: str | None) -> dict:
    """Write embeddings, pictures and record.json (last, so a folder with a record is complete)."""
    from pops.embeddings_io import save_embeddings

    record = dict(result.record, renderer=renderer_name)
    files = {"output": "output.safetensors", "images": [], "steps": {}}
    save_embeddings(out / "output.safetensors", result.output, record)
    for step in result.computed:
        name = step_filename(step.label)
        if step.label != "output":
            save_embeddings(out / "steps" / f"{name}.safetensors", step.embeds, {"step": step.text, "label": step.label})
            files["steps"][step.label] = f"steps/{name}.safetensors"
        for i, image in enumerate((pictures or {}).get(step.label, [])):
            rel = f"output_{i}.png" if step.label == "output" else f"steps/{name}_{i}.png"
            atomic_write(out / rel, lambda tmp, image=image: image.save(tmp, format="PNG"))
            if step.label == "output":
                files["images"].append(rel)
    record["outputs"] = files
    atomic_write(out / "record.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))
    return record


def run_equation_cli(
    expr: str | None,
    models_dir: str | Path | None,
    out_dir: str | Path,
    seed: int = 0,
    guidance_scale: float | None = None,
    steps: int = 25,
    num_samples: int = 1,
    render: str = "auto",
    *,
    layout: str = "compact",
    step_seeds: list[str] | dict | None = None,
    replay: str | Path | None = None,
    cache_dir: str | Path | None = None,
    base_dir: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
):
    """Evaluate `expr` with the operators under `models_dir`, render it and write everything to `out_dir`.

    `replay`: a record.json from an earlier run; its equation, seeds and settings are used (`expr` must be None),
    `models_dir` may point the run at a moved models folder. Bad input raises ValueError / FileNotFoundError (the
    CLI turns them into a one-line error). Returns the EquationResult.
    """
    from pops.equation.evaluator import Evaluator
    from pops.equation.models import RENDERER_CHOICES

    echo = echo or _echo
    if render not in RENDERER_CHOICES:
        raise ValueError(f"unknown renderer {render!r}; choose one of {', '.join(RENDERER_CHOICES)}")
    seeds = parse_step_seeds(step_seeds)
    if replay is not None:
        if expr:
            raise ValueError("give either an equation or --replay RECORD, not both")
        record = read_record(replay)
        _check_inputs_unchanged(record)
        expr = record["equation"]
        seed, seeds = int(record["seed"]), {str(k): int(v) for k, v in record["seeds"].items()}
        guidance_scale, steps = record["guidance_scale"], int(record["num_inference_steps"])
        num_samples, layout = int(record["num_samples"]), record["layout"]
        base_dir = record.get("base_dir")
        models_dir = models_dir or record.get("models")
        render = (record.get("renderer") or "none") if render == "auto" else render
    if not expr or not expr.strip():
        raise ValueError("give an equation, e.g. 'scene(texture(chair.png, wood.png), beach.png)'")
    if models_dir is None:
        raise ValueError("give --models DIR: the folder holding the trained operators")
    out = output_folder(out_dir)
    evaluator = Evaluator(models_dir, cache_dir=Path(cache_dir) if cache_dir else out / ".cache")
    plan = evaluator.validate(expr, base_dir=base_dir)  # every error, before anything loads or runs
    renderer = evaluator.models.renderer(render)
    result = evaluator.evaluate(
        plan, seed=seed, seeds=seeds, guidance_scale=guidance_scale, num_inference_steps=steps,
        num_samples=num_samples, layout=layout, base_dir=base_dir, progress=True,
    )  # fmt: skip
    pictures = render_steps(renderer, result, seed) if renderer is not None else None
    renderer_name = _renderer_name(evaluator.models, render) if renderer is not None else None
    write_result(result, out, pictures, renderer_name)
    n_calls = sum(1 for s in result.computed if s.kind == "call")
    echo(
        f"evaluated {n_calls} operator step{'s' * (n_calls != 1)} ({result.num_cached} from cache) in "
        f"{result.seconds:.1f} s; wrote {tuple(result.output.shape)} embeddings"
        + (f" and {len(pictures['output'])} picture(s)" if pictures else " (no renderer: embeddings only)")
        + f" to {out}/ — reproduce with `pops apply --replay {out / 'record.json'}`"
    )
    return result


def _renderer_name(models, render: str) -> str:
    if render != "auto":
        return render
    from pops.equation.models import AUTO_ORDER

    present = models.renderer_names()
    return next((n for n in AUTO_ORDER if n in present), present[0] if present else "none")


def _echo(message: str) -> None:
    import typer

    typer.echo(message)
