"""The protocol's outputs: the per-picture score log (OUT/scores.jsonl, which a rerun resumes), the summary
(OUT/protocol.json, written whole or not at all) and the table printed beside the paper's numbers."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pops.evaluation.protocol.paper import METRIC_TITLES, METRICS, NAME, NUM_ADJECTIVES, NUM_OBJECTS, NUM_SEEDS

LOG_NAME = "scores.jsonl"
SUMMARY_NAME = "protocol.json"
TEXT_WIDTH = 1000  # rich never wraps a row (the table is as wide as its cells)


def row_key(row: dict) -> tuple:
    """What a score is the score of: the method, the edit, its seed and the exact input picture."""
    return (row["method"], row["object"], row["adjective"], int(row["seed"]), row["input"])


class ScoreLog:
    """An append-only JSON-lines log: a header naming the settings, then one line per scored picture, flushed as it
    is written, so an interrupted run loses at most the line being written and a rerun skips what is done."""

    def __init__(self, path: Path, header: dict):
        self.path, self.header = Path(path), header
        self.rows: dict[tuple, dict] = {}
        self.method_settings: dict[str, dict] = {}
        if self.path.exists():
            self._read()
        else:
            self.path.write_text(json.dumps(header) + "\n", encoding="utf-8")

    def _read(self) -> None:
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):  # an interrupted write: drop the partial line before appending after it
            with open(self.path, "r+b") as fh:
                fh.truncate(cut)
        lines = data[:cut].decode("utf-8", errors="replace").splitlines()
        for line in lines[1:]:
            try:
                row = json.loads(line)
                if "method_settings" in row:
                    self.method_settings[row["method_settings"]] = row["settings"]
                else:
                    self.rows[row_key(row)] = row
            except (ValueError, KeyError, TypeError):
                continue  # a damaged line is scored again

    @staticmethod
    def read_header(path: Path) -> dict | None:
        try:
            with open(path, encoding="utf-8") as fh:
                header = json.loads(fh.readline())
        except (OSError, ValueError):
            return None
        return header if isinstance(header, dict) and header.get("protocol") == NAME else None

    def done(self, key: tuple) -> dict | None:
        return self.rows.get(key)

    def _append(self, lines: Iterable[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(line) + "\n" for line in lines))
            fh.flush()

    def add(self, rows: Iterable[dict]) -> None:
        rows = list(rows)
        self._append(rows)
        for row in rows:
            self.rows[row_key(row)] = row

    def set_method_settings(self, method: str, settings: dict) -> None:
        """How a method edits (steps, prompts, scales …), kept for the summary of a run resumed after it finished."""
        if self.method_settings.get(method) != settings:
            self._append([{"method_settings": method, "settings": settings}])
            self.method_settings[method] = settings


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def summarize(rows: Sequence[dict], seeds: Sequence[int]) -> dict:
    """Each metric's mean and spread over the method's pictures, and its mean per seed."""
    out: dict = {"edits": len(rows)}
    for metric in METRICS:
        values = [r[metric] for r in rows]
        mean, std = _mean_std(values)
        per_seed = []
        for seed in seeds:
            of_seed = [r[metric] for r in rows if int(r["seed"]) == seed]
            per_seed.append(sum(of_seed) / len(of_seed) if of_seed else None)
        out[metric] = {"mean": mean, "std": std, "per_seed": per_seed}
    return out


def grid_line(result: dict) -> str:
    n_obj, n_adj, n_seed = len(result["objects"]), len(result["adjectives"]), len(result["seeds"])
    full = NUM_OBJECTS * NUM_ADJECTIVES * NUM_SEEDS
    grid = f"{n_obj} objects x {n_adj} adjectives x {n_seed} seed(s) = {n_obj * n_adj * n_seed:,} edits per method"
    if result["full_protocol"]:
        return f"{grid} (the paper's full grid)"
    return f"{grid} (a subset: the paper's protocol is {NUM_OBJECTS} x {NUM_ADJECTIVES} x {NUM_SEEDS} = {full:,})"


def format_table(result: dict) -> str:
    """The results beside the paper's Table 1, as plain text."""
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False, header_style="")
    table.add_column(Text("method"), no_wrap=True)
    for metric in METRICS:
        table.add_column(Text(f"{METRIC_TITLES[metric]} (paper)"), justify="right", no_wrap=True)
    table.add_column(Text("edits"), justify="right", no_wrap=True)
    for method, entry in result["methods"].items():
        if "skipped" in entry:
            table.add_row(Text(method), Text(f"skipped: {entry['skipped']}"), *(Text("") for _ in METRICS))
            continue
        cells = [f"{entry[m]['mean']:.3f} ({entry['paper'][m]:.3f})" for m in METRICS]
        table.add_row(Text(method), *map(Text, cells), Text(str(entry["edits"])))
    console = Console(file=io.StringIO(), record=True, width=TEXT_WIDTH, color_system=None, force_terminal=False)
    console.print(table)
    body = "\n".join(line.rstrip() for line in console.export_text(styles=False).splitlines())
    metrics = result["metrics"]
    notes = [
        f"pOps instruct protocol ({result['paper']}); lists: {result['lists']}",
        grid_line(result),
        body,
        f"image sim.: {metrics['image_similarity']['model']}; text sim.: CLIP ViT-L/14 to "
        f"{metrics['text_similarity']['template']!r}; caption sim.: BLIP-2 captions, "
        f"{metrics['caption_similarity']['sentence_model']} to {metrics['caption_similarity']['template']!r}",
    ]
    return "\n".join(notes)
