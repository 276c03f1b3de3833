"""Held-out quality over world seeds: `pops demo` once per seed, then gap closed per operator, mean and worst.

    .venv/bin/python -m benchmarks.world_seeds --seeds 0 1 2 3 4 --out outputs/seeds [--quick]
    .venv/bin/python -m benchmarks.world_seeds --seeds 0 1 --out outputs/seeds --table-only   # re-tabulate

One table per method: "pops chosen" (per operator, the separate operator unless the joint model beat it on validation
classes by more than the noise: the demo's result), "pops" (the separate operators), "pops joint" (the one model);
then the regret of each choice (demo.json).
gap closed = (pops - averaging) / (oracle - averaging), on top-1 over the held-out classes: the share of the distance
from the paper's baseline to the encoder's ceiling that the operator covers (fair to union and scene, where
averaging is already strong in this encoder's space). The synonyms row is reported as plain top-1. A seed whose
folder already holds metrics.json is not run again (delete it to rerun).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pops.evaluation import MetricsTable

SYNONYMS_ROW = "instruct (synonyms)"
PEERS = ("subspace", "ridge")


# The model chosen per operator on validation classes (the demo's result), then each of the two it chose from.
METHODS = ("pops chosen", "pops", "pops joint", "subspace", "ridge")


def scores(folder: Path, method: str) -> dict[str, float] | None:
    """Row -> gap closed (top-1 for the synonyms row) of `method` in one demo folder; None when it has no such rows."""
    table = MetricsTable.from_dict(json.loads((folder / "metrics.json").read_text()))
    if method not in table.methods():
        return None
    gap = {row: table.gap_closed(row, method) for row in table.operators()}
    return {
        row: table.get(row, method).top1 if row == SYNONYMS_ROW else (float("nan") if g is None else g)
        for row, g in gap.items()
    }


def shipped_method(table: MetricsTable) -> str:
    """The method of what the demo ships: the model chosen per operator where the joint one was trained too."""
    return "pops chosen" if "pops chosen" in table.methods() else "pops"


def margin(folder: Path) -> dict[str, float] | None:
    """Row -> top-1 of what the demo ships minus that of the best peer (subspace, ridge); None without peers."""
    table = MetricsTable.from_dict(json.loads((folder / "metrics.json").read_text()))
    shipped = shipped_method(table)
    out = {}
    for row in table.operators():
        peers = [table.get(row, m).top1 for m in PEERS if m in table.methods()]
        if peers:
            out[row] = table.get(row, shipped).top1 - max(peers)
    return out or None


TOP1_METHODS = ("shipped", "subspace", "ridge", "averaging", "oracle")


def print_top1(folders: dict[int, Path]) -> None:
    """Held-out top-1 of the shipped operator beside each peer and reference: mean (worst) over seeds."""
    tables = [MetricsTable.from_dict(json.loads((f / "metrics.json").read_text())) for f in folders.values()]

    def method(table, name):
        return shipped_method(table) if name == "shipped" else name

    methods = [m for m in TOP1_METHODS if all(method(t, m) in t.methods() for t in tables)]
    print(f"{'top-1, mean (worst)':<22}" + "".join(f"{m:>16}" for m in methods))
    for row in tables[0].operators():
        cells = []
        for m in methods:
            values = [t.get(row, method(t, m)).top1 for t in tables]
            cells.append(f"{statistics.fmean(values):.3f} ({min(values):.3f})")
        print(f"{row:<22}" + "".join(f"{c:>16}" for c in cells))


def regret(folder: Path) -> dict[str, float] | None:
    """Operator -> the regret of the demo's choice (demo.json), or None for a demo that recorded none."""
    table = json.loads((folder / "demo.json").read_text()).get("regret") or {}
    return {kind: r["regret"] for kind, r in table.items()} or None


def print_table(title: str, results: dict[int, dict[str, float]], worst=min) -> None:
    seeds = list(results)
    rows = list(results[seeds[0]])
    print(f"{title:<22}" + "".join(f"{'seed ' + str(s):>9}" for s in seeds) + f"{'mean':>9}{'worst':>9}")
    for row in rows:
        values = [results[s][row] for s in seeds]
        cells = "".join(f"{v:9.3f}" for v in values)
        print(f"{row:<22}{cells}{statistics.fmean(values):9.3f}{worst(values):9.3f}")


def run_seed(seed: int, folder: Path, quick: bool) -> float:
    command = [sys.executable, "-m", "pops", "demo", "--seed", str(seed), "--out", str(folder), "--no-progress"]
    start = time.perf_counter()
    done = subprocess.run(command + (["--quick"] if quick else []), stdout=subprocess.DEVNULL)
    if done.returncode:
        raise SystemExit(f"error: pops demo --seed {seed} failed (exit {done.returncode}; its error is above)")
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=Path("outputs/seeds"))
    parser.add_argument("--quick", action="store_true", help="the quick demo (a smoke test, not the result)")
    parser.add_argument("--table-only", action="store_true", help="only tabulate folders that exist")
    args = parser.parse_args(argv)
    folders, seconds = {}, {}
    for seed in args.seeds:
        folder = args.out / f"seed{seed}"
        if not (folder / "metrics.json").is_file():
            if args.table_only:
                continue
            seconds[seed] = run_seed(seed, folder, args.quick)
        folders[seed] = folder
    if not folders:
        raise SystemExit("error: no seed folder holds metrics.json")
    for method in METHODS:
        results = {seed: scores(folder, method) for seed, folder in folders.items()}
        if all(r is not None for r in results.values()):
            print_table(method, results)
            print()
    print_top1(folders)
    print()
    margins = {seed: margin(folder) for seed, folder in folders.items()}
    if all(m for m in margins.values()):
        print_table("margin over best peer", margins)
        print()
    regrets = {seed: regret(folder) for seed, folder in folders.items()}
    if all(r for r in regrets.values()):
        print_table("regret (top-1)", regrets, worst=max)
        print()
    print("(gap closed = (pops - averaging) / (oracle - averaging) on held-out top-1; synonyms: top-1; regret: the")
    print(" best candidate's test top-1 minus the shipped one's, one sampling seed, measured after the choice)")
    if seconds:
        print("demo wall time per seed (s): " + ", ".join(f"{s}: {t:.0f}" for s, t in seconds.items()))


if __name__ == "__main__":
    main()
