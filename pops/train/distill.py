"""Few-pass students by direct-regression distillation (Luhman & Luhman 2021, "Knowledge distillation in iterative
generative models"): the student learns, in one (or k) forward passes, where the teacher's guided deterministic
sampler ends.

1. Targets, once: for every training condition (its dropped slots kept: the null conditions the pairs hold; with
   `recombine`, also the pairs recombined within their input classes, pops.embeddings.pairs.recombine) and `noises`
   initial noises z, the teacher's guided DDIM sample from z (`teacher_steps` steps, the teacher's own guidance scale) —
   deterministic, so z alone decides it.
2. Regression: the student, a copy of the teacher, runs its own call from z and the condition alone — `ddim` with
   `student_steps` steps at guidance 1 (no unconditional pass: the guidance is folded into its weights), the chain
   differentiated end to end — and learns by MSE in the prior's normalised space to the target.

With 1 step the student's call is one pass of the prior at t = 999 (trailing timesteps start there and return the
prediction). Its sampler, steps and guidance 1 are saved with it (`op.sampler`, `op.num_inference_steps`,
`op.guidance_scale`), so `pops apply`, equations, the UI and `pops eval` use it unchanged.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pops.base import checks
from pops.core.prior import Condition
from pops.core.sampler import CLIP_RANGE, ddim_scheduler
from pops.embeddings.pairs import Pairs, recombine
from pops.operators.operator import Operator
from pops.train.summary import training_record

STUDENT_SAMPLER = "ddim"  # with 1 step: one pass of the prior at t = 999 (pops.core.sampler.sample_ddim)
TEACHER_SAMPLER = "ddim"  # deterministic: the target is a function of the initial noise
TARGET_CHUNK = 512  # conditions per teacher sampling call: bounds its memory


@dataclass(frozen=True)
class DistillConfig:
    steps: int = 150  # optimiser steps; 150 x 2 noises: texturing validation top-1 0.904 (300: 0.908), ~45 s
    noises: int = 2  # initial noises per training condition
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.0
    teacher_steps: int = 25
    student_steps: int = 1  # the student's own call: ddim with this many steps (passes), guidance 1
    recombine: int = 1  # training conditions per pair: the pairs recombined within their input classes
    seed: int = 0

    def check(self) -> None:
        for name in ("steps", "noises", "batch_size", "student_steps", "recombine"):
            checks.count(getattr(self, name), name.replace("_", "-"))
        checks.steps(self.teacher_steps, "teacher-steps")
        checks.learning_rate(self.lr, "lr")
        checks.real(self.weight_decay, "weight-decay", 0.0)
        checks.seed(self.seed, "seed")


@dataclass
class Targets:
    """The regression set: sample i is condition `index[i]` of the pairs, initial noise `noise[i]`, and the teacher's
    result `target[i]` (normalised space)."""

    index: torch.Tensor
    noise: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return self.index.shape[0]


@torch.no_grad()
def teacher_targets(teacher: Operator, pairs: Pairs, config: DistillConfig) -> Targets:
    """The teacher's guided deterministic samples, `config.noises` per condition of `pairs`, in chunks."""
    index = torch.arange(len(pairs)).repeat_interleave(config.noises)
    noises, targets = [], []
    for number, start in enumerate(range(0, len(index), TARGET_CHUNK)):
        part = index[start : start + TARGET_CHUNK]
        seed = config.seed * 1_000_003 + number
        # The sampler's first draw from its generator is the initial noise, randn((B, D)) (times DDIM's
        # init_noise_sigma, 1): the same draw from the same seed gives us z (tests/test_distill.py checks this).
        noises.append(torch.randn((len(part), teacher.embedding_dim), generator=torch.Generator().manual_seed(seed)))
        raw = teacher.sample_batch(
            pairs.subset(part),
            guidance_scale=teacher.guidance_scale,
            num_inference_steps=config.teacher_steps,
            generator=torch.Generator().manual_seed(seed),
            chunk_size=None,
            sampler=TEACHER_SAMPLER,
            draws=1,  # one sample from z, whatever the teacher averages by default: the student maps z to it
        )
        targets.append(teacher.model.normalize(raw))
    return Targets(index, torch.cat(noises), torch.cat(targets))


def student_output(op: Operator, cond: Condition, noise: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """The student's call from `noise`, normalised and differentiable: `ddim` with `steps` steps, conditional only —
    what sample_ddim at guidance 1 returns before de-normalisation (with 1 step: the prior's prediction at t = 999)."""
    scheduler = ddim_scheduler()
    scheduler.set_timesteps(steps, device=noise.device)
    latents = noise.to(op.device)
    for t in scheduler.timesteps:
        prediction = op.model(latents, t, cond, layout="compact").clamp(-CLIP_RANGE, CLIP_RANGE)
        latents = scheduler.step(prediction, t, latents).prev_sample
    return latents


def condition_of(op: Operator, pairs: Pairs, index: torch.Tensor) -> Condition:
    """Condition rows of the samples at `index`, their absent slots as the null condition (as sample_batch does)."""
    batch = pairs.batch(index)
    return op.model.condition(op.spec, batch.slots, drop=~batch.present.bool())


def distill(teacher: Operator, pairs: Pairs, config: DistillConfig, *, teacher_name: str = "", log=None) -> Operator:
    """A one-pass student of `teacher`, trained on the conditions of `pairs` (the teacher is left as it was)."""
    config.check()
    if pairs.kind != teacher.spec.kind:
        raise ValueError(f"the pairs are for {pairs.kind!r}, the teacher is a {teacher.spec.kind!r} operator")
    if len(pairs) == 0:
        raise ValueError("the pairs file holds no samples")
    if pairs.target.shape[1] != teacher.embedding_dim:
        raise ValueError(
            f"the pairs hold {pairs.target.shape[1]}-d embeddings, the teacher works in {teacher.embedding_dim}-d"
        )
    prior = teacher.model.prior.config
    width = prior["num_attention_heads"] * prior["attention_head_dim"]
    tokens = teacher.spec.num_slots + prior["additional_embeddings"] + (8 if teacher.spec.text_slots else 0)
    checks.memory(
        checks.transformer_bytes(config.batch_size, tokens, width, prior["num_layers"], training=True),
        f"distilling with batch_size {config.batch_size}",
        "give a smaller --batch-size",
    )
    if config.recombine > 1 and "input_classes" not in pairs.info:
        raise ValueError("recombine needs pairs that name their inputs' classes (a demo's data/<kind>-train pairs)")
    started = time.perf_counter()
    pairs = recombine(pairs, config.recombine, seed=config.seed)
    targets = teacher_targets(teacher, pairs, config)
    target_seconds = time.perf_counter() - started
    student = copy.deepcopy(teacher)
    student.model.train()
    parameters = student.model.trainable_parameters()
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    order, position, loss = torch.randperm(len(targets), generator=generator), 0, torch.tensor(float("nan"))
    for step in range(config.steps):
        if position + config.batch_size > len(order) and position > 0:
            order, position = torch.randperm(len(targets), generator=generator), 0
        pick = order[position : position + config.batch_size]
        position += len(pick)
        cond = condition_of(student, pairs, targets.index[pick])
        output = student_output(student, cond, targets.noise[pick], config.student_steps)
        loss = F.mse_loss(output, targets.target[pick].to(student.device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if log is not None and (step + 1) % max(config.steps // 5, 1) == 0:
            log(f"step {step + 1}/{config.steps}  loss {loss.item():.4f}")
    student.model.eval()
    student.guidance_scale, student.sampler, student.num_inference_steps = 1.0, STUDENT_SAMPLER, config.student_steps
    student.draws = 1  # its call is the few passes it was trained for, whatever its teacher averaged
    student.training = student_record(
        teacher, teacher_name, pairs, config, loss.item(), target_seconds, time.perf_counter() - started
    )
    return student


def student_record(teacher, teacher_name, pairs, config, final_loss, target_seconds, seconds) -> dict:
    """The student's model-card rows and summary: its teacher, the method, how it must be called."""
    teacher_sampling = f"{TEACHER_SAMPLER}, {config.teacher_steps} steps, guidance {teacher.guidance_scale:g}"
    passes = "1 step (one pass)" if config.student_steps == 1 else f"{config.student_steps} steps (passes)"
    recombined = f" (pairs recombined x{config.recombine})" if config.recombine > 1 else ""
    rows = [
        ("method", "direct-regression distillation (Luhman & Luhman 2021), `pops distill`"),
        ("teacher", teacher_name or "(in memory)"),
        ("teacher sampling (targets)", teacher_sampling),
        ("student sampling", f"{STUDENT_SAMPLER}, {passes}, guidance 1 (guidance folded in)"),
        ("training conditions", f"{len(pairs)} × {config.noises} noises" + recombined),
        ("steps", config.steps),
        ("batch size", config.batch_size),
        ("learning rate", f"{config.lr:g} (AdamW)"),
        ("final loss (MSE, normalised)", f"{final_loss:.4f}"),
        ("time", f"{seconds:.1f} s ({target_seconds:.1f} s of teacher targets)"),
    ]
    summary = {
        "method": "distill",
        "teacher": teacher_name,
        "teacher_sampler": TEACHER_SAMPLER,
        "teacher_steps": config.teacher_steps,
        "teacher_guidance_scale": teacher.guidance_scale,
        "student_sampler": STUDENT_SAMPLER,
        "student_steps": config.student_steps,
        "guidance_folded": True,
        "conditions": len(pairs),
        "recombine": config.recombine,
        "noises": config.noises,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "seed": config.seed,
        "final_loss": round(final_loss, 6),
    }
    return training_record(rows, summary)
