"""Where an operator goes wrong: its nearest-class predictions broken down by the factors a class name is made of.

A class name of the embedded world lists its factors, "obj=star|tex=zigzag", "obj=circle+square" (union: a set of
objects), "hat=cap|belt=white|..." (composition: one factor per garment slot, absent slots left out). For held-out
samples, `factor_errors` says which factor a wrong answer got wrong (the object, the texture, the word, a garment),
which factor values fail most, and the most frequent confusions: what decides whether a lever is worth trying.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from pops.evaluation.harness import row_name, true_classes
from pops.evaluation.metrics import class_prototypes, nearest_classes


def parse_factors(name: str) -> dict[str, frozenset[str]]:
    """The factors of a class name: "obj=star|tex=zigzag" -> {"obj": {"star"}, "tex": {"zigzag"}}, "obj=a+b" ->
    {"obj": {"a", "b"}}; a name without "=" is one factor, "class"."""
    if "=" not in name:
        return {"class": frozenset([name])}
    factors = {}
    for part in name.split("|"):
        key, _, value = part.partition("=")
        factors[key] = frozenset(value.split("+"))
    return factors


def factor_errors(predicted: Sequence[str], truth: Sequence[str], *, worst: int = 5) -> dict:
    """Per factor: the share of samples whose predicted class has that factor right ("factors"; a factor absent from
    both names counts as right, so a composition without a hat never fails at hats); per factor value (a value of the
    TRUE class): its samples' top-1, the `worst` lowest ("worst_values", at least two samples each); and the `worst`
    most frequent (true -> predicted) confusions. A set-valued factor (union's objects) scores its share of members
    found."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} true classes")
    if not truth:
        raise ValueError("no samples to break down")
    right: defaultdict[str, float] = defaultdict(float)
    by_value: defaultdict[str, list[bool]] = defaultdict(list)
    parsed = [(parse_factors(p), parse_factors(t)) for p, t in zip(predicted, truth)]
    keys = sorted({k for pair in parsed for names in pair for k in names})
    for (pred, true), p, t in zip(parsed, predicted, truth):
        for key in keys:
            want, got = true.get(key, frozenset()), pred.get(key, frozenset())
            right[key] += len(want & got) / len(want) if len(want) > 1 else float(want == got)
        for key, values in true.items():
            for value in values:
                by_value[f"{key}={value}"].append(p == t)
    values = sorted(
        ((v, len(hits), sum(hits) / len(hits)) for v, hits in by_value.items() if len(hits) >= 2),
        key=lambda r: (r[2], -r[1], r[0]),
    )
    confusions = Counter((t, p) for p, t in zip(predicted, truth) if p != t)
    return {
        "n": len(truth),
        "top1": sum(p == t for p, t in zip(predicted, truth)) / len(truth),
        "factors": {key: right[key] / len(truth) for key in keys},
        "worst_values": [{"value": v, "n": n, "top1": acc} for v, n, acc in values[:worst]],
        "confusions": [{"true": t, "predicted": p, "count": c} for (t, p), c in confusions.most_common(worst)],
    }


def operator_errors(data: dict, outputs: dict, *, worst: int = 5) -> dict[str, dict]:
    """`factor_errors` of every test split's outputs at the operator's own scale (what `evaluate_operators` returns:
    outputs[row], and outputs["row/joint"] for the joint model, reported as "row (joint)"). `data`: kind ->
    OperatorData."""
    errors = {}
    for kind, d in data.items():
        names, protos = class_prototypes(d.gallery, d.gallery_classes)
        for split, pairs in d.tests.items():
            row, truth = row_name(kind, split), true_classes(pairs, d)
            for key, label in ((row, row), (f"{row}/joint", f"{row} (joint)")):
                if key in outputs:
                    errors[label] = factor_errors(nearest_classes(outputs[key], names, protos), truth, worst=worst)
    return errors
