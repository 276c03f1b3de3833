"""The training objective: denoise a target embedding given the operator's (partly dropped) inputs.

x0-prediction (DDPM with `prediction_type="sample"`, cosine schedule, t uniform over 1000 steps), MSE to the
normalised target. Per-operator rules come from the registry: condition dropout (the null condition that guidance
needs), random A/B swaps for symmetric operators, and instruct's text-alignment term
`w · (1 − cos(un-normalised prediction, text embedding of "A {word} {object} {placement}"))`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from pops.pairs import Batch
from pops.prior import PopsPrior
from pops.registry import OperatorSpec

TRAINING_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample")


def make_training_scheduler(config: dict | None = None) -> DDPMScheduler:
    return DDPMScheduler(**(config or TRAINING_SCHEDULER_CONFIG))


def training_loss(
    model: PopsPrior,
    spec: OperatorSpec,
    batch: Batch,
    noise_scheduler: DDPMScheduler,
    *,
    generator: torch.Generator | None = None,
    layout: str = "compact",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The mean loss and per-sample details (`t`, `mse`) for logging."""
    target = model.normalize(batch.target.float())
    size, device = target.shape[0], target.device
    slots = list(batch.slots)
    present = batch.present
    if spec.swap_inputs:
        slots, present = _random_swap(slots, present, generator)

    drop = spec.dropout.sample(size, spec.num_slots, generator).to(device)
    if present is not None:
        drop = drop | ~present.to(device)
    cond = model.condition(spec, slots, drop=drop)

    steps = noise_scheduler.config.num_train_timesteps
    t = torch.randint(0, steps, (size,), generator=generator).to(device)
    noise = torch.randn(target.shape, generator=generator).to(device)
    x_t = noise_scheduler.add_noise(target, noise, t)
    pred = model(x_t, t, cond, layout=layout)

    mse = F.mse_loss(pred, target, reduction="none").mean(dim=1)
    loss = mse.mean()
    details = {"t": t, "mse": mse.detach()}
    if spec.text_alignment_weight and batch.align_text is not None:
        cosine = F.cosine_similarity(model.denormalize(pred), batch.align_text.to(device).float(), dim=-1)
        align = spec.text_alignment_weight * (1 - cosine)
        loss = loss + align.mean()
        details["align"] = align.detach()
    return loss, details


def _random_swap(slots, present, generator):
    """Swap slots 0 and 1 for a random half of the batch (symmetric operators such as union)."""
    a, b = slots[0], slots[1]
    if a is None or b is None:
        return slots, present
    swap = torch.rand(a.shape[0], generator=generator).to(a.device) < 0.5
    sel = swap[:, None]
    slots = [torch.where(sel, b, a), torch.where(sel, a, b), *slots[2:]]
    if present is not None:
        present = torch.cat([torch.where(sel, present[:, [1, 0]], present[:, :2]), present[:, 2:]], dim=1)
    return slots, present
