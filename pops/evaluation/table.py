"""The results table: one row per operator (and extra test split), cosine and top-1 columns per method (pops over
seeds as mean ± std, the baselines), rendered as terminal text (through rich) or an HTML <table>; JSON round-trips.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

# "pops joint": the one prior for all operators (pops.operators.joint), beside each operator's own; "pops chosen": per
# operator the model chosen on validation classes (pops.demo.operators.choose_models); "subspace" and "ridge": the
# peers a user would pick instead (pops.operators.subspace, pops.evaluation.peers); then the references.
PEER_METHODS = ("subspace", "ridge")
METHOD_ORDER = ("pops", "pops joint", "pops chosen", *PEER_METHODS, "averaging", "input_a", "oracle")
# Wide enough that rich never wraps or truncates a row (the table is as wide as its cells, not as this).
TEXT_WIDTH = 1000


@dataclass
class MetricRow:
    """One operator x method cell. *_std is the spread over seeds (None for single-run methods). A cell that does not
    apply to the operator (a distilled student at another guidance scale) has cosine and top1 None, shown as n/a."""

    operator: str
    method: str
    cosine: float | None
    top1: float | None
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

    def add(
        self,
        operator: str,
        method: str,
        cosine: float,
        top1: float,
        *,
        n: int = 0,
        cosine_std: float | None = None,
        top1_std: float | None = None,
    ) -> MetricRow:
        row = MetricRow(operator, method, float(cosine), float(top1), cosine_std, top1_std, n)
        self._rows[(operator, method)] = row
        return row

    def add_row(self, row: MetricRow) -> MetricRow:
        self._rows[(row.operator, row.method)] = row
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

    def add_not_applicable(self, operator: str, method: str, *, n: int = 0) -> MetricRow:
        """A cell that has no meaning for this operator: n/a in the table, null in the JSON, never the best."""
        row = MetricRow(operator, method, None, None, n=n, runs=0)
        self._rows[(operator, method)] = row
        return row

    def get(self, operator: str, method: str) -> MetricRow:
        try:
            return self._rows[(operator, method)]
        except KeyError:
            raise KeyError(f"no result for {operator} / {method}") from None

    def gap_closed(self, operator: str, method: str = "pops") -> float | None:
        """(method - averaging) / (oracle - averaging) of top-1: the share of the way from the paper's baseline to the
        ceiling set by the encoder (fair where averaging is already strong); None without those three cells or with
        no way to go."""
        try:
            value, avg, oracle = (self.get(operator, m).top1 for m in (method, "averaging", "oracle"))
        except KeyError:
            return None
        if value is None or avg is None or oracle is None or oracle <= avg:
            return None
        return (value - avg) / (oracle - avg)

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
    def _cell(value: float | None, std: float | None, pct: bool) -> str:
        if value is None:
            return "n/a"
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
        """A plain-text table for the terminal: one row per operator, cosine then top-1 columns per method."""
        header, body = self._grid()
        table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False, header_style="")
        for i, name in enumerate(header):
            table.add_column(Text(name), justify="left" if i == 0 else "right", no_wrap=True)
        for line in body:
            table.add_row(*map(Text, line))  # Text: an operator name is never read as rich markup
        console = Console(file=io.StringIO(), record=True, width=TEXT_WIDTH, color_system=None, force_terminal=False)
        console.print(table)
        return "\n".join(line.rstrip() for line in console.export_text(styles=False).splitlines())

    def to_html(self) -> str:
        """An HTML <table> (escaped), with the best non-oracle method per column group in bold."""
        header, body = self._grid()
        methods = self.methods()
        best: dict[tuple[str, str], str] = {}
        for op in self.operators():
            for key in ("cosine", "top1"):
                rows = [(self._rows[(op, m)], m) for m in methods if m != "oracle" and (op, m) in self._rows]
                cands = [(getattr(r, key), m) for r, m in rows if getattr(r, key) is not None]
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
