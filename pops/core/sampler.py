"""Sampling an operator: one shared signature, four samplers (k-diffusion style), all on the prior's x0 prediction.

* `unclip` — the reference loop (the Kandinsky 2.2 prior pipeline, as pOps uses it): ancestral DDPM posterior steps
  (Ho et al. 2020, eq. 7; Ramesh et al. 2022) with `UnCLIPScheduler`, the variance noise drawn from the generator.
* `ddim` — deterministic DDIM (Song et al. 2021, η = 0), `DDIMScheduler` with trailing timesteps so that one step
  starts from t = 999 and returns the prediction itself.
* `ddim-linspace` — the same DDIM on evenly spaced timesteps from t = 999 down to t = 0 (diffusers' "linspace"
  spacing), 2 steps or more: the last pass predicts x0 from an almost clean latent, a refinement (docs/EXPERIMENTS.md,
  "Fast sampling").
* `dpmpp` — DPM-Solver++ (Lu et al. 2022), second order multistep on the x0 prediction, `DPMSolverMultistepScheduler`.

Every sampler starts from `randn((B, D), generator) * init_noise_sigma`, mixes the unconditional and conditional
predictions (batched together, unconditional first) when the guidance scale is above 1, and returns raw
(un-normalised) embeddings. In the compact layout the condition's keys and values are computed once per call
(`PopsPrior.prefix`): under the causal mask they do not depend on the step. `pops.Operator` is the one caller
(its `sample` and `sample_batch` share one path to these functions).

How one call samples — which of these samplers, its steps, the guidance scale, draws and layout — is one
`pops.core.sampling.SamplingConfig`, checked where a value enters pops and carried as it is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UnCLIPScheduler
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from pops.base.reference import (
    DEFAULT_STEPS,
    NUM_TRAIN_TIMESTEPS,
    SAMPLING_SCHEDULER_CONFIG,
    TRAINING_SCHEDULER_CONFIG,
)
from pops.core.prior import Condition, PopsPrior
from pops.core.sampling import sampler_name

# The x0 range the reference clips to (UnCLIPScheduler's clip_sample_range), applied by every sampler.
CLIP_RANGE = SAMPLING_SCHEDULER_CONFIG["clip_sample_range"]


def make_sampling_scheduler(config: dict | None = None) -> UnCLIPScheduler:
    return UnCLIPScheduler(**(config or SAMPLING_SCHEDULER_CONFIG))


def guided_denoiser(model: PopsPrior, cond: Condition, guidance_scale: float, layout: str = "compact") -> Callable:
    """`x0(latents, t)`: the prior's (normalised) x0 prediction under classifier-free guidance."""
    guided = guidance_scale > 1.0
    model_cond = Condition.cat([cond.null(), cond]) if guided else cond
    prefix = model.prefix(model_cond) if layout == "compact" and model.supports_prefix() else None

    def x0(latents: torch.Tensor, t) -> torch.Tensor:
        x_in = torch.cat([latents, latents]) if guided else latents
        out = model(x_in, t, model_cond, layout=layout, prefix=prefix)
        if guided:
            uncond, conditional = out.chunk(2)
            out = uncond + guidance_scale * (conditional - uncond)
        return out

    return x0


def _initial_latents(model: PopsPrior, cond: Condition, scheduler, generator) -> torch.Tensor:
    batch, device = cond.rows.shape[0], cond.rows.device
    latents = randn_tensor((batch, model.embedding_dim), generator=generator, device=device, dtype=torch.float32)
    return latents * scheduler.init_noise_sigma


def _check_steps(num_inference_steps: int, minimum: int) -> None:
    if not minimum <= num_inference_steps <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(
            f"num_inference_steps must be in [{minimum}, {NUM_TRAIN_TIMESTEPS}], got {num_inference_steps}"
        )


@torch.no_grad()
def sample_unclip(
    model: PopsPrior,
    cond: Condition,
    *,
    guidance_scale: float,
    num_inference_steps: int = DEFAULT_STEPS,
    generator: torch.Generator | None = None,
    layout: str = "compact",
    scheduler: UnCLIPScheduler | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """The reference ancestral loop; one raw embedding per row of `cond`, float32 (B, D)."""
    _check_steps(num_inference_steps, 2)
    scheduler = scheduler or make_sampling_scheduler()
    scheduler.set_timesteps(num_inference_steps, device=cond.rows.device)
    timesteps = scheduler.timesteps
    latents = _initial_latents(model, cond, scheduler, generator)
    x0 = guided_denoiser(model, cond, guidance_scale, layout)
    for i, t in enumerate(tqdm(timesteps, desc="sampling", disable=not progress, leave=False)):
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
        step = scheduler.step(x0(latents, t), timestep=t, sample=latents, generator=generator, prev_timestep=prev_t)
        latents = step.prev_sample
    return model.denormalize(latents)


@torch.no_grad()
def sample_ddim(
    model: PopsPrior,
    cond: Condition,
    *,
    guidance_scale: float,
    num_inference_steps: int = DEFAULT_STEPS,
    generator: torch.Generator | None = None,
    layout: str = "compact",
    scheduler=None,
    progress: bool = False,
) -> torch.Tensor:
    """Deterministic DDIM (η = 0) on the x0 prediction; only the initial noise is drawn. (`scheduler`, in the shared
    signature, is the unclip sampler's configured scheduler; this one builds its own.)"""
    scheduler = ddim_scheduler()
    return _deterministic_loop(model, cond, scheduler, guidance_scale, num_inference_steps, generator, layout, progress)


@torch.no_grad()
def sample_ddim_linspace(
    model: PopsPrior,
    cond: Condition,
    *,
    guidance_scale: float,
    num_inference_steps: int = DEFAULT_STEPS,
    generator: torch.Generator | None = None,
    layout: str = "compact",
    scheduler=None,
    progress: bool = False,
) -> torch.Tensor:
    """Deterministic DDIM (η = 0) on timesteps evenly spaced from 999 to 0, at least 2 (`scheduler` as in
    `sample_ddim`)."""
    scheduler = ddim_scheduler("linspace")
    return _deterministic_loop(
        model, cond, scheduler, guidance_scale, num_inference_steps, generator, layout, progress, minimum=2
    )


def ddim_scheduler(timestep_spacing: str = "trailing") -> DDIMScheduler:
    """`ddim`'s scheduler: trailing timesteps (the first step starts at t = 999, so 1 step returns the prediction
    itself), the final step to ᾱ = 1, x0 clipped to the reference's range. pops.train.distill runs its steps too.
    `"linspace"`: `ddim-linspace`'s, from t = 999 to t = 0."""
    return DDIMScheduler(
        **TRAINING_SCHEDULER_CONFIG,
        clip_sample=True,
        clip_sample_range=CLIP_RANGE,
        set_alpha_to_one=True,
        timestep_spacing=timestep_spacing,
    )


@torch.no_grad()
def sample_dpmpp(
    model: PopsPrior,
    cond: Condition,
    *,
    guidance_scale: float,
    num_inference_steps: int = DEFAULT_STEPS,
    generator: torch.Generator | None = None,
    layout: str = "compact",
    scheduler=None,
    progress: bool = False,
) -> torch.Tensor:
    """DPM-Solver++ (second order multistep, first order on the last step) on the x0 prediction; only the initial
    noise is drawn (`scheduler` as in `sample_ddim`)."""
    scheduler = DPMSolverMultistepScheduler(
        **TRAINING_SCHEDULER_CONFIG,
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="trailing",
        final_sigmas_type="zero",
        lower_order_final=True,
    )
    return _deterministic_loop(model, cond, scheduler, guidance_scale, num_inference_steps, generator, layout, progress)


def _deterministic_loop(
    model, cond, scheduler, guidance_scale, num_inference_steps, generator, layout, progress, minimum: int = 1
):
    _check_steps(num_inference_steps, minimum)
    scheduler.set_timesteps(num_inference_steps, device=cond.rows.device)
    latents = _initial_latents(model, cond, scheduler, generator)
    x0 = guided_denoiser(model, cond, guidance_scale, layout)
    for t in tqdm(scheduler.timesteps, desc="sampling", disable=not progress, leave=False):
        prediction = x0(latents, t).clamp(-CLIP_RANGE, CLIP_RANGE)
        latents = scheduler.step(prediction, t, latents).prev_sample
    return model.denormalize(latents)


# Sampler names (pops.core.sampling.SAMPLER_NAMES), as `Operator.sample(..., sampler=NAME)`, `pops apply --sampler`
# and `pops eval --sampler` take them.
SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "unclip": sample_unclip,
    "ddim": sample_ddim,
    "ddim-linspace": sample_ddim_linspace,
    "dpmpp": sample_dpmpp,
}


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    return SAMPLERS[sampler_name(name)]
