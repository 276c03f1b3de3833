"""What a run reports: loss (overall and per timestep bucket), lr, throughput and grad-norm to TensorBoard through
accelerate's tracker; periodic validation that samples with the operator and, when a renderer is configured, renders.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pops.base.devices import make_generator
from pops.base.files import atomic_write
from pops.base.reference import NUM_TRAIN_TIMESTEPS, OBJECTIVE_SAMPLING
from pops.base.registry import OperatorSpec
from pops.embeddings.pairs import Pairs
from pops.operators.operator import Operator
from pops.renderers import load_renderer
from pops.train.config import TrainConfig

MAX_RENDERED = 8


class Monitor:
    """Accumulates per-sample losses between log steps (as tensors: no host sync per step) and logs their means; a
    joint run's also per operator (`train/loss/<kind>`)."""

    def __init__(self, accelerator, config: TrainConfig, global_batch: int):
        self.accelerator = accelerator
        self.every = config.logging.every
        self.kinds = config.kinds if config.joint else ()
        self.buckets = config.logging.timestep_buckets
        self.global_batch = global_batch
        self.enabled = self.every > 0
        if self.enabled and config.logging.tensorboard:
            accelerator.init_trackers("pops-train", config=_flat_hparams(config.to_dict()))
        self._reset()
        self.last = {}

    def _reset(self):
        device = self.accelerator.device
        self.loss_sum = torch.zeros((), device=device)
        self.micro_steps = 0
        self.bucket_sum = torch.zeros(self.buckets, device=device)
        self.bucket_count = torch.zeros(self.buckets, device=device)
        # Per operator of a joint run: loss sum and micro-steps.
        self.kind_sum = torch.zeros(2 * len(self.kinds), device=device)
        self.grad_norms = []
        self.since = time.perf_counter()
        self.steps = 0

    def record(self, loss: torch.Tensor, details: dict, kind: str | None = None) -> None:
        if not self.enabled:
            return
        self.loss_sum += loss.detach().float()
        self.micro_steps += 1
        if kind is not None:
            i = self.kinds.index(kind)
            self.kind_sum[2 * i] += loss.detach().float()
            self.kind_sum[2 * i + 1] += 1
        bucket = (details["t"].to(self.bucket_sum.device) * self.buckets // NUM_TRAIN_TIMESTEPS).clamp_max(
            self.buckets - 1
        )
        self.bucket_sum.index_add_(0, bucket, details["mse"].float().to(self.bucket_sum.device))
        self.bucket_count.index_add_(0, bucket, torch.ones_like(bucket, dtype=torch.float32))

    def step_done(self, step: int, lr: float, grad_norm, bar) -> None:
        if not self.enabled:
            return
        self.steps += 1
        if grad_norm is not None:
            self.grad_norms.append(torch.as_tensor(grad_norm).detach().float())
        if step % self.every:
            return
        acc = self.accelerator
        elapsed = time.perf_counter() - self.since
        totals = torch.cat(
            [
                self.loss_sum[None],
                torch.tensor([float(self.micro_steps)], device=acc.device),
                self.bucket_sum,
                self.bucket_count,
                self.kind_sum,
            ]
        )
        totals = acc.reduce(totals, reduction="sum") if acc.num_processes > 1 else totals
        loss = (totals[0] / totals[1].clamp_min(1)).item()
        sums, counts = totals[2 : 2 + self.buckets], totals[2 + self.buckets : 2 + 2 * self.buckets]
        kind_sums = totals[2 + 2 * self.buckets :].view(-1, 2)
        values = {
            "train/loss": loss,
            "train/lr": lr,
            "train/samples_per_second": self.steps * self.global_batch / max(elapsed, 1e-9),
        }
        if self.grad_norms:
            values["train/grad_norm"] = torch.stack(self.grad_norms).mean().item()
        for kind, (total, count) in zip(self.kinds, kind_sums.tolist()):
            if count > 0:
                values[f"train/loss/{kind}"] = total / count
        width = NUM_TRAIN_TIMESTEPS // self.buckets
        for i in range(self.buckets):
            if counts[i] > 0:
                values[f"loss_by_timestep/t{i * width:04d}-{min((i + 1) * width, NUM_TRAIN_TIMESTEPS) - 1:04d}"] = (
                    sums[i] / counts[i]
                ).item()
        acc.log(values, step=step)
        self.last = values
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self._reset()

    def log_images(self, images, step: int, tag: str = "") -> None:
        if not self.enabled:
            return
        try:
            tracker = self.accelerator.get_tracker("tensorboard", unwrap=False)
        except Exception:  # no tensorboard tracker configured
            return
        array = np.stack([np.asarray(im.convert("RGB").resize(images[0].size)) for im in images])
        tracker.log_images({f"validation/rendered{tag}": array}, step=step, dataformats="NHWC")


class Validator:
    """Samples the operator on held-out (or the first) pairs; logs cosine to the target; renders when it can.
    `tag` ends the names it logs (a joint run validates each operator: "/<kind>")."""

    def __init__(
        self, accelerator, config: TrainConfig, spec: OperatorSpec, train_pairs: Pairs, renderer=None, tag: str = ""
    ):
        v = config.validation
        self.accelerator, self.config, self.spec, self.tag = accelerator, config, spec, tag
        pairs = Pairs.load(v.data) if v.data else train_pairs
        if pairs.kind != spec.kind:
            raise ValueError(f"validation.data holds {pairs.kind!r} pairs, the run trains {spec.kind!r}")
        count = min(v.num_samples, len(pairs))
        self.batch = pairs.batch(torch.arange(count))
        if renderer is None and v.renderer:
            renderer = load_renderer(v.renderer)
        self.renderer = renderer
        self.folder = Path(config.output_dir) / "validation" / tag.strip("/")
        self.history: list[dict] = []

    @torch.no_grad()
    def run(self, model, step: int, monitor: Monitor) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            v = self.config.validation
            was_training = model.training
            model.eval()
            # On the GPU this process trains on when the noise is drawn there (the reference's generator).
            generator = make_generator(self.config.seed, "cpu" if v.generator_device == "cpu" else acc.device)
            # One chunk: the whole validation set in one sampling loop (chunks would change the random draws).
            # The call the objective trained for: the configured steps of the reference sampler, or one pass.
            sampler, steps = OBJECTIVE_SAMPLING[self.config.objective]
            out = Operator(model, self.spec.kind, sampler=sampler).sample_batch(
                self.batch,
                guidance_scale=v.guidance_scale,
                num_inference_steps=v.num_inference_steps if self.config.objective == "diffusion" else steps,
                generator=generator,
                layout=self.config.layout,
                chunk_size=None,
            )
            target = self.batch.target.to(out.device)
            cosine = torch.nn.functional.cosine_similarity(out.float(), target.float(), dim=-1).mean().item()
            record = {f"val/cosine_to_target{self.tag}": cosine}
            self.history.append(dict(record, step=step))
            acc.log(record, step=step)
            if self.renderer is not None:
                images = self.renderer.render(out[:MAX_RENDERED].cpu())
                self._save_strip(images, step)
                monitor.log_images(images, step, self.tag)
            model.train(was_training)
        acc.wait_for_everyone()

    def _save_strip(self, images, step: int) -> None:
        size = images[0].size
        strip = Image.new("RGB", (size[0] * len(images), size[1]), "white")
        for i, im in enumerate(images):
            strip.paste(im.convert("RGB").resize(size), (i * size[0], 0))
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.folder / f"step_{step:07d}.png", lambda t: strip.save(t, format="PNG"))


def _flat_hparams(config: dict, prefix: str = "") -> dict:
    """TensorBoard hparams take scalars and strings only: nested sections flattened, lists as strings."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_hparams(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = str(list(value))
        elif value is None:
            out[name] = "none"
        else:
            out[name] = value
    return out
