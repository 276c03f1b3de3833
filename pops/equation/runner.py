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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pops.base import checks
from pops.base.devices import make_generator
from pops.base.errors import BadValue, reason
from pops.base.files import file_digest
from pops.base.readers import read_image
from pops.core.sampling import SamplingConfig, call_sampling
from pops.embeddings.io import load_embeddings
from pops.equation.diagnostics import EquationError
from pops.equation.printer import format_equation
from pops.equation.step_cache import StepCache, make_key
from pops.equation.validate import Plan, Step, validate
from pops.models.model_set import ModelSet

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


@dataclass
class _Run:
    """One run of a plan: its settings and every step's result so far (`done`: the steps whose embeddings exist;
    `persistent[i]`: step i's result may be kept on disk — every model it depends on has a folder to fingerprint)."""

    plan: Plan
    sampling: SamplingConfig
    seed: int
    seeds: dict[str, int]
    num_samples: int
    generator_device: str
    results: list[StepResult]
    persistent: list[bool]
    done: set[int]

    def ready(self) -> list[Step]:
        """The steps not yet done whose inputs all are."""
        return [
            s
            for s in self.plan.steps
            if s.index not in self.done and all(i is None or i in self.done for i in s.inputs)
        ]


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
        sampling: SamplingConfig | None = None,
        seed: int = 0,
        seeds: dict[str, int] | None = None,
        num_samples: int = 1,
        base_dir: str | Path | None = None,
        progress: bool = False,
        generator_device: str = "cpu",
        **values,
    ) -> EquationResult:
        """Run an equation (text, Program or Plan): read its inputs, then, until every step is done, compute the sums
        and read cached calls of the steps that are ready, and sample the rest in one batch per operator. How every
        operator step samples: `sampling`, or its values as keywords (guidance_scale, num_inference_steps, sampler,
        draws, layout; pops.core.sampling.call_sampling), each None that operator's own. `generator_device`: where
        the noise is drawn (pops.base.devices.make_generator; "cuda" gives the reference's numbers on a GPU)."""
        started = time.perf_counter()
        run = self._start(equation, sampling, values, seed, seeds, num_samples, base_dir, generator_device)
        calls = [s for s in run.plan.steps if s.op == "call"]
        with tqdm(total=len(calls), desc="equation", unit="step", disable=not progress) as bar:
            while len(run.done) < len(run.plan.steps):
                ready = run.ready()
                if not ready:  # cannot happen for a plan from validate(), which is a DAG in evaluation order
                    raise RuntimeError("equation plan has a cycle")
                to_sample = self._compute_or_recall(run, ready)
                bar.update(sum(s.op == "call" for s in ready) - len(to_sample))
                for group in _groups(to_sample, run.results):
                    self._sample(run, group)
                    bar.update(len(group))
        output = _rows(run.results[run.plan.output].embeds, num_samples)
        result = EquationResult(run.plan, output, run.results, seconds=time.perf_counter() - started)
        result.record = self._record(run, result, base_dir)
        return result

    def _start(self, equation, sampling, values, seed, seeds, num_samples, base_dir, generator_device) -> _Run:
        """The run's checked settings and plan, its inputs read (every bad value refused before any sampling)."""
        sampling = call_sampling(sampling, **values)
        plan = self.validate(equation, base_dir=base_dir)
        seeds = _checked_seeds(plan, seed, seeds)
        checks.count(num_samples, "num_samples")
        for kind in dict.fromkeys(s.operator for s in plan.steps if s.op == "call"):
            # one step's samples must fit before any picture is encoded (and cached into the output folder)
            self.models.operator(kind).check_memory(num_samples, sampling.layout, sampling.draws)
        results = [StepResult(s.label, s.text, s.op, s.operator) for s in plan.steps]
        done = {s.index for s in plan.steps if s.op not in ("call", "sum")}
        run = _Run(plan, sampling, seed, seeds, num_samples, generator_device, results, [True] * len(results), done)
        self._inputs(run)
        return run

    def _compute_or_recall(self, run: _Run, ready: list[Step]) -> list[Step]:
        """Each ready step's cache key; sums are computed and cached calls read back. Returns the calls to sample."""
        to_sample: list[Step] = []
        for step in ready:
            res = run.results[step.index]
            children = [run.results[i].key if i is not None else None for i in step.inputs]
            run.persistent[step.index] = all(run.persistent[i] for i in step.inputs if i is not None)
            if step.op == "sum":
                res.key = make_key("sum", step.weights, children)
                res.embeds = _weighted_sum([run.results[i].embeds for i in step.inputs], step.weights)
                run.done.add(step.index)
                continue
            res.seed = int(run.seeds.get(step.label, run.seed))
            res.key = self._call_key(run, step, children)
            hit = self.cache.get(res.key, persistent=run.persistent[step.index])
            if hit is not None:
                res.embeds, res.cached = hit.clone(), True
                run.done.add(step.index)
            else:
                to_sample.append(step)
        return to_sample

    def _call_key(self, run: _Run, step: Step, children: list) -> str:
        """An operator step's cache key: what determines its result (weights, inputs, seed, its whole sampling)."""
        op = self.models.operator(step.operator)
        config = op.call_config(run.sampling)
        run.results[step.index].guidance_scale = config.guidance_scale
        fingerprint = self.models.fingerprint(step.operator)
        run.persistent[step.index] &= fingerprint is not None
        return make_key(
            "call",
            step.operator,
            fingerprint or f"memory:{id(op)}",
            children,
            run.results[step.index].seed,
            config.guidance_scale,
            config.num_inference_steps,
            config.layout,
            run.num_samples,
            config.sampler,
            # (keys of CPU noise and of one draw stay as they were before those options existed)
            *([run.generator_device] if run.generator_device != "cpu" else []),
            *([f"draws={config.draws}"] if config.draws != 1 else []),
        )

    # ----- leaves --------------------------------------------------------------------------------------------------
    def _inputs(self, run: _Run) -> None:
        """Encode every image (one batch, cached) and read every embedding file, checking widths and row counts."""
        plan, results, num_samples = run.plan, run.results, run.num_samples
        dim = self.models.embedding_dim(plan.operators)
        self._encode_images(run, [s for s in plan.steps if s.op == "image"])
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

    def _encode_images(self, run: _Run, images: list[Step]) -> None:
        """Every picture's embedding: from the cache, else encoded in one batch (and cached)."""
        if not images:
            return
        encoder, encoder_id = self.models.image_encoder(run.plan.operators)
        if encoder is None:
            raise _fail(images[0], "images need an image encoder and the operators carry none; pass embedding files")
        todo = []
        for step in images:
            res = run.results[step.index]
            run.persistent[step.index] = encoder_id is not None
            res.key = make_key("image", file_digest(step.path), encoder_id or f"memory:{id(encoder)}")
            hit = self.cache.get(res.key, persistent=run.persistent[step.index])
            res.embeds, res.cached = (hit.clone(), True) if hit is not None else (None, False)
            if res.embeds is None:
                todo.append(step)
        if todo:
            encoded = encoder.encode([_open_image(step) for step in todo], batch_size=32).detach().float().cpu()
            for step, row in zip(todo, encoded):
                res = run.results[step.index]
                res.embeds = row[None]
                meta = {"image": str(step.path)}
                self.cache.put(res.key, res.embeds, persistent=run.persistent[step.index], metadata=meta)

    # ----- operator steps ----------------------------------------------------------------------------------------
    def _sample(self, run: _Run, group: list[Step]) -> None:
        """One Operator.sample call for steps of one operator with the same guidance and dropped slots; each result
        cached."""
        op = self.models.operator(group[0].operator)
        n, results = run.num_samples, run.results
        op.check_memory(len(group) * n, run.sampling.layout, run.sampling.draws)  # before the inputs are gathered
        inputs: list[Any] = []
        for j, slot in enumerate(op.spec.slots):
            if group[0].inputs[j] is None:
                inputs.append(None)
            elif slot.kind == "text":
                inputs.append([run.plan.steps[s.inputs[j]].value for s in group for _ in range(n)])
            else:
                inputs.append(torch.cat([_rows(results[s.inputs[j]].embeds, n) for s in group]))
        seeds = [checks.offset_seed(results[s.index].seed, i) for s in group for i in range(n)]
        generators = [make_generator(seed, run.generator_device) for seed in seeds]
        sampling = replace(run.sampling, guidance_scale=results[group[0].index].guidance_scale)
        out = op.sample(inputs, sampling=sampling, generator=generators).detach().float().cpu()
        for k, step in enumerate(group):
            res = results[step.index]
            res.embeds = out[k * n : (k + 1) * n]
            meta = {"step": step.text, "op": step.operator, "seed": res.seed}
            self.cache.put(res.key, res.embeds, persistent=run.persistent[step.index], metadata=meta)
            run.done.add(step.index)

    def _record(self, run: _Run, result: EquationResult, base_dir) -> dict:
        """Everything needed to reproduce the result with `pops apply --replay record.json`."""
        plan, sampling = run.plan, run.sampling
        calls = [r for r in result.steps if r.op == "call"]
        files = {str(s.path): file_digest(s.path) for s in plan.steps if s.op in ("image", "embedding")}
        return {
            "format": RECORD_FORMAT,
            "equation": plan.source,
            "canonical": format_equation(plan.program),
            "seed": int(run.seed),
            "seeds": {r.label: r.seed for r in calls},
            "guidance_scale": sampling.guidance_scale,
            "guidance": {r.label: r.guidance_scale for r in calls},
            "num_inference_steps": sampling.num_inference_steps,
            "num_samples": int(run.num_samples),
            "layout": sampling.layout,
            "sampler": sampling.sampler,
            "base_dir": str(Path(base_dir).expanduser().resolve()) if base_dir is not None else str(Path.cwd()),
            "models": self.models.location(),
            "operators": {kind: self.models.where(kind) for kind in plan.operators},
            "files": files,
            "steps": [
                {"label": r.label, "text": r.text, "op": r.operator or r.op, "seed": r.seed, "cached": r.cached}
                for r in result.computed
            ],
            "generator_device": run.generator_device,
            "draws": sampling.draws,
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


def _checked_seeds(plan: Plan, seed, seeds) -> dict[str, int]:
    """The run's seed and its per-step seeds, checked as the CLI checks them (pops.base.checks)."""
    checks.seed(seed, "seed")
    if seeds is not None and not isinstance(seeds, dict):
        raise BadValue(f"seeds must map step labels to seeds, got {type(seeds).__name__}")
    labels = [s.label for s in plan.steps if s.op == "call"]
    for label, value in (seeds or {}).items():
        if label not in labels:
            raise ValueError(f"no operator step named {label!r}; steps: {', '.join(labels) or 'none'}")
        checks.seed(value, f"seed for {label!r}")
    return dict(seeds or {})
