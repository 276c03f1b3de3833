"""The evaluation harness: sample operators on held-out test pairs and score them against the baselines; choose an
operator's guidance scale and sampler on validation classes (keeping the default unless a candidate beats it by more
than the noise: pops.evaluation.choice). What `pops demo` and `pops eval` both run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

import torch
from tqdm.auto import tqdm

from pops.base import checks
from pops.base.devices import make_generator
from pops.core.sampling import SamplingConfig
from pops.embeddings.pairs import Pairs
from pops.evaluation.choice import Score, Z, keep_unless_better, paired_scores
from pops.evaluation.metrics import (
    averaging_baseline,
    class_prototypes,
    evaluate_embeddings,
    input_a_baseline,
    nearest_classes,
)
from pops.evaluation.table import MetricsTable
from pops.evaluation.testsets import OperatorData
from pops.operators.operator import Operator


def sample_pairs(
    op: Operator, pairs: Pairs, sampling: SamplingConfig, *, seed: int, generator_device: str = "cpu"
) -> torch.Tensor:
    """The operator's outputs for every sample of `pairs` (absent slots are the null condition) as `sampling` says
    (None values: the operator's own), one generator drawn on `generator_device` ("cuda" draws as the reference does
    on a GPU)."""
    out = op.sample_batch(pairs, sampling=sampling, generator=make_generator(seed, generator_device))
    return out.float().cpu()  # scored against CPU targets, wherever the operator ran


@dataclass(frozen=True)
class Choice:
    """What `choose_sampling` chose (a complete SamplingConfig), the default it was held against, every candidate's
    validation `Score` by label, and each candidate's per-sample validation top-1 (to compare with another model)."""

    sampling: SamplingConfig
    default: str
    scores: dict[str, Score]
    per_sample: dict[str, torch.Tensor]

    @property
    def chosen(self) -> torch.Tensor:
        return self.per_sample[self.sampling.label]


def choose_sampling(
    op: Operator,
    data: OperatorData,
    scales,
    samplers: Sequence[SamplingConfig] = (SamplingConfig(draws=1),),
    *,
    default: SamplingConfig | None = None,
    seeds: int = 1,
    seed: int = 0,
    z: float = Z,
) -> Choice:
    """The sampling to ship, among `scales` × `samplers` (each a SamplingConfig without a scale; None values: the
    operator's own; the default: its own sampler and steps, one draw): `default` (the operator's own when None; it
    is always a candidate) unless a candidate's validation top-1 beats it by more than `z` standard errors of the
    paired difference (pops.evaluation.choice). Each candidate is scored on the validation pairs — training classes
    kept out of training, never a test class — over `seeds` sampling seeds from `seed`."""
    default = op.call_config(default)
    configs = candidate_samplings(op, scales, samplers, default)
    per_sample = {label: validation_hits(op, data, config, seeds, seed) for label, config in configs.items()}
    scores = paired_scores(per_sample, default.label)
    return Choice(configs[keep_unless_better(scores, default.label, z)], default.label, scores, per_sample)


def candidate_samplings(
    op: Operator, scales, samplers: Sequence[SamplingConfig], default: SamplingConfig
) -> dict[str, SamplingConfig]:
    """Every complete candidate of `choose_sampling` by label: `scales` (and the default's) × `samplers`, sampler by
    sampler, scales ascending; the default among them."""
    configs = {}
    for sampler in samplers:
        for scale in sorted({*scales, default.guidance_scale}):
            config = op.call_config(replace(sampler, guidance_scale=scale))
            configs.setdefault(config.label, config)
    configs.setdefault(default.label, op.call_config(default))
    return configs


def validation_hits(op: Operator, data: OperatorData, sampling: SamplingConfig, seeds: int, seed: int) -> torch.Tensor:
    """Per validation sample, the share of `seeds` sampling seeds whose output retrieves its true class."""
    pairs = data.validation
    return torch.stack(
        [hits(sample_pairs(op, pairs, sampling, seed=seed + s), pairs, data) for s in range(seeds)]
    ).mean(0)


def hits(out: torch.Tensor, pairs: Pairs, data: OperatorData) -> torch.Tensor:
    """1.0 where an output's nearest class prototype is its sample's true class, else 0.0."""
    names, protos = class_prototypes(data.gallery, data.gallery_classes)
    predicted = nearest_classes(out, names, protos)
    return torch.tensor([p == t for p, t in zip(predicted, true_classes(pairs, data))], dtype=torch.float64)


def test_top1(op: Operator, data: OperatorData, configs: Sequence[SamplingConfig], seed: int = 0) -> dict[str, float]:
    """Each sampling's top-1 on the held-out test pairs, one sampling seed: what the choice would have scored had it
    shipped that candidate (its regret, after the fact — never used to choose)."""
    pairs = data.tests["test"]
    return {c.label: float(hits(sample_pairs(op, pairs, c, seed=seed), pairs, data).mean()) for c in configs}


def image_inputs(pairs: Pairs) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The image slots of `pairs` and their presence (what the baselines average)."""
    idx = list(pairs.spec.image_slots)
    return [pairs.slots[i] for i in idx], pairs.present[:, idx]


def true_classes(pairs: Pairs, data: OperatorData) -> list[str]:
    """The true class name of every sample of test `pairs` (their own class list, else the operator's)."""
    classes = pairs.info.get("classes") or data.classes
    return [classes[i] for i in pairs.class_ids.tolist()]


def row_name(kind: str, split: str) -> str:
    """The table row of one test split: the operator's name for "test", e.g. "instruct (synonyms)" for the others."""
    return kind if split == "test" else f"{kind} ({split.removeprefix('test_')})"


def row_kind(row: str) -> str:
    """The operator of a table row (`row_name`'s inverse): "instruct" for "instruct (synonyms)"."""
    return row.split(" (")[0]


def evaluate_operators(
    operators: dict[str, Operator],
    data: dict[str, OperatorData],
    *,
    seeds: int = 3,
    guidance_scales=(),
    extra_seeds: int = 1,
    progress: bool = True,
    sampling: SamplingConfig = SamplingConfig(),
    generator_device: str = "cpu",
):
    """A MetricsTable: per operator and test split (the splits in its data: "test" and the registry's extra test
    splits) the trained operator at its own guidance scale over `seeds` seeds ("pops"), at the registry's scale and
    each of `guidance_scales` over `extra_seeds` ("pops g=s"; none when `extra_seeds` is 0; the registry's scale is
    n/a for a distilled student, whose guidance is in its weights), the averaging baseline, input A only, and the
    oracle. `sampling`: the sampler, steps and draws of every call (None: each operator's own; its scale is the one
    varied); `generator_device` where the noise is drawn (pops.base.devices.make_generator).
    Returns (table, outputs): outputs[row] holds the first seed's embeddings at the operator's own scale,
    outputs["row/g=s"] at the other scales and outputs["row/averaging"] the baseline, for the report's grids."""
    runs = _sampling_runs(operators, data, seeds, guidance_scales, extra_seeds)
    _check_work(operators, data, runs, sampling)  # refused at once when no machine would finish it in a day
    table, outputs = MetricsTable(), {}
    bar = tqdm(total=sum(len(seeds) for *_, seeds in runs), desc="evaluating", unit="run", disable=not progress)
    for i, (kind, split, scale, seeds_run) in enumerate(runs):
        op, pairs = operators[kind], data[kind].tests[split]
        row, own, score = row_name(kind, split), scale == op.guidance_scale, _scorer(pairs, data[kind])
        method = "pops" if own else f"pops g={scale:g}"
        if op.guidance_folded and scale == op.spec.guidance_scale and not own:
            # A distilled student at the registry's scale would be guided a second time: not a number to show.
            table.add_not_applicable(row, method, n=len(pairs))
        else:
            config, scores = replace(sampling, guidance_scale=scale), []
            for seed in seeds_run:
                out = sample_pairs(op, pairs, config, seed=seed, generator_device=generator_device)
                scores.append(score(out))
                if seed == 0:  # the first seed's outputs, for the report's pictures
                    outputs[row if own else f"{row}/g={scale:g}"] = out
                bar.update(1)
            table.add_runs(row, method, scores, n=len(pairs))
        if i + 1 == len(runs) or runs[i + 1][:2] != (kind, split):  # the split's last run: its references
            _add_baselines(table, outputs, row, pairs, score)
    bar.close()
    return table, outputs


def _sampling_runs(operators: dict, data: dict, seeds: int, guidance_scales, extra_seeds: int) -> list[tuple]:
    """(kind, split, scale, seeds) of every sampling run, the operator's own scale first: `seeds` seeds at its own,
    `extra_seeds` at the registry's and each of `guidance_scales` (none when 0)."""
    runs = []
    for kind, op in operators.items():
        for split in data[kind].tests:
            own = op.guidance_scale
            for scale in dict.fromkeys([own, op.spec.guidance_scale, *guidance_scales]):
                count = seeds if scale == own else extra_seeds
                if count:
                    runs.append((kind, split, scale, range(count)))
    return runs


def _check_work(operators: dict, data: dict, runs: list[tuple], sampling: SamplingConfig) -> None:
    """Refuse, before any sampling, an evaluation no machine would finish in a day (pops.base.checks.work)."""
    flops = 0.0
    for kind, split, scale, seeds in runs:
        op = operators[kind]
        config = op.call_config(replace(sampling, guidance_scale=scale))
        flops += op.sampling_flops(len(data[kind].tests[split]), config) * len(seeds)
    what = f"evaluating {sum(len(s) for *_, s in runs)} sampling run(s)"
    checks.work(flops, what, "ask for fewer --seeds", next(iter(operators.values())).device)


def _scorer(pairs: Pairs, data: OperatorData):
    """Cosine to the target and retrieval of the true class among the gallery's prototypes, for outputs on `pairs`."""
    names, protos = class_prototypes(data.gallery, data.gallery_classes)
    truth = true_classes(pairs, data)
    return partial(evaluate_embeddings, targets=pairs.target, true_classes=truth, proto_names=names, protos=protos)


def _add_baselines(table: MetricsTable, outputs: dict, row: str, pairs: Pairs, score) -> None:
    """The averaging baseline, input A only and the oracle (the target itself) on one test split."""
    images, present = image_inputs(pairs)
    averaging = averaging_baseline(images, present)
    outputs[f"{row}/averaging"] = averaging
    for method, x in (
        ("averaging", averaging),
        ("input_a", input_a_baseline(images, present)),
        ("oracle", pairs.target),
    ):
        table.add(row, method, **score(x), n=len(pairs))
