"""An exponential moving average of the trained weights.

Same update rule as diffusers' `EMAModel` without warm-up (ema ← d·ema + (1 − d)·param, with
d = min(decay, (1 + n) / (10 + n)) at the n-th update, so early averages do not cling to the initial weights); a
small class of our own because importing diffusers.training_utils pulls in transformers (seconds per process).
"""

from __future__ import annotations

from typing import Iterable

import torch


class EMA:
    def __init__(self, parameters: Iterable[torch.nn.Parameter], decay: float = 0.9999, update_after_step: int = 0):
        self.shadow = [p.detach().clone().float() for p in parameters]
        self.decay = float(decay)
        self.update_after_step = int(update_after_step)
        self.optimization_step = 0

    def current_decay(self) -> float:
        """The decay of the next update (0 = copy the weights, before `update_after_step` updates have passed)."""
        n = self.optimization_step - self.update_after_step
        if n <= 0:
            return 0.0
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        decay = self.current_decay()
        self.optimization_step += 1
        params = [p.detach().float() for p in parameters]
        if len(params) != len(self.shadow):
            raise ValueError(f"EMA tracks {len(self.shadow)} tensors, got {len(params)}")
        torch._foreach_lerp_(self.shadow, params, 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        for shadow, p in zip(self.shadow, parameters):
            p.copy_(shadow.to(p.dtype))

    def to(self, device) -> "EMA":
        self.shadow = [s.to(device) for s in self.shadow]
        return self

    # accelerate's register_for_checkpointing saves/loads objects through these two
    def state_dict(self) -> dict:
        return {"decay": self.decay, "update_after_step": self.update_after_step,
                "optimization_step": self.optimization_step, "shadow": [s.cpu() for s in self.shadow]}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(f"EMA state has {len(state['shadow'])} tensors, this run tracks {len(self.shadow)}")
        device = self.shadow[0].device if self.shadow else "cpu"
        self.shadow = [s.to(device).float() for s in state["shadow"]]
        self.decay, self.update_after_step = float(state["decay"]), int(state["update_after_step"])
        self.optimization_step = int(state["optimization_step"])
