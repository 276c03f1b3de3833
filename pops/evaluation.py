"""Evaluation against ground truth: pure functions on embeddings (no model code).

Two numbers per operator and method, as in the design brief: the mean cosine between an output embedding and the
true target's embedding, and top-1 retrieval — whether the nearest class prototype (by cosine, among ALL candidate
classes, held-out ones included) is the true class. Baselines: the paper's embedding averaging, "input A" (the object
alone, unchanged) and the oracle (the target embedding itself, an upper bound for top-1).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

METHOD_ORDER = ("pops", "averaging", "input_a", "oracle")


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


def top1_accuracy(outputs: torch.Tensor, true_classes: Sequence[str], proto_names: Sequence[str], protos: torch.Tensor) -> float:
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


def mean_reciprocal_rank(outputs: torch.Tensor, true_classes: Sequence[str], proto_names: Sequence[str], protos: torch.Tensor) -> float:
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
    """"Do nothing": the first present image input of each row (the object, for the binary operators)."""
    stack, mask = _present(inputs, present)
    first = mask.float().argmax(dim=1)
    return stack[torch.arange(stack.shape[0]), first]


def oracle_baseline(targets: torch.Tensor) -> torch.Tensor:
    """The true target embeddings: cosine 1 and the top-1 ceiling set by the encoder and the gallery."""
    return _check_2d("targets", targets).clone()


def evaluate_embeddings(
    outputs: torch.Tensor, targets: torch.Tensor, true_classes: Sequence[str], proto_names: Sequence[str], protos: torch.Tensor
) -> dict[str, float]:
    """{"cosine": …, "top1": …} for one method."""
    return {
        "cosine": cosine_to_target(outputs, targets),
        "top1": top1_accuracy(outputs, true_classes, proto_names, protos),
    }


@dataclass
class MetricRow:
    """One operator x method cell. *_std is the spread over seeds (None for single-run methods)."""

    operator: str
    method: str
    cosine: float
    top1: float
    cosine_std: float | None = None
    top1_std: float | None = None
    n: int = 0
    runs: int = 1


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


class MetricsTable:
    """Operator x method results (pops seeds mean±std, averaging, input A, oracle), printable as text or HTML."""

    def __init__(self, rows: Sequence[MetricRow] = ()):
        self._rows: dict[tuple[str, str], MetricRow] = {}
        for r in rows:
            self._rows[(r.operator, r.method)] = r

    def add(self, operator: str, method: str, cosine: float, top1: float, *, n: int = 0,
            cosine_std: float | None = None, top1_std: float | None = None) -> MetricRow:  # fmt: skip
        row = MetricRow(operator, method, float(cosine), float(top1), cosine_std, top1_std, n)
        self._rows[(operator, method)] = row
        return row

    def add_runs(self, operator: str, method: str, runs: Sequence[dict[str, float]], *, n: int = 0) -> MetricRow:
        """Aggregate several runs (e.g. pops with different seeds), each {"cosine", "top1"}, into mean ± std."""
        if not runs:
            raise ValueError("add_runs needs at least one run")
        cos, cos_sd = _mean_std([r["cosine"] for r in runs])
        top, top_sd = _mean_std([r["top1"] for r in runs])
        if len(runs) == 1:  # one run has no spread to show
            cos_sd = top_sd = None
        row = MetricRow(operator, method, cos, top, cos_sd, top_sd, n, len(runs))
        self._rows[(operator, method)] = row
        return row

    def get(self, operator: str, method: str) -> MetricRow:
        try:
            return self._rows[(operator, method)]
        except KeyError:
            raise KeyError(f"no result for {operator} / {method}") from None

    @property
    def rows(self) -> list[MetricRow]:
        return list(self._rows.values())

    def operators(self) -> list[str]:
        return list(dict.fromkeys(r.operator for r in self._rows.values()))

    def methods(self) -> list[str]:
        seen = list(dict.fromkeys(r.method for r in self._rows.values()))
        return [m for m in METHOD_ORDER if m in seen] + [m for m in seen if m not in METHOD_ORDER]

    def to_dict(self) -> dict:
        return {"rows": [asdict(r) for r in self._rows.values()]}

    @classmethod
    def from_dict(cls, data: dict) -> MetricsTable:
        return cls([MetricRow(**r) for r in data["rows"]])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @staticmethod
    def _cell(value: float, std: float | None, pct: bool) -> str:
        fmt = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.3f}")
        return fmt(value) if std is None else f"{fmt(value)} ± {fmt(std)}"

    def _grid(self) -> tuple[list[str], list[list[str]]]:
        methods = self.methods()
        header = ["operator"] + [f"{m} cos" for m in methods] + [f"{m} top-1" for m in methods]
        body = []
        for op in self.operators():
            line = [op]
            for key, pct in (("cosine", False), ("top1", True)):
                for m in methods:
                    r = self._rows.get((op, m))
                    line.append("—" if r is None else self._cell(getattr(r, key), getattr(r, f"{key}_std"), pct))
            body.append(line)
        return header, body

    def to_text(self) -> str:
        """A fixed-width table for the terminal: one row per operator, cosine then top-1 columns per method."""
        header, body = self._grid()
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
        return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, body)])

    def to_html(self) -> str:
        """An HTML <table> (escaped), with the best non-oracle method per column group in bold."""
        header, body = self._grid()
        methods = self.methods()
        best: dict[tuple[str, str], str] = {}
        for op in self.operators():
            for key in ("cosine", "top1"):
                cands = [(getattr(self._rows[(op, m)], key), m) for m in methods if m != "oracle" and (op, m) in self._rows]
                if cands:
                    best[(op, key)] = max(cands)[1]
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        out = ['<table class="metrics">', f"<thead><tr>{head}</tr></thead>", "<tbody>"]
        for op, line in zip(self.operators(), body):
            cells = [f"<td>{html.escape(line[0])}</td>"]
            for i, text in enumerate(line[1:]):
                key, m = ("cosine", methods[i]) if i < len(methods) else ("top1", methods[i - len(methods)])
                t = html.escape(text)
                cells.append(f"<td><b>{t}</b></td>" if best.get((op, key)) == m else f"<td>{t}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out += ["</tbody>", "</table>"]
        return "\n".join(out)
