"""The training objectives: predict a target embedding given the operator's (partly dropped) inputs.

* `diffusion` (the reference's): x0-prediction (DDPM with `prediction_type="sample"`, cosine schedule, t uniform over
  1000 steps), MSE to the normalised target.
* `one-pass` (ECLIPSE's): the same network maps pure noise and the condition to the target in one pass (see
  `prior_input`); sampled as `ddim` with 1 step (pops.base.reference.OBJECTIVE_SAMPLING).

Per-operator rules come from the registry and hold for both: condition dropout (the null condition that guidance and
dropped inputs need), random A/B swaps for symmetric operators, and instruct's text-alignment term
`w · (1 − cos(un-normalised prediction, text embedding of "A {word} {object} {placement}"))` — or, `centred`, both
seen from the embeddings' mean (the prior's clip_mean): for a space whose raw cosines are all high, as the embedded
world's pooled EfficientNet features are, where the raw cosine barely tells two pictures apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from pops.base.reference import OBJECTIVES, TRAINING_SCHEDULER_CONFIG
from pops.base.registry import OperatorSpec
from pops.core.prior import PopsPrior
from pops.embeddings.pairs import Batch


def make_training_scheduler(config: dict | None = None) -> DDPMScheduler:
    return DDPMScheduler(**(config or TRAINING_SCHEDULER_CONFIG))


def prior_input(
    objective: str, target: torch.Tensor, noise_scheduler: DDPMScheduler, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, t): what the prior sees in place of the (normalised) target; the noise ε ~ N(0, I) from `generator`.

    `diffusion`: the target noised to a uniformly drawn timestep, x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε.

    `one-pass`: the ECLIPSE objective (Patel et al., "ECLIPSE: A Resource-Efficient Text-to-Image Prior for Image
    Generations", CVPR 2024): no diffusion timesteps — the prior takes ε itself, at one fixed timestep (the last,
    T − 1, where the `ddim` one-step call starts), and regresses the target from it and the condition. ECLIPSE's
    33 M-parameter prior, trained with this projection term (plus a CLIP contrastive term; instruct's text-alignment
    term plays that part here), is on par with Kandinsky 2.2's 1 B diffusion prior in one pass.
    """
    size, device, steps = target.shape[0], target.device, noise_scheduler.config.num_train_timesteps
    if objective == "one-pass":
        t = torch.full((size,), steps - 1, dtype=torch.long, device=device)
        return torch.randn(target.shape, generator=generator).to(device), t
    if objective != "diffusion":
        raise ValueError(f"objective: one of {', '.join(OBJECTIVES)}, got {objective!r}")
    t = torch.randint(0, steps, (size,), generator=generator).to(device)
    noise = torch.randn(target.shape, generator=generator).to(device)
    return noise_scheduler.add_noise(target, noise, t), t


def training_loss(
    model: PopsPrior,
    spec: OperatorSpec,
    batch: Batch,
    noise_scheduler: DDPMScheduler,
    *,
    generator: torch.Generator | None = None,
    layout: str = "compact",
    objective: str = "diffusion",
    alignment: str = "raw",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The mean loss and per-sample details (`t`, `mse`) for logging; `objective` one of OBJECTIVES; `alignment`
    where the text-alignment cosine is measured (ALIGNMENTS)."""
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

    x_t, t = prior_input(objective, target, noise_scheduler, generator)
    pred = model(x_t, t, cond, layout=layout)

    mse = F.mse_loss(pred, target, reduction="none").mean(dim=1)
    loss = mse.mean()
    details = {"t": t, "mse": mse.detach()}
    if spec.text_alignment_weight and batch.align_text is not None:
        prediction, text = model.denormalize(pred), batch.align_text.to(device).float()
        if alignment == "centred":
            centre = model.prior.clip_mean.reshape(1, -1)
            prediction, text = prediction - centre, text - centre
        cosine = F.cosine_similarity(prediction, text, dim=-1)
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
