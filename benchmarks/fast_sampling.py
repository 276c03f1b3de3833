"""Few-step samplers against the 25-step reference, side by side in one run: quality and speed.

    .venv/bin/python -m benchmarks.fast_sampling --models outputs/demo [--seeds 1] [--skip-kandinsky]

1. Quality, per operator of a demo models folder on the world's held-out test pairs (the operator's own guidance):
   top-1 and gap closed = (pops − averaging) / (oracle − averaging) for every sampler × steps (1, 2, 4, 8, 25;
   unclip needs 2). "passes" counts prior forward passes per call (a guided step batches its two halves: one pass).
2. Speed at the Kandinsky 2.2 prior's size (1.03 B parameters, random weights, bf16, batch 1, CFG 8, compact
   layout): seconds per call of the reference (unclip, 25 steps) and of the few-step settings, best of the repeats.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.sampling import build
from pops.evaluation import class_prototypes, image_inputs, load_test_data, sample_pairs, top1_accuracy
from pops.evaluation.metrics import averaging_baseline
from pops.models_folder import find_operator_dir
from pops.operator import Operator
from pops.registry import REGISTRY

SETTINGS = [("unclip", s) for s in (2, 4, 8, 25)] + [(n, s) for n in ("ddim", "dpmpp") for s in (1, 2, 4, 8, 25)]
REFERENCE = ("unclip", 25)


def quality(models: Path, seeds: int) -> dict[str, dict[tuple[str, int], tuple[float, float]]]:
    """operator -> (sampler, steps) -> (top-1, gap closed), mean over `seeds` sampling seeds."""
    kinds = [k for k in REGISTRY if find_operator_dir(models, k)]
    data = load_test_data(models / "data", kinds)
    table = {}
    for kind in kinds:
        op = Operator.from_pretrained(find_operator_dir(models, kind), load_encoders=False)
        d, pairs = data[kind], data[kind].tests["test"]
        names, protos = class_prototypes(d.gallery, d.gallery_classes)
        truth = [(pairs.info.get("classes") or d.classes)[i] for i in pairs.class_ids.tolist()]
        averaging = top1_accuracy(averaging_baseline(*image_inputs(pairs)), truth, names, protos)
        oracle = top1_accuracy(pairs.target, truth, names, protos)
        table[kind] = {}
        for sampler, steps in SETTINGS:
            top1 = (
                sum(
                    top1_accuracy(
                        sample_pairs(op, pairs, guidance_scale=op.guidance_scale, seed=s, steps=steps, sampler=sampler),
                        truth,
                        names,
                        protos,
                    )
                    for s in range(seeds)
                )
                / seeds
            )
            table[kind][(sampler, steps)] = (top1, (top1 - averaging) / max(oracle - averaging, 1e-9))
        print(f"  {kind}: averaging {averaging:.3f}, oracle {oracle:.3f}", flush=True)
    return table


def print_quality(table) -> None:
    kinds = list(table)
    print(f"\n{'sampler':<8}{'steps':>6}{'passes':>7}  " + "  ".join(f"{k:>18}" for k in kinds))
    for sampler, steps in SETTINGS:
        cells = []
        for kind in kinds:
            top1, gap = table[kind][(sampler, steps)]
            ref = table[kind][REFERENCE][0]
            cells.append(f"{top1:6.3f} ({gap:4.2f}) {100 * (top1 - ref):+4.1f}")
        print(f"{sampler:<8}{steps:>6}{steps:>7}  " + "  ".join(f"{c:>18}" for c in cells))
    print("cells: held-out top-1 (gap closed) and points vs the 25-step reference")


def speed(settings, repeats: int) -> None:
    op = build(torch.bfloat16)
    inputs = [torch.randn(1, op.embedding_dim), torch.randn(1, op.embedding_dim)]
    print(
        f"\nKandinsky-size call (bf16, batch 1, CFG 8, compact), best of {repeats}, {torch.get_num_threads()} threads:"
    )
    reference = None
    for sampler, steps in settings:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            op.sample(inputs, guidance_scale=8.0, num_inference_steps=steps, sampler=sampler)
            best = min(best, time.perf_counter() - start)
        reference = reference or best
        print(f"  {sampler:<7}{steps:>3} steps  {best:7.3f} s   {reference / best:5.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="a demo models folder (operators/, data/); omit: speed only")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-kandinsky", action="store_true")
    args = parser.parse_args()
    if args.models is not None:
        torch.set_num_threads(1)  # small models: one thread (see pops.demo.config.choose_threads)
        print(f"quality on held-out test pairs of {args.models}, {args.seeds} seed(s):")
        print_quality(quality(args.models, args.seeds))
    if not args.skip_kandinsky:
        torch.set_num_threads(2)
        speed([REFERENCE, ("ddim", 2), ("dpmpp", 2), ("ddim", 4), ("dpmpp", 4)], args.repeats)


if __name__ == "__main__":
    main()
