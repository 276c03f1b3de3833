"""Operator equations: chain pOps operators like algebra, e.g.

    let t = texture(chair.png, wood.png)
    scene(t, beach.png)

`parse` gives a syntax tree, `format_equation` prints it back, `validate` checks it against the models (before
anything runs) and `apply` runs it (with an `EquationRunner`), returning the output embeddings and every
intermediate. The language is described in docs/EQUATIONS.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pops.equation.ast import Call, Drop, File, Let, Node, Program, Text, Var, WeightedSum
from pops.equation.diagnostics import EquationError, EquationFileError
from pops.equation.parser import parse
from pops.equation.printer import format_equation

__all__ = [
    "Call",
    "Drop",
    "File",
    "Let",
    "Node",
    "Program",
    "Text",
    "Var",
    "WeightedSum",
    "EquationError",
    "EquationFileError",
    "parse",
    "format_equation",
    "validate",
    "apply",
    "EquationRunner",
    "EquationResult",
    "ModelSet",
]

# Runners for models folders, so repeated `pops.apply` calls reuse loaded operators and cached steps.
_RUNNERS: dict[tuple, Any] = {}
_MAX_RUNNERS = 2


def __getattr__(name):
    # The runner side imports torch; keep `from pops.equation import parse` light.
    if name in ("EquationRunner", "EquationResult"):
        from pops.equation import runner

        return getattr(runner, name)
    if name == "ModelSet":
        from pops.models.model_set import ModelSet

        return ModelSet
    if name == "validate":
        from pops.equation.validate import validate

        return validate
    raise AttributeError(f"module 'pops.equation' has no attribute {name!r}")


def apply(
    equation: str | Program,
    models: Any,
    *,
    seed: int = 0,
    seeds: dict[str, int] | None = None,
    num_samples: int = 1,
    base_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    sampling=None,
    **values,
):
    """Run an equation and return an `EquationResult` (`.output` (num_samples, D), `.intermediates`, `.record`).

    `models`: a models folder (see pops.models.model_set), a `ModelSet`, or operators in memory (an `Operator`, a
    list, or a dict kind -> Operator). `seed` seeds every operator step, `seeds={"t": 3}` overrides single steps.
    How each step samples: `sampling` (a pops.core.sampling.SamplingConfig) or its values as keywords —
    `guidance_scale`, `num_inference_steps`, `sampler`, `draws`, `layout` — each None the operator's own (its
    registry entry's guidance, the reference's unclip 25 and one draw, unless its folder stores others).
    Relative file paths are resolved against `base_dir` (default: the current folder).
    """
    from pops.equation.runner import EquationRunner

    if isinstance(models, (str, Path)):
        key = (str(Path(models).expanduser().resolve()), str(cache_dir))
        if key not in _RUNNERS:
            while len(_RUNNERS) >= _MAX_RUNNERS:
                _RUNNERS.pop(next(iter(_RUNNERS)))
            _RUNNERS[key] = EquationRunner(models, cache_dir=cache_dir)
        runner = _RUNNERS[key]
    else:
        runner = EquationRunner(models, cache_dir=cache_dir)
    run = dict(seed=seed, seeds=seeds, num_samples=num_samples, base_dir=base_dir, progress=progress)
    return runner.run(equation, sampling=sampling, **run, **values)
