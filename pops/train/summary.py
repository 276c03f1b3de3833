"""What a finished run leaves: the trained operator with its training record, and the run's summary.

A training record is what an operator keeps of how it was trained (`Operator.training`, saved in its folder's config):
the rows of its model card's Training section and a summary. `training_record` gives it its one shape, for a
training run (`run_record`) and for a distilled student (pops.train.distill).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pops.base.reference import OBJECTIVE_SAMPLING
from pops.embeddings.pairs import Pairs
from pops.operators.joint import JointOperator
from pops.operators.operator import Operator
from pops.operators.vocabulary import training_vocabulary
from pops.train.config import TrainConfig

if TYPE_CHECKING:  # the type only: the distiller's records need none of accelerate's setup
    from pops.train.setup import Run

SUMMARY_NAME = "train_summary.json"

OBJECTIVE_ROWS = {
    "diffusion": "diffusion (x0 prediction, 1000 timesteps)",
    "one-pass": "one-pass (ECLIPSE: noise + condition to the target at t = 999)",
}


def training_record(rows: Iterable[tuple], summary: dict) -> dict:
    """An operator's training record: its model card's Training rows, (label, value) each, and the summary."""
    return {"rows": [list(row) for row in rows], "summary": summary}


@dataclass
class Stopwatch:
    """When this run's steps started, when the first one ended (it allocates the optimiser state and warms the
    kernels up), and when the last one did; setup is left out."""

    start_step: int
    started: float = field(default_factory=time.perf_counter)
    first_step_done: float | None = None
    ended: float | None = None

    def step_done(self) -> None:
        self.first_step_done = self.first_step_done or time.perf_counter()

    def stop(self) -> None:
        self.ended = time.perf_counter()


def run_summary(config: TrainConfig, run: Run, stopwatch: Stopwatch) -> dict:
    """The run in numbers: steps, samples, time and throughput, and how it ran (processes, precision, options)."""
    state, global_batch, accelerator = run.state, run.global_batch, run.accelerator
    steps = state.step - stopwatch.start_step
    started, first_done, ended = stopwatch.started, stopwatch.first_step_done, stopwatch.ended
    elapsed = ended - started
    # Steady-state throughput leaves out the first step (optimiser-state allocation, kernel warm-up).
    steady = (steps - 1) * global_batch / (ended - first_done) if steps > 1 and ended > first_done else None
    return {
        **({"operators": list(config.kinds)} if config.joint else {"operator": config.operator}),
        "objective": config.objective,
        "steps": state.step,
        "samples_seen": state.samples_seen,
        "steps_this_run": steps,
        "seconds": round(elapsed, 3),
        "global_batch": global_batch,
        "samples_per_second": round(steady, 2) if steady else None,
        "samples_per_second_overall": round(steps * global_batch / elapsed, 2) if elapsed > 0 else None,
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "mixed_precision": config.mixed_precision,
        "ema": run.ema is not None,
        "lora": config.lora.enabled,
    }


def run_record(config: TrainConfig, summary: dict, last_log: dict) -> dict:
    """How this operator was trained: its model card's Training rows, and the run's summary."""
    o = config.optim
    extras = [name for name, on in (("LoRA", config.lora.enabled), ("EMA", config.ema.enabled)) if on]
    if config.train_blocks:
        extras.append(f"first {config.train_blocks} blocks only")
    if isinstance(config.data, dict):
        data = ", ".join(f"{k}: {Path(v).name}" for k, v in config.data.items())
    else:
        data = Path(config.data).name if config.data else "in memory"
    joint = f"{', '.join(config.kinds)} (one prior; each step one operator's batch, in turn)"
    rows = [("operators", joint)] if config.joint else []
    rows += [
        ("init", config.init if config.init != "kandinsky" else f"kandinsky ({config.kandinsky_prior})"),
        ("data", data),
        ("steps / samples seen", f"{summary['steps']} / {summary['samples_seen']}"),
        (
            "global batch",
            f"{summary['global_batch']} ({summary['num_processes']} process(es) x {config.batch_size} x "
            f"{config.gradient_accumulation_steps} accumulation)",
        ),
        (
            "optimiser",
            f"AdamW lr {o.lr:g} ({o.schedule}, warm-up {o.warmup_steps}), betas {tuple(o.betas)}, wd "
            f"{o.weight_decay:g}, grad-clip {o.max_grad_norm:g}",
        ),
        ("objective", OBJECTIVE_ROWS[config.objective]),
        ("precision / layout", f"{config.mixed_precision} / {config.layout}"),
        ("options", ", ".join(extras) or "none"),
    ]
    if config.recombine > 1:
        rows.append(("recombined pairs", f"x{config.recombine}"))
    if "train/loss" in last_log:
        rows.append(("last logged loss", f"{last_log['train/loss']:.4f}"))
    return training_record(rows, summary)


def trained_operator(config: TrainConfig, model, pairs: dict[str, Pairs], record: dict) -> Operator | JointOperator:
    """The trained prior as an operator (a joint run: a JointOperator) with its record, the encoders that made the
    data (when the pairs files say), the sampler its objective trained for, and, if asked, its training words."""
    encoders = {k: p.info["encoders"] for k, p in pairs.items() if isinstance(p.info.get("encoders"), dict)}
    sampler, steps = OBJECTIVE_SAMPLING[config.objective]
    if config.joint:
        operator = JointOperator.from_model(
            model, encoders, training=record, sampler=sampler, num_inference_steps=steps
        )
    else:
        kind = config.operator
        operator = Operator(
            model,
            kind,
            encoder_configs=encoders.get(kind),
            training=record,
            sampler=sampler,
            num_inference_steps=steps,
        )
    if config.vocabulary:
        operators = operator.operators if config.joint else {config.operator: operator}
        for name, op in operators.items():
            op.vocabulary = training_vocabulary(pairs[name])
    return operator
