"""Training throughput: the reference recipe against ours, side by side in one run, same prior and same data.

    .venv/bin/python benchmarks/train_throughput.py [--seconds 20] [--layers 6 --heads 20 --head-dim 64]

(a) reference recipe: every step encodes both inputs and the target through the image encoder (the embedded world's
    EfficientNet-Lite0 at 224 px, standing in for CLIP ViT-bigG/14, which is ~40x heavier), padded 81-token layout,
    batch 1, fp32;
(b) ours: the `pops.train` trainer on cached embeddings of the same images, compact layout, batch 64, bf16 autocast.

Both use the same PopsPrior (1280-d — the encoder's width, as CLIP bigG's —, 6 layers, 20 heads x 64 by default:
Kandinsky's width at under a third of its depth), objective and AdamW. Prints samples/s, their
ratio, our model FLOP/s (counted with torch's FlopCounterMode on one training step) and its fraction of this CPU's
bf16 matmul peak, measured in the same run.

`--sweep` (for a GPU): the Kandinsky-size prior (1280-d, 20 layers, random init, random cached embeddings) trained by
the trainer for `--sweep-steps` steps at batch sizes 64-512, padded vs compact; samples/s and MFU against an H100's
dense bf16 peak (989 TFLOP/s).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from pops.base.registry import get_spec
from pops.core.objective import make_training_scheduler, training_loss
from pops.core.prior import PopsPrior, make_prior
from pops.embeddings.pairs import Batch, Pairs

H100_BF16_DENSE = 989e12


def bf16_matmul_peak(size: int = 2048, seconds: float = 3.0, dtype=torch.bfloat16, device="cpu") -> float:
    """Best FLOP/s of a square matmul over `seconds` (the practical peak of this machine for that dtype)."""
    a, b = torch.randn(size, size, dtype=dtype, device=device), torch.randn(size, size, dtype=dtype, device=device)
    flops, best, end = 2 * size**3, 0.0, time.perf_counter() + seconds
    a @ b  # warm-up (kernel selection, AMX tile configuration)
    while time.perf_counter() < end:
        start = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = max(best, flops / (time.perf_counter() - start))
    return best


def make_images(count: int, size: int = 128, seed: int = 0) -> list[tuple[Image.Image, Image.Image, Image.Image]]:
    """Texturing-like triples (object, texture patch, textured object): procedural shapes, stripes and colours."""
    rng = np.random.default_rng(seed)
    triples = []
    for _ in range(count):
        colour, stripe = tuple(int(c) for c in rng.integers(0, 255, 3)), tuple(int(c) for c in rng.integers(0, 255, 3))
        box = [int(v) for v in sorted(rng.integers(10, size - 10, 2))] * 2
        period = int(rng.integers(4, 16))
        obj = Image.new("RGB", (size, size), "white")
        ImageDraw.Draw(obj).ellipse([box[0], box[2] // 2, box[1], box[3]], fill=colour)
        patch = Image.new("RGB", (size, size), colour)
        draw = ImageDraw.Draw(patch)
        for x in range(0, size, period * 2):
            draw.rectangle([x, 0, x + period - 1, size], fill=stripe)
        target = Image.new("RGB", (size, size), "white")
        mask = Image.new("L", (size, size), 0)
        ImageDraw.Draw(mask).ellipse([box[0], box[2] // 2, box[1], box[3]], fill=255)
        target.paste(patch, (0, 0), mask)
        triples.append((obj, patch, target))
    return triples


def build_model(
    dim: int, layers: int, heads: int, head_dim: int, stats: tuple[torch.Tensor, torch.Tensor]
) -> PopsPrior:
    torch.manual_seed(0)
    model = PopsPrior(make_prior(dim, layers, heads, head_dim))
    model.set_clip_stats(*stats)
    return model


def reference_recipe(model: PopsPrior, encoder, triples, seconds: float) -> tuple[float, int]:
    """Samples/s of the reference loop: encode 3 images, padded layout, batch 1, fp32."""
    spec, scheduler = get_spec("texturing"), make_training_scheduler()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5, fused=True)
    generator = torch.Generator().manual_seed(0)

    def step(i: int) -> None:
        obj, patch, target = encoder.encode(list(triples[i % len(triples)]), batch_size=3)
        batch = Batch(slots=[obj[None], patch[None]], target=target[None])
        loss, _ = training_loss(model, spec, batch, scheduler, generator=generator, layout="padded")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(3):
        step(i)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 3:
        step(steps)
        steps += 1
    return steps / (time.perf_counter() - start), steps


def ours(
    model: PopsPrior, pairs: Pairs, batch: int, seconds: float = 0, steps: int = 0, layout="compact", precision="bf16"
):
    """(samples/s, steps) of the `pops.train` trainer: a short warm-up run that also sizes the timed run to about
    `seconds` (or exactly `steps`), then the timed run (the trainer's own loop timer, setup excluded)."""
    from pops.train import config_from_dict, train
    from pops.train.summary import SUMMARY_NAME

    out = Path(tempfile.mkdtemp(prefix="pops-bench-"))
    base = dict(
        operator=pairs.kind,
        data="(in memory)",
        output_dir=str(out),
        init="scratch",
        batch_size=batch,
        mixed_precision=precision,
        layout=layout,
        progress=False,
        optim=dict(lr=1e-5),
        logging=dict(every=0),
        checkpoint=dict(every=0, at_end=False),
        validation=dict(every=0),
    )
    train(config_from_dict(dict(base, max_steps=3)), pairs=pairs, model=copy.deepcopy(model))
    warm = json.loads((out / SUMMARY_NAME).read_text())["samples_per_second"]
    steps = steps or max(5, int(seconds * warm / batch))
    # the timed run replaces the warm-up's folder (measurements, not operators anyone keeps)
    train(config_from_dict(dict(base, max_steps=steps, overwrite=True)), pairs=pairs, model=model)
    return json.loads((out / SUMMARY_NAME).read_text())["samples_per_second"], steps


def train_step_flops(model: PopsPrior, pairs: Pairs, batch: int, layout: str) -> float:
    """Model FLOPs (forward + backward) of one training step at `batch`, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model)
    device = model.prior.clip_mean.device
    b = pairs.batch(torch.arange(batch) % len(pairs))
    b = Batch(slots=[s.to(device) for s in b.slots], target=b.target.to(device), present=b.present.to(device))
    with FlopCounterMode(display=False) as counter:
        loss, _ = training_loss(model, get_spec(pairs.kind), b, make_training_scheduler(), layout=layout)
        loss.backward()
    return float(counter.get_total_flops())


def encode_flops(encoder, images) -> float:
    """FLOPs of encoding one sample's images (what the reference recipe pays every step)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        encoder.encode(list(images), batch_size=len(images))
    return float(counter.get_total_flops())


def cpu_comparison(args) -> None:
    from pops.encoders.efficientnet import EfficientNetEncoder

    torch.set_num_threads(args.threads or torch.get_num_threads())
    dim = EfficientNetEncoder.dim  # the prior works in the encoder's space
    print(
        f"threads: {torch.get_num_threads()}   prior: {dim}-d, {args.layers} layers, {args.heads}x{args.head_dim} heads"
    )
    peak = bf16_matmul_peak(seconds=args.peak_seconds)
    peak32 = bf16_matmul_peak(seconds=args.peak_seconds / 2, dtype=torch.float32)
    print(
        f"matmul peak (2048^3, best of {args.peak_seconds:.0f} s): bf16 {peak / 1e9:.0f} GFLOP/s, fp32 "
        f"{peak32 / 1e9:.0f} GFLOP/s"
    )

    triples = make_images(args.images)
    encoder = EfficientNetEncoder(resolution=224, bf16=False)
    start = time.perf_counter()
    flat = encoder.encode([im for t in triples for im in t], batch_size=32)
    cache_seconds = time.perf_counter() - start
    obj, patch, target = flat[0::3], flat[1::3], flat[2::3]
    pairs = Pairs(
        kind="texturing", slots=[obj, patch], present=torch.ones(len(triples), 2, dtype=torch.bool), target=target
    )
    stats = (torch.cat([obj, patch, target]).mean(0), torch.cat([obj, patch, target]).std(0).clamp_min(1e-6))
    print(f"embedding cache: {3 * len(triples)} images encoded once in {cache_seconds:.1f} s (not counted below)")

    model = build_model(dim, args.layers, args.heads, args.head_dim, stats)
    ref_rate, ref_steps = reference_recipe(copy.deepcopy(model), encoder, triples, args.seconds)
    our_rate, our_steps = ours(copy.deepcopy(model), pairs, args.batch, seconds=args.seconds)
    flops_per_sample = train_step_flops(model, pairs, args.batch, "compact") / args.batch
    ref_prior_flops = train_step_flops(model, pairs, 1, "padded")
    encoder_flops = encode_flops(encoder, triples[0])
    achieved = our_rate * flops_per_sample

    rows = [
        (
            "(a) reference: encode every step, padded, batch 1, fp32",
            ref_rate,
            ref_steps,
            ref_prior_flops,
            encoder_flops,
        ),
        (f"(b) ours: cached, compact, batch {args.batch}, bf16", our_rate, our_steps, flops_per_sample, 0.0),
    ]
    print(f"\n{'recipe':<58} {'samples/s':>10} {'steps':>6} {'GFLOP/sample: prior':>20} {'encoder':>8}")
    for name, rate, steps, flops, enc in rows:
        print(f"{name:<58} {rate:>10.2f} {steps:>6d} {flops / 1e9:>20.2f} {enc / 1e9:>8.2f}")
    print(f"\nspeed-up (b)/(a): {our_rate / ref_rate:.0f}x")
    print(f"ours: {achieved / 1e9:.0f} GFLOP/s = {achieved / peak:.1%} of this CPU's measured bf16 matmul peak")


def gpu_sweep(args) -> None:
    device = "cuda"
    print(f"device: {torch.cuda.get_device_name()}   prior: 1280-d, 20 layers, 32x64 heads (random init)")
    peak = bf16_matmul_peak(size=8192, seconds=args.peak_seconds, device=device)
    print(
        f"measured bf16 matmul peak: {peak / 1e12:.0f} TFLOP/s; MFU below is against the H100 dense bf16 peak 989 "
        "TFLOP/s"
    )
    n = 4096
    g = torch.Generator().manual_seed(0)
    pairs = Pairs(
        kind="texturing",
        slots=[torch.randn(n, 1280, generator=g), torch.randn(n, 1280, generator=g)],
        present=torch.ones(n, 2, dtype=torch.bool),
        target=torch.randn(n, 1280, generator=g),
    )
    base = build_model(1280, 20, 32, 64, (torch.zeros(1280), torch.ones(1280))).to(device)
    print(f"\n{'layout':<8} {'batch':>6} {'samples/s':>10} {'TFLOP/s':>8} {'MFU (H100)':>11}")
    for layout in ("compact", "padded"):
        for batch in (64, 128, 256, 512):
            rate, _ = ours(copy.deepcopy(base), pairs, batch, steps=args.sweep_steps, layout=layout)
            flops = train_step_flops(base, pairs, batch, layout) / batch * rate
            print(
                f"{layout:<8} {batch:>6d} {rate:>10.0f} {flops / 1e12:>8.1f} {flops / H100_BF16_DENSE:>11.1%}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="Timed seconds per recipe (about).")
    parser.add_argument("--peak-seconds", type=float, default=4.0)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=20)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=32, help="Distinct (object, texture, target) triples.")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sweep", action="store_true", help="The GPU sweep (Kandinsky-size prior) instead.")
    parser.add_argument("--sweep-steps", type=int, default=300)
    args = parser.parse_args()
    gpu_sweep(args) if args.sweep else cpu_comparison(args)


if __name__ == "__main__":
    main()
