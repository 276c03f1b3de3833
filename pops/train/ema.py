"""An exponential moving average of the trained weights: torch's `AveragedModel` with diffusers' EMA decay rule.

ema ← d·ema + (1 − d)·param with d = min(decay, (1 + n) / (10 + n)) at the n-th update after `update_after_step`
(the first updates copy), so early averages do not cling to the initial weights — `EMAModel`'s rule without
warm-up. torch's class holds the copy and the update count (checkpointed with the run through its state dict);
only the decay rule is ours (diffusers' `EMAModel` itself would import transformers, seconds per process).
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


def ema_decay(decay: float, update: int, update_after_step: int = 0) -> float:
    """The decay of the `update`-th update (0-based); 0 copies the weights."""
    n = update - update_after_step
    return 0.0 if n <= 0 else min(decay, (1 + n) / (10 + n))


def ema_model(model: torch.nn.Module, decay: float = 0.9999, update_after_step: int = 0) -> AveragedModel:
    """A moving average of `model`'s parameters: `.update_parameters(model)` after each optimiser step,
    `copy_ema_to(ema, model)` at the end."""

    def average(averaged, current, num_averaged):
        torch._foreach_lerp_(averaged, current, 1.0 - ema_decay(decay, int(num_averaged), update_after_step))

    return AveragedModel(model, multi_avg_fn=average, use_buffers=False)


@torch.no_grad()
def copy_ema_to(ema: AveragedModel, model: torch.nn.Module) -> None:
    for averaged, param in zip(ema.module.parameters(), model.parameters()):
        param.copy_(averaged)
