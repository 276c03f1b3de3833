"""What a user would pick instead of a trained operator, scored beside it: a ridge regression from the inputs to the
target, its strength chosen on validation classes (the subspace operator, IP-Composer's training-free method, is in
pops.operators.subspace).

Features are the inputs as the operator sees them: each image slot's embedding, centred on the training inputs' mean
(a missing input is the mean: zeros); a text slot's rows mean-pooled (the word, in the aligned text space when the
operator reads one). The map is fitted on the training pairs only, in closed form for every strength at once (one
SVD), and the strength that gives the best validation top-1 is kept — never a test class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pops.embeddings.pairs import Pairs
from pops.evaluation.metrics import class_prototypes, top1_accuracy

# Ridge strengths tried, as multiples of the features' mean squared singular value.
RIDGE_STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def features(pairs: Pairs, centre: torch.Tensor | None = None) -> torch.Tensor:
    """(N, F) inputs: every slot's embedding (text: its rows' mean), image slots centred on `centre` (N, D) (their
    mean when None), a missing input zero."""
    columns = []
    for i, slot in enumerate(pairs.slots):
        if isinstance(slot, tuple):  # token rows and their mask
            rows, mask = slot
            weights = mask[..., None].float()
            value = (rows.float() * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        else:
            value = slot.float()
        columns.append(value * pairs.present[:, i : i + 1].float())
    x = torch.cat(columns, 1)
    return x if centre is None else x - centre


@dataclass
class Ridge:
    """A fitted ridge map: features -> target embeddings."""

    centre: torch.Tensor  # (F,) the training features' mean
    weight: torch.Tensor  # (F, D)
    bias: torch.Tensor  # (D,) the training targets' mean
    strength: float

    def predict(self, pairs: Pairs) -> torch.Tensor:
        return features(pairs, self.centre) @ self.weight + self.bias


def fit_ridge(
    train: Pairs,
    validation: Pairs | None,
    gallery: torch.Tensor,
    gallery_classes: Sequence[str],
    strengths: Sequence[float] = RIDGE_STRENGTHS,
) -> Ridge:
    """The ridge map of `train` whose strength scores the best top-1 on `validation` (the middle strength without
    validation pairs)."""
    x = features(train)
    centre = x.mean(0)
    x = x - centre
    y = train.target.float()
    bias = y.mean(0)
    u, s, vh = torch.linalg.svd(x.double(), full_matrices=False)
    uty = u.T @ (y - bias).double()
    scale = float((s**2).mean())
    candidates = []
    for strength in strengths:
        shrink = s / (s**2 + strength * scale)
        weight = (vh.T * shrink) @ uty
        candidates.append(Ridge(centre, weight.float(), bias, strength))
    if validation is None:
        return candidates[len(candidates) // 2]
    names, protos = class_prototypes(gallery, gallery_classes)
    truth = [validation.info["classes"][i] for i in validation.class_ids.tolist()]
    scores = [top1_accuracy(r.predict(validation), truth, names, protos) for r in candidates]
    return candidates[max(range(len(candidates)), key=lambda i: (scores[i], -i))]
