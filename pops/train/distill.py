"""One-pass students by direct-regression distillation (Luhman & Luhman 2021, "Knowledge distillation in iterative
generative models"): the student learns, in one forward pass, where the teacher's guided deterministic sampler ends.

1. Targets, once: for every training condition (its dropped slots kept: the null conditions the pairs hold) and
   `noises` initial noises z, the teacher's guided DDIM sample from z (`teacher_steps` steps, the teacher's own
   guidance scale) — deterministic, so z alone decides it.
2. Regression: the student, a copy of the teacher, predicts x0 at t = 999 from z and the condition alone (no
   unconditional pass: the guidance is folded into its weights); MSE in the prior's normalised space to the target.

The student is called as `ddim` with 1 step, which is exactly that pass (trailing timesteps start at t = 999 and
return the prediction), at guidance 1 (no second, unconditional half); both are saved with it (`op.sampler`,
`op.guidance_scale`), so `pops apply`, equations, the UI and `pops eval` use it unchanged.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pops import checks
from pops.operator import Operator
from pops.pairs import Pairs
from pops.prior import Condition
from pops.reference import NUM_TRAIN_TIMESTEPS

STUDENT_SAMPLER = "ddim"  # with 1 step: one pass of the prior at t = 999 (pops.sampler.sample_ddim)
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
    seed: int = 0

    def check(self) -> None:
        for name in ("steps", "noises", "batch_size"):
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
        )
        targets.append(teacher.model.normalize(raw))
    return Targets(index, torch.cat(noises), torch.cat(targets))


def one_pass(op: Operator, cond: Condition, noise: torch.Tensor) -> torch.Tensor:
    """The student's output, normalised and unclamped: its x0 prediction at the last training timestep from `noise`,
    conditional only — what `ddim` with 1 step at guidance 1 returns before its clamp and de-normalisation."""
    t = torch.full((noise.shape[0],), NUM_TRAIN_TIMESTEPS - 1, dtype=torch.long, device=noise.device)
    return op.model(noise.to(op.device), t, cond, layout="compact")


def condition_of(op: Operator, pairs: Pairs, index: torch.Tensor) -> Condition:
    """Condition rows of the samples at `index`, their absent slots as the null condition (as sample_batch does)."""
    batch = pairs.batch(index)
    return op.model.condition(op.spec, batch.slots, drop=~batch.present.bool())


def distill(teacher: Operator, pairs: Pairs, config: DistillConfig, *, teacher_name: str = "", log=None) -> Operator:
    """A one-pass student of `teacher`, trained on the conditions of `pairs` (the teacher is left as it was)."""
    config.check()
    if pairs.kind != teacher.spec.name:
        raise ValueError(f"the pairs are for {pairs.kind!r}, the teacher is a {teacher.spec.name!r} operator")
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
    started = time.perf_counter()
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
        loss = F.mse_loss(one_pass(student, cond, targets.noise[pick]), targets.target[pick].to(student.device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if log is not None and (step + 1) % max(config.steps // 5, 1) == 0:
            log(f"step {step + 1}/{config.steps}  loss {loss.item():.4f}")
    student.model.eval()
    student.guidance_scale, student.sampler, student.num_inference_steps = 1.0, STUDENT_SAMPLER, 1
    student.training = training_record(
        teacher, teacher_name, pairs, config, loss.item(), target_seconds, time.perf_counter() - started
    )
    return student


def training_record(teacher, teacher_name, pairs, config, final_loss, target_seconds, seconds) -> dict:
    """The student's model-card rows and summary: its teacher, the method, how it must be called."""
    teacher_sampling = f"{TEACHER_SAMPLER}, {config.teacher_steps} steps, guidance {teacher.guidance_scale:g}"
    rows = [
        ("method", "direct-regression distillation (Luhman & Luhman 2021), `pops distill`"),
        ("teacher", teacher_name or "(in memory)"),
        ("teacher sampling (targets)", teacher_sampling),
        ("student sampling", f"{STUDENT_SAMPLER}, 1 step, guidance 1 (one pass, guidance folded in)"),
        ("training conditions", f"{len(pairs)} × {config.noises} noises"),
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
        "student_steps": 1,
        "conditions": len(pairs),
        "noises": config.noises,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "seed": config.seed,
        "final_loss": round(final_loss, 6),
    }
    return {"rows": [[label, value] for label, value in rows], "summary": summary}
