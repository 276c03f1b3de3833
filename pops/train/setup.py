"""Setting up a training run: the refusals that come before any work, the training pairs, the accelerator, and the
run's moving parts — the trainable weights, the optimiser and its schedule, the EMA, the train state and one pair
stream per operator.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler

from pops.base import checks
from pops.base.reference import OPERATOR_CONFIG_NAME
from pops.core.prior import PopsPrior
from pops.embeddings.pairs import Pairs, recombine
from pops.train import checkpointing
from pops.train.config import TrainConfig
from pops.train.model import configure_trainable
from pops.train.stream import PairStream

log = logging.getLogger(__name__)

# ----- before any work ------------------------------------------------------------------------------------------


def check_fresh_output(output_dir: Path, overwrite: bool) -> None:
    """A fresh run (no `resume`) never silently replaces a trained operator, nor mixes its checkpoints with an earlier
    run's: refused unless `overwrite` (FileExistsError naming the way out)."""
    if overwrite:
        return
    if (output_dir / OPERATOR_CONFIG_NAME).is_file():
        raise FileExistsError(
            f"output_dir {output_dir} already holds a trained operator; pass --overwrite to replace it, "
            "--resume auto to continue its run, or another --output-dir"
        )
    if checkpointing.complete_checkpoints(output_dir):
        raise FileExistsError(
            f"output_dir {output_dir} holds checkpoints of an earlier run; pass --resume auto to continue it, "
            "--overwrite to start again (its checkpoints are removed), or another --output-dir"
        )


def check_memory(config: TrainConfig, model: PopsPrior, spec) -> None:
    """Refuse a batch size whose activations (a lower-bound estimate) cannot fit in the memory the machine has free."""
    prior = model.prior.config
    rows = spec.num_slots + (8 if spec.text_slots else 0) if config.layout == "compact" else prior["num_embeddings"]
    tokens = rows + prior["additional_embeddings"]
    width = prior["num_attention_heads"] * prior["attention_head_dim"]
    activations = checks.transformer_bytes(config.batch_size, tokens, width, prior["num_layers"], training=True)
    # Per process, on the device it trains on (a GPU's memory when there is one; the weights are not counted: they
    # are the same whatever the batch size, and may be sharded).
    on_gpu = torch.cuda.is_available() and config.device != "cpu"
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    checks.memory(
        activations,
        f"training with batch_size {config.batch_size}",
        "lower batch_size (or raise gradient_accumulation_steps)",
        available=checks.device_memory(device),
    )


def training_pairs(config: TrainConfig, pairs) -> dict[str, Pairs]:
    """The run's training pairs, kind -> Pairs in the order of `config.kinds`: as given (a Pairs, or a mapping for a
    joint run), else loaded from `config.data`; each checked to be its operator's."""
    kinds = config.kinds
    if pairs is None:
        if not config.data:
            raise ValueError(
                "data: give the training pairs file (a .safetensors of cached embeddings, pops.embeddings.pairs)"
            )
        files = config.data if isinstance(config.data, dict) else {kinds[0]: config.data}
        pairs = {kind: Pairs.load(files[kind]) for kind in kinds}
    elif isinstance(pairs, Pairs):
        if config.joint:
            raise ValueError("a joint run takes its training pairs as a mapping operator -> Pairs")
        pairs = {kinds[0]: pairs}
    if set(pairs) != set(kinds):
        raise ValueError(f"training pairs for {', '.join(pairs) or 'none'}, the config trains {', '.join(kinds)}")
    for kind in kinds:
        if pairs[kind].kind != kind:
            raise ValueError(f"the training pairs are for {pairs[kind].kind!r}, the config trains {kind!r}")
    return {kind: pairs[kind] for kind in kinds}


# ----- accelerate -----------------------------------------------------------------------------------------------


def release_accelerate_state() -> None:
    """accelerate keeps precision and accumulation in process-wide singletons; a later run (or other code) in the same
    process must be free to choose its own (the demo trains five operators in one process). The process group stays."""
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def make_accelerator(config: TrainConfig, output_dir: Path) -> Accelerator:
    """The run's accelerator (device, precision, accumulation, trackers, compilation), the global RNG seeded."""
    release_accelerate_state()
    use_tb = config.logging.every > 0 and config.logging.tensorboard
    accelerator = Accelerator(
        cpu=config.device == "cpu",
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with="tensorboard" if use_tb else None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dynamo_backend="inductor" if config.compile else None,
    )
    if config.deterministic:  # cuBLAS needs a fixed workspace for deterministic matmuls (no effect on a CPU)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_seed(config.seed, deterministic=config.deterministic)
    return accelerator


# ----- the run's moving parts -----------------------------------------------------------------------------------


def trainable_parameters(model: PopsPrior, config: TrainConfig) -> list[torch.nn.Parameter]:
    """Apply LoRA / first-N-blocks / gradient checkpointing as configured; the parameters that then train."""
    configure_trainable(model, config)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters (check lora / train_blocks)")
    return params


def make_optimizer(config: TrainConfig, params):
    """AdamW over `params` and its learning-rate schedule (diffusers' `get_scheduler`)."""
    o = config.optim
    kwargs = dict(lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    try:  # one fused kernel for all tensors: ~4x faster than the per-tensor loop on a CPU with a small prior
        optimizer = torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        optimizer = torch.optim.AdamW(params, **kwargs)
    name = "constant_with_warmup" if o.schedule == "constant" and o.warmup_steps else o.schedule
    schedule = get_scheduler(name, optimizer, num_warmup_steps=o.warmup_steps, num_training_steps=config.max_steps)
    return optimizer, schedule


def pair_streams(config: TrainConfig, pairs: dict[str, Pairs], device) -> dict[str, PairStream]:
    """One stream per operator over its training pairs (recombined as configured). The clip statistics of a scratch
    prior came from the pairs as given; training sees them recombined."""
    return {
        kind: PairStream(recombine(kind_pairs, config.recombine, seed=config.seed), seed=config.seed, device=device)
        for kind, kind_pairs in pairs.items()
    }


class TrainState:
    """Where the run is: optimiser steps taken and samples consumed (the data position; a joint run also keeps each
    operator's own). Checkpointed as JSON."""

    def __init__(self):
        self.step = 0
        self.samples_seen = 0
        self.operator_samples: dict[str, int] = {}

    def position(self, kind: str, joint: bool) -> int:
        """Where `kind`'s stream is: its own count in a joint run, else the run's."""
        return self.operator_samples.get(kind, 0) if joint else self.samples_seen

    def advance(self, kind: str, position: int, global_batch: int, joint: bool) -> None:
        """One optimiser step taken on `global_batch` samples of `kind`'s stream from `position`."""
        self.step += 1
        self.samples_seen += global_batch
        if joint:
            self.operator_samples[kind] = position + global_batch

    def state_dict(self) -> dict:
        state = {"step": self.step, "samples_seen": self.samples_seen}
        if self.operator_samples:
            state["operator_samples"] = dict(self.operator_samples)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step, self.samples_seen = int(state["step"]), int(state["samples_seen"])
        self.operator_samples = {k: int(v) for k, v in state.get("operator_samples", {}).items()}


def train_state(config: TrainConfig, output_dir: Path, accelerator, schedule, ema) -> TrainState:
    """Where the run starts: fresh, or loaded with accelerate's state (RNG included), the schedule and the EMA from the
    checkpoint `config.resume` names. A fresh run with `overwrite` first removes the earlier run's checkpoints."""
    state = TrainState()
    if accelerator.is_main_process:
        checkpointing.remove_stale_temporaries(output_dir)
        if config.overwrite and config.resume is None:  # starting again: the earlier run's go
            shutil.rmtree(checkpointing.checkpoint_root(output_dir), ignore_errors=True)
    accelerator.wait_for_everyone()
    resume_from = checkpointing.resolve_resume(config.resume, output_dir)
    if resume_from is not None:
        state.load_state_dict(checkpointing.load_checkpoint(accelerator, resume_from, schedule, ema))
        log.info("resumed from %s at step %d", resume_from, state.step)
    return state


class LossModel:
    """What `training_loss` calls: `model(...)` goes through the accelerate-prepared module (DDP, autocast, compile);
    normalize/condition/denormalize go to the plain PopsPrior."""

    def __init__(self, prepared, plain: PopsPrior):
        self._prepared, self._plain = prepared, plain

    def __call__(self, *args, **kwargs):
        return self._prepared(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._plain, name)


@dataclass
class Run:
    """The moving parts of one training run. `plain` is the PopsPrior being trained (inside any accelerate wrapper),
    `prepared` what accelerate made of it. The schedule and the EMA are not registered with accelerate (it would
    pickle them, and unpickle whatever a checkpoint folder holds): the checkpoints save them besides its state."""

    accelerator: Accelerator
    plain: PopsPrior
    prepared: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    schedule: object
    ema: torch.nn.Module | None
    state: TrainState
    streams: dict[str, PairStream]
    loss_model: LossModel
    noise_scheduler: object  # the objective's training scheduler (pops.core.objective)
    global_batch: int  # samples per optimiser step: micro-batch x processes x accumulation steps
