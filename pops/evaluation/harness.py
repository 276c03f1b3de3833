"""The evaluation harness: sample operators on held-out test pairs and score them against the baselines; choose an
operator's guidance scale and sampler on validation classes. What `pops demo` and `pops eval` both run.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from pops.base.devices import make_generator
from pops.embeddings.pairs import Pairs
from pops.evaluation.metrics import (
    averaging_baseline,
    class_prototypes,
    cosine_to_target,
    evaluate_embeddings,
    input_a_baseline,
    mean_reciprocal_rank,
    top1_accuracy,
)
from pops.evaluation.table import MetricsTable
from pops.evaluation.testsets import OperatorData
from pops.operators.operator import Operator


def sample_pairs(
    op: Operator,
    pairs: Pairs,
    *,
    guidance_scale: float,
    seed: int,
    steps: int | None = None,
    sampler: str | None = None,
    generator_device: str = "cpu",
    draws: int | None = None,
) -> torch.Tensor:
    """The operator's outputs for every sample of `pairs` (absent slots are the null condition), one generator
    (drawn on `generator_device`: "cuda" draws as the reference does on a GPU); `draws` as `Operator.sample`."""
    generator = make_generator(seed, generator_device)
    out = op.sample_batch(
        pairs,
        guidance_scale=guidance_scale,
        num_inference_steps=steps,
        generator=generator,
        sampler=sampler,
        draws=draws,
    )
    return out.float().cpu()  # scored against CPU targets, wherever the operator ran


def sampling_label(sampler: str, steps: int, draws: int = 1) -> str:
    """How a sampler is named in records and reports: "SAMPLER STEPS", + " xDRAWS" beyond one draw."""
    return f"{sampler} {steps}" + (f" x{draws}" if draws > 1 else "")


class Sampling(NamedTuple):
    """How an operator samples (what `choose_sampling` chooses), and the validation top-1 of every candidate."""

    guidance_scale: float
    sampler: str
    num_inference_steps: int
    draws: int
    scores: dict[str, float]

    def give(self, op: Operator) -> None:
        """Make these `op`'s own settings (what it samples with, and saves, by default)."""
        op.guidance_scale, op.sampler, op.num_inference_steps, op.draws = self[:4]


def choose_sampling(op: Operator, data: OperatorData, scales, samplers=((None, None),), seed: int = 0) -> Sampling:
    """The (guidance scale, sampler, steps, draws) whose outputs score best on the validation classes, among `scales`
    × `samplers` ((name, steps) or (name, steps, draws): draws samples averaged into each output, 1 when not given;
    (None, None): the operator's own). Validation classes are training classes kept out of training, so this never
    sees a test class. Ranked by top-1, then mean reciprocal rank, then mean cosine to the target (validation sets
    are small: several candidates often tie at top-1 1.0), then the earlier sampler, then the smaller scale. Scores
    are keyed "SAMPLER STEPS gSCALE" (+ " xDRAWS" beyond one draw)."""
    pairs = data.validation
    names, protos = class_prototypes(data.gallery, data.gallery_classes)
    truth = [pairs.info["classes"][i] for i in pairs.class_ids.tolist()]
    scores = {}
    for order, (sampler, steps, *more) in enumerate(samplers):
        name, steps = op.sampling(sampler, steps)
        draws = more[0] if more else 1
        for scale in sorted(scales):
            out = sample_pairs(op, pairs, guidance_scale=scale, seed=seed, steps=steps, sampler=name, draws=draws)
            scores[float(scale), name, steps, draws] = (
                top1_accuracy(out, truth, names, protos),
                mean_reciprocal_rank(out, truth, names, protos),
                cosine_to_target(out, pairs.target.float()),
                -order,
                -scale,
            )
    best = max(scores, key=scores.get)
    named = {f"{n} {k} g{s:g}" + (f" x{d}" if d > 1 else ""): round(r[0], 4) for (s, n, k, d), r in scores.items()}
    return Sampling(*best, named)


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
    steps: int | None = None,
    extra_seeds: int = 1,
    progress: bool = True,
    sampler: str | None = None,
    generator_device: str = "cpu",
    draws: int | None = None,
):
    """A MetricsTable: per operator and test split (the splits in its data: "test" and the registry's extra test
    splits) the trained operator at its own guidance scale over `seeds` seeds ("pops"), at the registry's scale and
    each of `guidance_scales` over `extra_seeds` ("pops g=s"; none when `extra_seeds` is 0; the registry's scale is
    n/a for a distilled student, whose guidance is in its weights), the averaging baseline, input A only, and the
    oracle.
    `sampler` names the sampler (pops.core.sampler.SAMPLERS), `steps` its steps and `draws` the samples averaged into
    each output (None: each operator's own);
    `generator_device` where the noise is drawn (pops.base.devices.make_generator).
    Returns (table, outputs): outputs[row] holds the first seed's embeddings at the operator's own scale,
    outputs["row/g=s"] at the other scales and outputs["row/averaging"] the baseline, for the report's grids."""
    table, outputs = MetricsTable(), {}
    noise = dict(generator_device=generator_device, draws=draws)
    jobs = [(kind, split) for kind in operators for split in data[kind].tests]
    for kind, split in tqdm(jobs, desc="evaluating", unit="set", disable=not progress):
        op, d, pairs = operators[kind], data[kind], data[kind].tests[split]
        row = row_name(kind, split)
        names, protos = class_prototypes(d.gallery, d.gallery_classes)
        truth = true_classes(pairs, d)
        score = partial(evaluate_embeddings, targets=pairs.target, true_classes=truth, proto_names=names, protos=protos)
        own = op.guidance_scale
        for scale in dict.fromkeys([own, op.spec.guidance_scale, *guidance_scales]):
            count = seeds if scale == own else extra_seeds
            if count == 0:  # extra_seeds 0: the operator's own scale only
                continue
            if op.guidance_folded and scale == op.spec.guidance_scale != own:
                # A distilled student at the registry's scale would be guided a second time: not a number to show.
                table.add_not_applicable(row, f"pops g={scale:g}", n=len(pairs))
                continue
            runs = []
            for s in range(count):
                out = sample_pairs(op, pairs, guidance_scale=scale, seed=s, steps=steps, sampler=sampler, **noise)
                runs.append(score(out))
                if s == 0:  # the first seed's outputs, for the report's pictures
                    outputs[row if scale == own else f"{row}/g={scale:g}"] = out
            table.add_runs(row, "pops" if scale == own else f"pops g={scale:g}", runs, n=len(pairs))
        images, present = image_inputs(pairs)
        averaging = averaging_baseline(images, present)
        outputs[f"{row}/averaging"] = averaging
        for method, x in (
            ("averaging", averaging),
            ("input_a", input_a_baseline(images, present)),
            ("oracle", pairs.target),
        ):
            table.add(row, method, **score(x), n=len(pairs))
    return table, outputs
