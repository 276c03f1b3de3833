"""Few-step samplers, distilled students and one-pass operators against the 25-step reference, side by side in one
run: quality and speed.

    .venv/bin/python -m benchmarks.fast_sampling --models outputs/demo [--seeds 1] [--students 1,2] [--one-pass
        [--one-pass-steps N]] [--operators a,b] [--save DIR] [--skip-kandinsky]

1. Quality, per operator of a demo models folder on the world's held-out test pairs: top-1 and gap closed =
   (pops − averaging) / (oracle − averaging) for every sampler × steps (1, 2, 4, 8, 25; unclip from 2;
   ddim-linspace 2, 3, 4, 8) of the folder's operators at their own guidance; for students distilled from them
   (`pops distill`, one per number of passes in --students); and, with --one-pass, for operators trained with the
   one-pass objective (ECLIPSE) on the same data with the same recipe — the fast ones called as they are saved
   (their own sampler, steps, guidance). "passes" counts prior forward passes per call (a guided step batches its
   two halves: one pass).
2. Speed at the Kandinsky 2.2 prior's size (1.03 B parameters, random weights, bf16, batch 1, compact layout):
   seconds per call of the reference (unclip, 25 steps, CFG 8), of few-step settings with CFG 8, and of the
   students' calls (ddim at guidance 1: no unconditional half), best of the repeats.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.fast_operators import one_pass_operator, student
from benchmarks.sampling import build
from pops.base.registry import REGISTRY
from pops.core.sampling import SamplingConfig
from pops.evaluation import class_prototypes, image_inputs, load_test_data, sample_pairs, top1_accuracy
from pops.evaluation.metrics import averaging_baseline
from pops.models.layout import find_operator_dir
from pops.operators.operator import Operator
from pops.train.distill import DistillConfig

SETTINGS = (
    [("unclip", s) for s in (2, 4, 8, 25)]
    + [(n, s) for n in ("ddim", "dpmpp") for s in (1, 2, 4, 8, 25)]
    + [("ddim-linspace", s) for s in (2, 3, 4, 8)]
)
REFERENCE = "unclip 25"


def rows_for(models: Path, kinds, students, distill_config: DistillConfig, one_pass, save: Path | None):
    """(label, passes, {kind: (operator, sampler, steps)}) per table row: the teacher's samplers, then the fast
    operators (None, None: their own call)."""
    teachers = {k: Operator.from_pretrained(find_operator_dir(models, k), load_encoders=False) for k in kinds}
    rows = [(f"{n} {s}", s, {k: (op, n, s) for k, op in teachers.items()}) for n, s in SETTINGS]
    for passes in students:
        config = DistillConfig(**{**distill_config.__dict__, "student_steps": passes})
        variant = f"student-{passes}" + (f"-x{config.recombine}" if config.recombine > 1 else "")
        print(f"  distilling {variant} students", flush=True)
        ops = {k: student(models, k, config, save=save, variant=variant) for k in kinds}
        rows.append((variant, passes, {k: (op, None, None) for k, op in ops.items()}))
    if one_pass is not False:  # None: the demo's optimiser steps; a number: that many
        variant = "one-pass" if one_pass is None else f"one-pass-{one_pass}"
        print(f"  training {variant} operators", flush=True)
        ops = {k: one_pass_operator(models, k, save=save, variant=variant, max_steps=one_pass) for k in kinds}
        rows.append((variant, 1, {k: (op, None, None) for k, op in ops.items()}))
    return rows


def quality(models: Path, seeds: int, rows) -> dict[str, dict[str, tuple[float, float]]]:
    """operator -> row label -> (top-1, gap closed), mean over `seeds` sampling seeds."""
    kinds = list(rows[0][2])
    data = load_test_data(models / "data", kinds)
    table = {}
    for kind in kinds:
        d, pairs = data[kind], data[kind].tests["test"]
        names, protos = class_prototypes(d.gallery, d.gallery_classes)
        truth = [(pairs.info.get("classes") or d.classes)[i] for i in pairs.class_ids.tolist()]
        averaging = top1_accuracy(averaging_baseline(*image_inputs(pairs)), truth, names, protos)
        oracle = top1_accuracy(pairs.target, truth, names, protos)
        table[kind] = {}
        for label, _, ops in rows:
            op, sampler, steps = ops[kind]
            outs = [
                sample_pairs(op, pairs, SamplingConfig(sampler, steps, op.guidance_scale), seed=s) for s in range(seeds)
            ]
            top1 = sum(top1_accuracy(out, truth, names, protos) for out in outs) / seeds
            table[kind][label] = (top1, (top1 - averaging) / max(oracle - averaging, 1e-9))
        print(f"  {kind}: averaging {averaging:.3f}, oracle {oracle:.3f}", flush=True)
    return table


def print_quality(table, rows) -> None:
    kinds = list(table)
    print(f"\n{'setting':<18}{'passes':>7}  " + "  ".join(f"{k:>19}" for k in kinds))
    for label, passes, _ in rows:
        cells = []
        for kind in kinds:
            top1, gap = table[kind][label]
            ref = table[kind][REFERENCE][0]
            cells.append(f"{top1:6.3f} ({gap:4.2f}) {100 * (top1 - ref):+5.1f}")
        print(f"{label:<18}{passes:>7}  " + "  ".join(f"{c:>19}" for c in cells))
    print("cells: held-out top-1 (gap closed) and points vs the 25-step reference")
    within = [
        (passes, label)
        for label, passes, _ in rows
        if label != REFERENCE and all(100 * (table[k][label][0] - table[k][REFERENCE][0]) >= -1.0 for k in kinds)
    ]
    best = min(within, default=None)
    print("fewest passes within 1 point of the reference on every operator: " + (f"{best[1]}" if best else "none"))


def speed(settings, repeats: int) -> None:
    op = build(torch.bfloat16)
    inputs = [torch.randn(1, op.embedding_dim), torch.randn(1, op.embedding_dim)]
    print(f"\nKandinsky-size call (bf16, batch 1, compact), best of {repeats}, {torch.get_num_threads()} threads:")
    reference = None
    for label, sampler, steps, guidance in settings:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            op.sample(inputs, guidance_scale=guidance, num_inference_steps=steps, sampler=sampler)
            best = min(best, time.perf_counter() - start)
        reference = reference or best
        print(f"  {label:<34}{best:7.3f} s   {reference / best:5.1f}x")


SPEED = [
    ("unclip 25 steps, CFG 8 (reference)", "unclip", 25, 8.0),
    ("ddim-linspace 4 steps, CFG 8", "ddim-linspace", 4, 8.0),
    ("ddim 4 steps, CFG 8", "ddim", 4, 8.0),
    ("ddim 2 steps, CFG 8", "ddim", 2, 8.0),
    ("student, 2 passes (ddim 2, g 1)", "ddim", 2, 1.0),
    ("student / one-pass (ddim 1, g 1)", "ddim", 1, 1.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="a demo models folder (operators/, data/); omit: speed only")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--students", default="1", help="student passes to distil, comma-separated ('' = none)")
    parser.add_argument("--student-recombine", type=int, default=1, help="pops distill --recombine")
    parser.add_argument("--distill-steps", type=int, default=DistillConfig.steps, help="pops distill --steps")
    parser.add_argument("--one-pass", action="store_true", help="also train one-pass (ECLIPSE) operators")
    parser.add_argument("--one-pass-steps", type=int, help="their optimiser steps (default: the demo's)")
    parser.add_argument("--operators", help="only these operators, comma-separated (default: every one in MODELS)")
    parser.add_argument("--save", type=Path, help="save the fast operators here, and load them from here next time")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-kandinsky", action="store_true")
    args = parser.parse_args()
    if args.models is not None:
        torch.set_num_threads(1)  # small models: one thread (see pops.demo.plan.choose_threads)
        kinds = [k for k in REGISTRY if find_operator_dir(args.models, k)]
        if args.operators:
            kinds = [k for k in kinds if k in args.operators.split(",")]
        students = [int(s) for s in args.students.split(",") if s.strip()]
        config = DistillConfig(steps=args.distill_steps, recombine=args.student_recombine)
        one_pass = args.one_pass_steps if args.one_pass else False
        rows = rows_for(args.models, kinds, students, config, one_pass, args.save)
        print(f"quality on held-out test pairs of {args.models}, {args.seeds} seed(s):")
        print_quality(quality(args.models, args.seeds, rows), rows)
    if not args.skip_kandinsky:
        torch.set_num_threads(2)
        speed(SPEED, args.repeats)


if __name__ == "__main__":
    main()
