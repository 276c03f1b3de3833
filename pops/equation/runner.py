"""Running a validated plan: encode the inputs, sample the operators in batches, cache every step.

Seeds. Every operator step samples with the run's `seed` unless `seeds={label: n}` overrides it (labels: the
variable a step is bound to, `output`, or `step N`). Sample i of a step draws its noise from a generator seeded
`seed + i`, one generator per row, so a step's result does not depend on what it is batched with: steps of the same
operator that are ready together run as one `Operator.sample` call, and a single sample can be reproduced alone.

Caching. A step's key covers its operator's weights, its inputs' keys, its seed and its settings (see cache.py);
re-running with a new seed for the last step re-samples that step only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pops.base import checks
from pops.base.devices import make_generator
from pops.base.files import file_digest
from pops.base.readers import read_image, reason
from pops.core.sampler import get_sampler
from pops.embeddings.files import load_embeddings
from pops.equation.diagnostics import EquationError
from pops.equation.printer import format_equation
from pops.equation.step_cache import StepCache, make_key
from pops.equation.validate import Plan, Step, validate
from pops.models.folder import ModelSet

RECORD_FORMAT = "pops-equation/1"


@dataclass
class StepResult:
    label: str  # calls and sums: variable, "output" or "step N"; inputs: ""
    text: str
    op: str  # image | embedding | text | drop | call | sum
    operator: str | None = None  # calls: the operator's registry kind
    seed: int | None = None
    guidance_scale: float | None = None
    embeds: torch.Tensor | None = None  # (rows, D) raw embeddings for embedding-valued steps
    cached: bool = False
    key: str | None = None


@dataclass
class EquationResult:
    plan: Plan
    output: torch.Tensor  # (num_samples, D)
    steps: list[StepResult]  # one per plan step, in plan order
    record: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def intermediates(self) -> dict[str, torch.Tensor]:
        """label -> (B, D) for every computed step (operator calls and sums, the output included)."""
        return {s.label: s.embeds for s in self.computed}

    @property
    def computed(self) -> list[StepResult]:
        """Operator calls and sums in evaluation order, and the output step even when it is a bare input."""
        return [s for i, s in enumerate(self.steps) if s.op in ("call", "sum") or i == self.plan.output]

    @property
    def num_cached(self) -> int:
        return sum(s.cached for s in self.steps if s.op == "call")


def _fail(step: Step, message: str) -> EquationError:
    if step.pos.line == 0:
        return EquationError(message, token=step.text)
    return EquationError(message, step.pos.line, step.pos.column, step.text)


class EquationRunner:
    """Runs equations against one set of models, keeping loaded operators and the cache between calls."""

    def __init__(self, models: Any, *, cache: StepCache | None = None, cache_dir: str | Path | None = None):
        self.models = ModelSet.coerce(models)
        self.cache = cache if cache is not None else StepCache(cache_dir)

    def validate(self, equation, *, base_dir: str | Path | None = None) -> Plan:
        return equation if isinstance(equation, Plan) else validate(equation, self.models, base_dir=base_dir)

    @staticmethod
    def check_pictures(plan: Plan) -> None:
        """Decode every picture the plan reads: a file that is no picture (or a decompression bomb) is refused here,
        before any model loads — the real stack takes minutes to load what such a file would waste."""
        for step in plan.steps:
            if step.op == "image":
                _open_image(step)

    def run(
        self,
        equation,
        *,
        seed: int = 0,
        seeds: dict[str, int] | None = None,
        guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        num_samples: int = 1,
        layout: str = "compact",
        base_dir: str | Path | None = None,
        progress: bool = False,
        sampler: str | None = None,
        generator_device: str = "cpu",
        draws: int | None = None,
    ) -> EquationResult:
        """Run an equation (text, Program or Plan). `guidance_scale=None` uses each operator's own default,
        `sampler=None` each operator's own sampler (pops.core.sampler.SAMPLERS), `num_inference_steps=None` its steps
        (see Operator.sampling) and `draws=None` its draws (Operator.draws). `generator_device`: where the noise is
        drawn (pops.base.devices.make_generator; "cuda" gives the reference's numbers on a GPU)."""
        started = time.perf_counter()
        plan = self.validate(equation, base_dir=base_dir)
        if seeds is not None and not isinstance(seeds, dict):
            raise checks.BadValue(f"seeds must map step labels to seeds, got {type(seeds).__name__}")
        seeds = dict(seeds or {})
        _check_settings(plan, seed, seeds, num_inference_steps, num_samples, guidance_scale)
        if sampler is not None:
            get_sampler(sampler)
        if draws is not None:
            checks.count(draws, "draws")
        for kind in dict.fromkeys(s.operator for s in plan.steps if s.op == "call"):
            # one step's samples must fit before any picture is encoded (and cached into the output folder)
            self.models.operator(kind).check_memory(num_samples, layout, draws)
        results = [StepResult(s.label, s.text, s.op, s.operator) for s in plan.steps]
        persistent = [True] * len(plan.steps)

        self._inputs(plan, results, persistent, num_samples)
        calls = [s for s in plan.steps if s.op == "call"]
        bar = tqdm(total=len(calls), desc="equation", unit="step", disable=not progress)
        done: set[int] = {s.index for s in plan.steps if s.op not in ("call", "sum")}
        while len(done) < len(plan.steps):
            ready = [s for s in plan.steps if s.index not in done and all(i is None or i in done for i in s.inputs)]
            if not ready:  # cannot happen for a plan from validate(), which is a DAG in evaluation order
                raise RuntimeError("equation plan has a cycle")
            to_sample: list[Step] = []
            for step in ready:
                res = results[step.index]
                children = [results[i].key if i is not None else None for i in step.inputs]
                persistent[step.index] = all(persistent[i] for i in step.inputs if i is not None)
                if step.op == "sum":
                    res.key = make_key("sum", step.weights, children)
                    res.embeds = _weighted_sum([results[i].embeds for i in step.inputs], step.weights)
                    done.add(step.index)
                    continue
                res.seed = int(seeds.get(step.label, seed))
                op = self.models.operator(step.operator)
                res.guidance_scale = float(op.guidance_scale if guidance_scale is None else guidance_scale)
                fingerprint = self.models.fingerprint(step.operator)
                name, steps = op.sampling(sampler, num_inference_steps)
                count = op.draws if draws is None else draws
                persistent[step.index] &= fingerprint is not None
                res.key = make_key(
                    "call",
                    step.operator,
                    fingerprint or f"memory:{id(op)}",
                    children,
                    res.seed,
                    res.guidance_scale,
                    steps,
                    layout,
                    num_samples,
                    name,
                    # (keys of CPU noise and of one draw stay as they were before those options existed)
                    *([generator_device] if generator_device != "cpu" else []),
                    *([f"draws={count}"] if count != 1 else []),
                )
                hit = self.cache.get(res.key, persistent=persistent[step.index])
                if hit is not None:
                    res.embeds, res.cached = hit.clone(), True
                    done.add(step.index)
                    bar.update(1)
                else:
                    to_sample.append(step)
            for group in _groups(to_sample, results):
                self._sample(
                    group, plan, results, num_samples, num_inference_steps, layout, sampler, generator_device, draws
                )
                for step in group:
                    res = results[step.index]
                    meta = {"step": step.text, "op": step.operator, "seed": res.seed}
                    self.cache.put(res.key, res.embeds, persistent=persistent[step.index], metadata=meta)
                    done.add(step.index)
                bar.update(len(group))
        bar.close()
        output = _rows(results[plan.output].embeds, num_samples)
        result = EquationResult(plan, output, results, seconds=time.perf_counter() - started)
        result.record = self._record(
            plan, result, seed, guidance_scale, num_inference_steps, num_samples, layout, base_dir, sampler
        )
        result.record["generator_device"] = generator_device
        result.record["draws"] = draws
        return result

    # ----- leaves --------------------------------------------------------------------------------------------------
    def _inputs(self, plan: Plan, results: list[StepResult], persistent: list[bool], num_samples: int) -> None:
        """Encode every image (one batch, cached) and read every embedding file, checking widths and row counts."""
        dim = self.models.embedding_dim(plan.operators)
        images = [s for s in plan.steps if s.op == "image"]
        if images:
            encoder, encoder_id = self.models.image_encoder(plan.operators)
            if encoder is None:
                raise _fail(
                    images[0], "images need an image encoder and the operators carry none; pass embedding files"
                )
            todo = []
            for step in images:
                res = results[step.index]
                persistent[step.index] = encoder_id is not None
                res.key = make_key("image", file_digest(step.path), encoder_id or f"memory:{id(encoder)}")
                hit = self.cache.get(res.key, persistent=persistent[step.index])
                res.embeds, res.cached = (hit.clone(), True) if hit is not None else (None, False)
                if res.embeds is None:
                    todo.append(step)
            if todo:
                pictures = [_open_image(step) for step in todo]
                encoded = encoder.encode(pictures, batch_size=32).detach().float().cpu()
                for step, row in zip(todo, encoded):
                    res = results[step.index]
                    res.embeds = row[None]
                    self.cache.put(
                        res.key, res.embeds, persistent=persistent[step.index], metadata={"image": str(step.path)}
                    )
        for step in plan.steps:
            res = results[step.index]
            if step.op == "embedding":
                try:
                    res.embeds, _ = load_embeddings(step.path)
                except (ValueError, OSError) as exc:
                    raise _fail(step, f"cannot read embeddings: {reason(exc)}") from None
                res.key = make_key("embedding", file_digest(step.path))
                if res.embeds.shape[0] not in (1, num_samples):
                    raise _fail(step, f"has {res.embeds.shape[0]} rows; expected 1 or num_samples ({num_samples})")
            elif step.op == "text":
                res.key = make_key("text", step.value)
            if res.embeds is not None and dim is not None and res.embeds.shape[1] != dim:
                raise _fail(step, f"embeddings are {res.embeds.shape[1]}-d but the operators work in {dim}-d")

    # ----- operator steps ----------------------------------------------------------------------------------------
    def _sample(
        self, group: list[Step], plan: Plan, results, num_samples: int, steps, layout: str, sampler, gen_device, draws
    ) -> None:
        """One Operator.sample call for steps of one operator with the same guidance and dropped slots."""
        op = self.models.operator(group[0].operator)
        op.check_memory(len(group) * num_samples, layout, draws)  # before the inputs are gathered for every sample
        spec = op.spec
        inputs: list[Any] = []
        for j, slot in enumerate(spec.slots):
            if group[0].inputs[j] is None:
                inputs.append(None)
            elif slot.kind == "text":
                inputs.append([plan.steps[s.inputs[j]].value for s in group for _ in range(num_samples)])
            else:
                inputs.append(torch.cat([_rows(results[s.inputs[j]].embeds, num_samples) for s in group]))
        generators = [
            make_generator(checks.offset_seed(results[s.index].seed, i), gen_device)
            for s in group
            for i in range(num_samples)
        ]
        out = op.sample(
            inputs,
            guidance_scale=results[group[0].index].guidance_scale,
            num_inference_steps=steps,
            generator=generators,
            layout=layout,
            sampler=sampler,
            draws=draws,
        )
        out = out.detach().float().cpu()
        for k, step in enumerate(group):
            results[step.index].embeds = out[k * num_samples : (k + 1) * num_samples]

    def _record(self, plan, result, seed, guidance_scale, steps, num_samples, layout, base_dir, sampler) -> dict:
        """Everything needed to reproduce the result with `pops apply --replay record.json`."""
        calls = [r for r in result.steps if r.op == "call"]
        files = {str(s.path): file_digest(s.path) for s in plan.steps if s.op in ("image", "embedding")}
        return {
            "format": RECORD_FORMAT,
            "equation": plan.source,
            "canonical": format_equation(plan.program),
            "seed": int(seed),
            "seeds": {r.label: r.seed for r in calls},
            "guidance_scale": guidance_scale,
            "guidance": {r.label: r.guidance_scale for r in calls},
            "num_inference_steps": None if steps is None else int(steps),
            "num_samples": int(num_samples),
            "layout": layout,
            "sampler": sampler,
            "base_dir": str(Path(base_dir).expanduser().resolve()) if base_dir is not None else str(Path.cwd()),
            "models": self.models.location(),
            "operators": {kind: self.models.where(kind) for kind in plan.operators},
            "files": files,
            "steps": [
                {"label": r.label, "text": r.text, "op": r.operator or r.op, "seed": r.seed, "cached": r.cached}
                for r in result.computed
            ],
        }


def _groups(steps: list[Step], results) -> list[list[Step]]:
    groups: dict[tuple, list[Step]] = {}
    for step in steps:
        pattern = tuple(i is None for i in step.inputs)
        groups.setdefault((step.operator, results[step.index].guidance_scale, pattern), []).append(step)
    return list(groups.values())


def _rows(embeds: torch.Tensor, n: int) -> torch.Tensor:
    return embeds.expand(n, -1) if embeds.shape[0] == 1 else embeds


def _weighted_sum(parts: list[torch.Tensor], weights) -> torch.Tensor:
    rows = max(p.shape[0] for p in parts)
    return sum(w * _rows(p, rows) for w, p in zip(weights, parts))


def _open_image(step: Step):
    try:
        return read_image(step.path)
    except (ValueError, OSError) as exc:
        raise _fail(step, f"cannot read image: {reason(exc)}") from None


def _check_settings(plan: Plan, seed, seeds, steps, num_samples, guidance_scale) -> None:
    """The run's numbers, with the same checks (and ranges) as Operator.sample and the CLI (pops.base.checks)."""
    checks.seed(seed, "seed")
    labels = [s.label for s in plan.steps if s.op == "call"]
    for label, value in seeds.items():
        if label not in labels:
            raise ValueError(f"no operator step named {label!r}; steps: {', '.join(labels) or 'none'}")
        checks.seed(value, f"seed for {label!r}")
    checks.steps(steps, "num_inference_steps")
    checks.count(num_samples, "num_samples")
    checks.guidance(guidance_scale, "guidance_scale")
