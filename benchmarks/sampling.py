"""Padded (the reference layout) vs compact sampling, side by side in one run.

    .venv/bin/python benchmarks/sampling.py [--repeats 3] [--skip-kandinsky]

1. a mid-size prior (512-d, 6 layers, 8×64 heads), batch 4, 25 steps, CFG 8, fp32;
2. the Kandinsky 2.2 prior's size (1280-d, 20 layers, 32×64 heads, ~1.0 B parameters) in bf16, batch 1, 25 steps,
   CFG 8 — random weights (timing does not depend on their values).
Prints seconds per operator call (best of the repeats) and the padded/compact ratios.
"""

from __future__ import annotations

import argparse
import time

import torch
from accelerate import init_empty_weights

from pops.core.prior import make_prior
from pops.operators.operator import Operator


def build(dtype: torch.dtype, **sizes) -> Operator:
    with init_empty_weights():  # allocate once, in the final dtype: a 1 B-parameter fp32 init would take ~4 GiB
        prior = make_prior(**sizes)
    prior = prior.to_empty(device="cpu").to(dtype)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in prior.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
        prior.clip_mean.zero_()
        prior.clip_std.fill_(1.0)
    prior.register_buffer("causal_attention_mask", torch.full((81, 81), -10000.0).triu_(1)[None], persistent=False)
    return Operator.from_prior(prior.eval(), "texturing")


def time_call(op: Operator, batch: int, layout: str, repeats: int) -> float:
    inputs = [torch.randn(batch, op.embedding_dim), torch.randn(batch, op.embedding_dim)]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        op.sample(
            inputs,
            guidance_scale=8.0,
            num_inference_steps=25,
            generator=torch.Generator().manual_seed(0),
            layout=layout,
        )
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-kandinsky", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    cases = [
        (
            "mid-size 512-d x6, fp32, batch 4",
            torch.float32,
            4,
            dict(embedding_dim=512, num_layers=6, num_attention_heads=8, attention_head_dim=64),
        )
    ]
    if not args.skip_kandinsky:
        cases.append(("Kandinsky 2.2 size, bf16, batch 1", torch.bfloat16, 1, dict()))
    for name, dtype, batch, sizes in cases:
        op = build(dtype, **sizes)
        params = sum(p.numel() for p in op.model.parameters()) / 1e6
        time_call(op, batch, "compact", 1)  # warm-up
        compact = time_call(op, batch, "compact", args.repeats)
        padded = time_call(op, batch, "padded", max(1, args.repeats - 1))
        rows.append((name, params, padded, compact))
        del op
    print(f"\n{'prior (25 steps, CFG 8)':36s} {'params':>9s} {'padded s':>9s} {'compact s':>10s} {'speed-up':>9s}")
    for name, params, padded, compact in rows:
        print(f"{name:36s} {params:8.1f}M {padded:9.3f} {compact:10.3f} {padded / compact:8.1f}x")


if __name__ == "__main__":
    main()
