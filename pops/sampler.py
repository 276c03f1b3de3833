"""Sampling an operator: ancestral UnCLIP sampling with classifier-free guidance.

The loop is the reference one (the Kandinsky 2.2 prior pipeline, as pOps uses it): latents are
`randn((B, D), generator) * init_noise_sigma`; at each of the scheduler's timesteps the prior predicts x0, guidance
mixes the unconditional and conditional predictions (batched together, unconditional first) when the scale is above
1, and `UnCLIPScheduler.step` takes the DDPM posterior step (Ho et al. 2020, eq. 7; Ramesh et al. 2022) drawing its
variance noise from the same generator. The result is un-normalised with the prior's clip statistics.

`pops.Operator` is the one caller (its `sample` and `sample_batch` share one path to this loop).
"""

from __future__ import annotations

import torch
from diffusers import UnCLIPScheduler
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from pops.prior import Condition, PopsPrior
from pops.reference import SAMPLING_SCHEDULER_CONFIG


def make_sampling_scheduler(config: dict | None = None) -> UnCLIPScheduler:
    return UnCLIPScheduler(**(config or SAMPLING_SCHEDULER_CONFIG))


@torch.no_grad()
def sample_unclip(
    model: PopsPrior,
    cond: Condition,
    *,
    guidance_scale: float,
    num_inference_steps: int = 25,
    generator: torch.Generator | None = None,
    layout: str = "compact",
    scheduler: UnCLIPScheduler | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Draw one raw (un-normalised) embedding per row of `cond`; returns float32 (B, D)."""
    if num_inference_steps < 2:
        raise ValueError("num_inference_steps must be at least 2")
    scheduler = scheduler or make_sampling_scheduler()
    device = cond.rows.device
    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps
    batch = cond.rows.shape[0]
    latents = randn_tensor((batch, model.embedding_dim), generator=generator, device=device, dtype=torch.float32)
    latents = latents * scheduler.init_noise_sigma

    guided = guidance_scale > 1.0
    model_cond = Condition.cat([cond.null(), cond]) if guided else cond
    for i, t in enumerate(tqdm(timesteps, desc="sampling", disable=not progress, leave=False)):
        x_in = torch.cat([latents, latents]) if guided else latents
        x0 = model(x_in, t, model_cond, layout=layout)
        if guided:
            x0_uncond, x0_cond = x0.chunk(2)
            x0 = x0_uncond + guidance_scale * (x0_cond - x0_uncond)
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
        latents = scheduler.step(x0, timestep=t, sample=latents, generator=generator, prev_timestep=prev_t).prev_sample
    return model.denormalize(latents)
