"""GPU check: the real stack's sizes on CUDA, with random weights (speed and memory do not depend on their values).

    python benchmarks/gpu_check.py [--out gpu_check.json] [--train-steps 30] [--skip-train] [--skip-render]

1. operator call: the Kandinsky 2.2 prior's size (1280-d, 20 layers, 32x64 heads, ~1.0 B parameters), 25 unclip
   steps, CFG 8, fp16 and bf16, compact vs padded layout, batch 1 and 8 — seconds per call (best of the repeats);
   and the CUDA noise generator (`--generator-device cuda`): same seed, same samples; not the CPU generator's;
2. training: the `pops.train` trainer on random cached embeddings, bf16 mixed precision, batch 64-512, compact vs
   padded — samples/s, model TFLOP/s (torch's FlopCounterMode on one step) and MFU against this GPU's measured bf16
   matmul peak and against the H100/H200 dense bf16 spec (989 TFLOP/s); peak memory of each run;
3. peak memory (torch.cuda.max_memory_allocated) of apply — CLIP ViT-bigG/14 image encoder (fp16) encoding two
   pictures, then the operator sampling 4 outputs — and of rendering 4 pictures at 512² with a Kandinsky 2.2
   decoder-size UNet + MoVQ (fp16; configs written out below, parameter counts printed to compare with the hub's).

SDXL + IP-Adapter is not covered (its text encoders need tokenizer files from the hub). On a machine without CUDA
the script says so and exits with status 2; `--smoke` runs every section on the CPU at toy sizes to check the code
path only — its numbers mean nothing and are labelled so.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

SPEC_BF16_DENSE = 989e12  # H100 / H200 SXM dense bf16 (the H200 has the H100's compute)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_reset(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def prior_sizes(smoke: bool) -> dict:
    if smoke:
        return dict(embedding_dim=64, num_layers=2, num_attention_heads=2, attention_head_dim=32)
    return dict(embedding_dim=1280, num_layers=20, num_attention_heads=32, attention_head_dim=64)


def build_operator(dtype: torch.dtype, device: str, smoke: bool):
    from sampling import build  # benchmarks/sampling.py: random weights allocated once, in the final dtype

    return build(dtype, **prior_sizes(smoke)).to(device=device)


def time_call(op, batch: int, layout: str, repeats: int, device: str, generator_device: str = "cpu") -> float:
    from pops.base.devices import make_generator

    dim = op.embedding_dim
    inputs = [torch.randn(batch, dim), torch.randn(batch, dim)]
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        op.sample(inputs, guidance_scale=8.0, generator=make_generator(0, generator_device), layout=layout)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def generator_check(op, device: str) -> dict:
    """The reference draws its noise with a generator on the GPU (`--generator-device cuda`): the same seed must give
    the same samples, and other numbers than the CPU generator's."""
    from pops.base.devices import make_generator

    inputs = [torch.randn(2, op.embedding_dim), torch.randn(2, op.embedding_dim)]

    def draw(where: str) -> torch.Tensor:
        return op.sample(inputs, guidance_scale=8.0, generator=make_generator(5, where)).float().cpu()

    first, again, cpu = draw(device), draw(device), draw("cpu")
    rows = {
        "generator: same seed same samples": bool(torch.equal(first, again)),
        "generator: differs from the CPU generator": device == "cpu" or not torch.allclose(first, cpu),
    }
    print(f"  {device} generator: {rows}", flush=True)
    return rows


def operator_calls(args, device: str) -> dict:
    rows = {}
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        op = build_operator(dtype, device, args.smoke)
        time_call(op, 1, "compact", 1, device)  # warm-up (kernels, allocator)
        for batch in (1, 8):
            for layout in ("compact", "padded"):
                seconds = time_call(op, batch, layout, args.repeats, device)
                rows[f"{name} batch {batch} {layout}"] = seconds
                print(f"  operator call {name:4s} batch {batch} {layout:7s}: {seconds:.3f} s", flush=True)
        if name == "bf16":
            rows.update(generator_check(op, device))
        del op
        peak_reset(device)
    return rows


def training(args, device: str) -> dict:
    from train_throughput import bf16_matmul_peak, ours, train_step_flops

    from pops.core.prior import PopsPrior, make_prior
    from pops.embeddings.pairs import Pairs

    size = 512 if args.smoke else 8192
    peak = bf16_matmul_peak(size=size, seconds=1.0 if args.smoke else 4.0, device=device)
    print(f"  measured bf16 matmul peak ({size}^3): {peak / 1e12:.1f} TFLOP/s", flush=True)
    sizes = prior_sizes(args.smoke)
    dim, n = sizes["embedding_dim"], 1024 if args.smoke else 4096
    g = torch.Generator().manual_seed(0)
    pairs = Pairs(
        kind="texturing",
        slots=[torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)],
        present=torch.ones(n, 2, dtype=torch.bool),
        target=torch.randn(n, dim, generator=g),
    )
    torch.manual_seed(0)
    base = PopsPrior(make_prior(**sizes))
    base.set_clip_stats(torch.zeros(dim), torch.ones(dim))
    base = base.to(device)
    rows = {"matmul_peak_tflops": peak / 1e12}
    batches = (64, 128) if args.smoke else (64, 128, 256, 512)
    for layout in ("compact", "padded"):
        for batch in batches:
            peak_reset(device)
            rate, _ = ours(copy.deepcopy(base), pairs, batch, steps=args.train_steps, layout=layout)
            memory = peak_gib(device)
            flops = train_step_flops(base, pairs, batch, layout) / batch * rate
            rows[f"{layout} batch {batch}"] = dict(
                samples_per_s=rate,
                tflops=flops / 1e12,
                mfu_measured_peak=flops / peak,
                mfu_spec=flops / SPEC_BF16_DENSE,
                peak_gib=memory,
            )
            shown = "-" if memory is None else f"{memory:.1f} GiB"
            print(
                f"  train {layout:7s} batch {batch:3d}: {rate:8.0f} samples/s, {flops / 1e12:6.1f} TFLOP/s, "
                f"MFU {flops / peak:6.1%} of measured / {flops / SPEC_BF16_DENSE:6.1%} of spec, peak {shown}",
                flush=True,
            )
    return rows


def bigg_vision(smoke: bool):
    """(build, processor): CLIP ViT-bigG/14 (laion2B-39B-b160k), the vision tower of the Kandinsky 2.2 prior repo."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    if smoke:
        config = dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            projection_dim=64,
        )
    else:
        config = dict(
            hidden_size=1664,
            intermediate_size=8192,
            num_hidden_layers=48,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
            projection_dim=1280,
            hidden_act="gelu",
        )
    side = config["image_size"]
    processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return (lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**config))), processor


def on_device(build, device: str, dtype: torch.dtype):
    """`build()` with its random initialisation run on `device` (fast on a GPU), then cast to `dtype`."""
    with torch.device(device):
        model = build()
    return model.to(dtype).eval().requires_grad_(False)


def kandinsky_decoder(smoke: bool):
    from diffusers import DDPMScheduler, UNet2DConditionModel, VQModel

    if smoke:
        unet = dict(
            block_out_channels=(32, 64),
            layers_per_block=1,
            attention_head_dim=4,
            cross_attention_dim=32,
            encoder_hid_dim=64,
            norm_num_groups=8,
            down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
            up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        )
        movq = dict(
            block_out_channels=[32, 64],
            down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
            up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
            layers_per_block=1,
            norm_num_groups=8,
            num_vq_embeddings=12,
        )
    else:  # kandinsky-community/kandinsky-2-2-decoder unet/ and movq/ configs
        unet = dict(
            block_out_channels=(384, 768, 1152, 1536),
            layers_per_block=3,
            attention_head_dim=64,
            cross_attention_dim=768,
            encoder_hid_dim=1280,
            norm_num_groups=32,
            down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
            up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
        )
        movq = dict(
            block_out_channels=[128, 256, 256, 512],
            down_block_types=["DownEncoderBlock2D"] * 3 + ["AttnDownEncoderBlock2D"],
            up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 3,
            layers_per_block=2,
            norm_num_groups=32,
            num_vq_embeddings=16384,
        )
    unet_kwargs, movq_kwargs = unet, movq

    def build_unet():
        return UNet2DConditionModel(
            in_channels=4,
            out_channels=8,
            addition_embed_type="image",
            encoder_hid_dim_type="image_proj",
            mid_block_type="UNetMidBlock2DSimpleCrossAttn",
            resnet_time_scale_shift="scale_shift",
            **unet_kwargs,
        )

    def build_movq():
        return VQModel(
            in_channels=3, out_channels=3, latent_channels=4, norm_type="spatial", vq_embed_dim=4, **movq_kwargs
        )

    scheduler = DDPMScheduler(
        beta_schedule="linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        variance_type="learned_range",
        steps_offset=1,
        prediction_type="epsilon",
    )
    return build_unet, build_movq, scheduler


def millions(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def memory(args, device: str) -> dict:
    from diffusers import KandinskyV22Pipeline
    from PIL import Image

    from pops.base.devices import make_generator
    from pops.encoders.clip import CLIPImageEncoder
    from pops.renderers.kandinsky import KandinskyRenderer

    dtype = torch.float16 if device == "cuda" else torch.float32
    rows = {}
    # apply: encode two pictures with bigG, then sample 4 outputs of the operator (weights first, then the peak).
    build, processor = bigg_vision(args.smoke)
    model = on_device(build, device, dtype)
    rows["CLIP ViT-bigG/14 vision parameters (M)"] = millions(model)
    encoder = CLIPImageEncoder(model, processor, device=device, dtype=dtype, resize=512)
    op = build_operator(dtype, device, args.smoke)
    peak_reset(device)
    pictures = [Image.new("RGB", (640, 480), (200, 120, 40)), Image.new("RGB", (300, 300), (20, 90, 200))]
    sync(device)
    start = time.perf_counter()
    embeds = encoder.encode(pictures)  # (2, 1280): the operator's inputs
    op.sample([embeds[:1], embeds[1:]], guidance_scale=8.0, batch_size=4, generator=make_generator(0))
    sync(device)
    rows["apply: seconds (encode 2 pictures, 4 samples)"] = time.perf_counter() - start
    rows["apply: peak GiB (bigG + prior, fp16)"] = peak_gib(device)
    print(f"  apply: {rows}", flush=True)
    negative = encoder.zero_image_embedding()
    del op, encoder, model
    # render: 4 pictures at 512² (6 steps: the peak does not grow with the number of steps).
    build_unet, build_movq, scheduler = kandinsky_decoder(args.smoke)
    unet, movq = on_device(build_unet, device, dtype), on_device(build_movq, device, dtype)
    rows["Kandinsky decoder UNet parameters (M)"], rows["MoVQ parameters (M)"] = millions(unet), millions(movq)
    pipe = KandinskyV22Pipeline(unet=unet, movq=movq, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    width = unet.config.encoder_hid_dim
    negative = negative if negative.shape[1] == width else torch.zeros(1, width)
    renderer = KandinskyRenderer(pipe, negative, num_inference_steps=6, size=32 if args.smoke else 512)
    peak_reset(device)
    sync(device)
    start = time.perf_counter()
    renderer.render(torch.randn(4, width), generator=make_generator(0))
    sync(device)
    rows["render: seconds per step (4 pictures)"] = (time.perf_counter() - start) / 6
    rows["render: peak GiB (Kandinsky decoder fp16, 4 x 512²)"] = peak_gib(device)
    print(f"  render: {rows}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="Also write the results as JSON here.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=30, help="Timed training steps per configuration.")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-render", action="store_true", help="Skip the apply/render memory section.")
    parser.add_argument("--smoke", action="store_true", help="CPU, toy sizes: checks the code path, measures nothing.")
    args = parser.parse_args()
    if args.smoke:
        device = "cpu"
        args.repeats, args.train_steps = 1, min(args.train_steps, 3)
        print("SMOKE RUN on the CPU at toy sizes: the numbers below mean nothing about any GPU.")
    elif not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); run it on a machine "
            "with one (or --smoke to check the code path on the CPU)",
            file=sys.stderr,
        )
        return 2
    else:
        device = "cuda"
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    results = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)", "smoke": args.smoke}
    print("1. operator call (25 unclip steps, CFG 8)")
    results["operator_call_seconds"] = operator_calls(args, device)
    if not args.skip_train:
        print("2. training (pops.train, bf16 mixed precision)")
        results["training"] = training(args, device)
    if not args.skip_render:
        print("3. peak memory of apply and render")
        results["memory"] = memory(args, device)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
