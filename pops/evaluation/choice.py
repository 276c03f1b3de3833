"""Choosing among candidates on validation data without being fooled by its noise.

A small validation set ranks candidates (guidance scales, samplers, models) by a few samples' luck. The rule here
keeps a default — the paper's own setting — unless a candidate beats it by more than the noise of the comparison:
per validation sample, each candidate's top-1 (averaged over sampling seeds); the difference to the default, sample
by sample (a paired comparison: both saw the same samples); and its standard error. A candidate wins when its mean
difference exceeds `z` standard errors; among the winners, the one with the highest validation top-1 is chosen (the
earlier candidate on a tie). Validation classes are training classes kept out of training: nothing here sees a test
class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Standard errors a candidate's paired advantage must clear (one-sided, ~2.3% for one candidate under no difference).
Z = 2.0


@dataclass(frozen=True)
class Score:
    """One candidate's validation record: mean top-1 and its standard error, and its difference to the default
    (paired, per sample) and that difference's standard error."""

    top1: float
    se: float
    diff: float
    diff_se: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.__dict__.items()}


def paired_scores(per_sample: dict[str, torch.Tensor], default: str) -> dict[str, Score]:
    """Each candidate's `Score` from its per-sample validation scores (all over the same samples, in one order)."""
    if default not in per_sample:
        raise ValueError(f"the default {default!r} is not among the candidates")
    base = per_sample[default].double()
    n = base.numel()
    if n == 0 or any(s.numel() != n for s in per_sample.values()):
        raise ValueError("every candidate needs a score for each of the same validation samples")
    out = {}
    for name, scores in per_sample.items():
        scores = scores.double()
        diff = scores - base
        out[name] = Score(float(scores.mean()), _se(scores), float(diff.mean()), _se(diff))
    return out


def keep_unless_better(scores: dict[str, Score], default: str, z: float = Z) -> str:
    """The default, unless some candidates beat it by more than `z` standard errors of the paired difference: then
    the winner with the highest validation top-1 (the earliest of equals, in the order of `scores`)."""
    winners = [name for name, s in scores.items() if name != default and s.diff > z * s.diff_se]
    if not winners:
        return default
    return max(winners, key=lambda name: (scores[name].top1, -list(scores).index(name)))


def _se(x: torch.Tensor) -> float:
    return float(x.std(unbiased=True) / x.numel() ** 0.5) if x.numel() > 1 else 0.0
