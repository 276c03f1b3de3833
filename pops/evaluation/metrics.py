"""The metrics: pure functions on embeddings (no model code).

Two numbers per operator and method, as in the design brief: the mean cosine between an output embedding and the
true target's embedding, and top-1 retrieval — whether the nearest class prototype (by cosine, among ALL candidate
classes, held-out ones included) is the true class. Baselines: the paper's embedding averaging, "input A" (the object
alone, unchanged) and the oracle (the target embedding itself, an upper bound for top-1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _check_2d(name: str, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"{name} must be a (N, D) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    return x.float()


def cosine_to_target(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean cosine similarity between matching rows of outputs (N, D) and targets (N, D)."""
    outputs, targets = _check_2d("outputs", outputs), _check_2d("targets", targets)
    if outputs.shape != targets.shape:
        raise ValueError(f"outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} differ in shape")
    if outputs.shape[0] == 0:
        raise ValueError("cannot evaluate zero samples")
    return float(F.cosine_similarity(outputs, targets, dim=1).mean())


def class_prototypes(embeds: torch.Tensor, classes: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Per-class prototypes: the normalised mean of each class's L2-normalised embeddings.

    Returns (names in first-seen order, (C, D) unit-norm prototypes).
    """
    embeds = _check_2d("embeds", embeds)
    if len(classes) != embeds.shape[0]:
        raise ValueError(f"{embeds.shape[0]} embeddings but {len(classes)} class labels")
    names = list(dict.fromkeys(classes))
    index = {c: i for i, c in enumerate(names)}
    idx = torch.tensor([index[c] for c in classes], dtype=torch.long)
    sums = torch.zeros(len(names), embeds.shape[1], dtype=torch.float32).index_add_(0, idx, F.normalize(embeds, dim=1))
    return names, F.normalize(sums, dim=1)


def nearest_classes(outputs: torch.Tensor, proto_names: Sequence[str], protos: torch.Tensor) -> list[str]:
    """The name of the most cosine-similar prototype for each output row."""
    outputs, protos = _check_2d("outputs", outputs), _check_2d("protos", protos)
    if len(proto_names) != protos.shape[0]:
        raise ValueError(f"{protos.shape[0]} prototypes but {len(proto_names)} names")
    if outputs.shape[1] != protos.shape[1]:
        raise ValueError(f"outputs have dim {outputs.shape[1]}, prototypes {protos.shape[1]}")
    return [proto_names[i] for i in _similarities(outputs, protos).argmax(dim=1).tolist()]


def _similarities(outputs: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """(N, C) cosine of every output to every prototype."""
    return F.normalize(outputs, dim=1) @ F.normalize(protos, dim=1).T


def top1_accuracy(
    outputs: torch.Tensor, true_classes: Sequence[str], proto_names: Sequence[str], protos: torch.Tensor
) -> float:
    """Share of outputs whose nearest prototype (cosine, among all candidates) is their true class."""
    if len(true_classes) != outputs.shape[0]:
        raise ValueError(f"{outputs.shape[0]} outputs but {len(true_classes)} true classes")
    missing = sorted(set(true_classes) - set(proto_names))
    if missing:
        raise ValueError(f"true classes without a prototype: {', '.join(missing[:5])}")
    if outputs.shape[0] == 0:
        raise ValueError("cannot evaluate zero samples")
    predicted = nearest_classes(outputs, proto_names, protos)
    return sum(p == t for p, t in zip(predicted, true_classes)) / len(true_classes)


def mean_reciprocal_rank(
    outputs: torch.Tensor, true_classes: Sequence[str], proto_names: Sequence[str], protos: torch.Tensor
) -> float:
    """Mean of 1 / (rank of the true class among all prototypes, by cosine): top-1 with partial credit, a smoother
    score than top-1 on small sets (e.g. for choosing a guidance scale on a few validation samples)."""
    outputs, protos = _check_2d("outputs", outputs), _check_2d("protos", protos)
    index = {name: i for i, name in enumerate(proto_names)}
    sims = _similarities(outputs, protos)
    true = sims.gather(1, torch.tensor([[index[c]] for c in true_classes]))
    ranks = (sims > true).sum(dim=1) + 1
    return float((1.0 / ranks.float()).mean())


def _present(inputs: Sequence[torch.Tensor | None], present: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the slots into (N, K, D) and a (N, K) presence mask (None slots are absent for every row)."""
    shaped = [x for x in inputs if x is not None]
    if not shaped:
        raise ValueError("every input slot is None: nothing to average")
    n, d = _check_2d("inputs", shaped[0]).shape
    stack = torch.zeros(n, len(inputs), d)
    mask = torch.zeros(n, len(inputs), dtype=torch.bool)
    for k, x in enumerate(inputs):
        if x is not None:
            if tuple(x.shape) != (n, d):
                raise ValueError(f"input slot {k} has shape {tuple(x.shape)}, expected {(n, d)}")
            stack[:, k], mask[:, k] = x.float(), True
    if present is not None:
        if tuple(present.shape) != (n, len(inputs)):
            raise ValueError(f"present must be ({n}, {len(inputs)}), got {tuple(present.shape)}")
        mask &= present.bool()
    if not mask.any(dim=1).all():
        raise ValueError("some rows have no present input")
    return stack, mask


def averaging_baseline(inputs: Sequence[torch.Tensor | None], present: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's baseline: the mean of the present image-input embeddings, per row.

    `inputs`: one (N, D) raw embedding tensor per image slot (None: the slot is empty for every row; text slots
    are not passed). `present` (N, K) bool marks, per row, which slots hold an input (composition: garments worn).
    """
    stack, mask = _present(inputs, present)
    w = mask.float().unsqueeze(-1)
    return (stack * w).sum(dim=1) / w.sum(dim=1)


def input_a_baseline(inputs: Sequence[torch.Tensor | None], present: torch.Tensor | None = None) -> torch.Tensor:
    """ "Do nothing": the first present image input of each row (the object, for the binary operators)."""
    stack, mask = _present(inputs, present)
    first = mask.float().argmax(dim=1)
    return stack[torch.arange(stack.shape[0]), first]


def oracle_baseline(targets: torch.Tensor) -> torch.Tensor:
    """The true target embeddings: cosine 1 and the top-1 ceiling set by the encoder and the gallery."""
    return _check_2d("targets", targets).clone()


def evaluate_embeddings(
    outputs: torch.Tensor,
    targets: torch.Tensor,
    true_classes: Sequence[str],
    proto_names: Sequence[str],
    protos: torch.Tensor,
) -> dict[str, float]:
    """{"cosine": …, "top1": …} for one method."""
    return {
        "cosine": cosine_to_target(outputs, targets),
        "top1": top1_accuracy(outputs, true_classes, proto_names, protos),
    }
