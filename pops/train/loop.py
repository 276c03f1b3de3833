"""The training loop on `accelerate`: one process on a CPU, or DDP / FSDP / DeepSpeed on many GPUs and nodes through
`accelerate launch` (its plugins come from the launch configuration; nothing here is specific to one of them).

Exact resume: model, optimiser, lr scheduler, the train state (step, samples consumed), EMA and every process's RNG are
in each checkpoint (none of it a pickle that could run code: pops.train.checkpointing), and each shard's randomness is
a function of (seed, step, shard) — see pops.train.stream.

A joint run (`operators: [...]`, pops.operators.joint) trains one prior for several operators: step s takes its batch
from operator s mod n (round-robin, so each operator gets the steps a separate run of max_steps / n would), each with
its own stream position and its registry entry's rules (dropout, swaps, text alignment) in the same objective.

Setting a run up: pops.train.setup; what a finished run leaves (the operator, its record, the summary):
pops.train.summary.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pops.base.devices import check_placement
from pops.base.files import atomic_write_json
from pops.base.registry import get_spec
from pops.core.objective import make_training_scheduler, training_loss
from pops.core.prior import PopsPrior
from pops.embeddings.pairs import Pairs
from pops.operators.joint import JointOperator
from pops.operators.operator import Operator
from pops.train import checkpointing
from pops.train.config import TrainConfig
from pops.train.ema import copy_ema_to, ema_model
from pops.train.model import build_model, merge_lora
from pops.train.monitor import Monitor, Validator
from pops.train.setup import (
    LossModel,
    Run,
    check_fresh_output,
    check_memory,
    make_accelerator,
    make_optimizer,
    pair_streams,
    release_accelerate_state,
    train_state,
    trainable_parameters,
    training_pairs,
)
from pops.train.stream import shard_generator
from pops.train.summary import SUMMARY_NAME, Stopwatch, run_record, run_summary, trained_operator


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM after saving a checkpoint; `checkpoint` is the folder to resume from."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(
            f"stopped by SIGTERM at step {step}; checkpoint saved to {checkpoint} (resume with resume=auto)"
        )
        self.step, self.checkpoint = step, checkpoint


def train(
    config: TrainConfig,
    pairs: Pairs | dict[str, Pairs] | None = None,
    model: PopsPrior | None = None,
    *,
    progress: bool | None = None,
    renderer=None,
) -> PopsPrior:
    """Train one operator (or, with `config.operators`, one joint prior for several) as configured; returns the
    trained PopsPrior (EMA weights when EMA is on, LoRA merged) and, unless `config.save_operator` is off, writes the
    operator folder (`save_pretrained` format — a joint folder for a joint run — with a model card that has a
    Training section) to `config.output_dir`.

    `pairs` (a joint run: kind -> Pairs) / `model` replace loading `config.data` / building from `config.init`;
    `renderer` replaces `config.validation.renderer`. Raises TrainingInterrupted after a SIGTERM (the checkpoint is
    saved first).
    """
    return Trainer(config, pairs=pairs, model=model, progress=progress, renderer=renderer).run()


class Trainer:
    def __init__(self, config: TrainConfig, *, pairs=None, model=None, progress=None, renderer=None):
        self.config = config.validate()
        # CUDA asked for (to train on, or to draw the validation noise) on a machine without it: one line, at once.
        check_placement(config.device, None, config.validation.generator_device)
        self.kinds = config.kinds
        self.pairs = training_pairs(config, pairs)  # kind -> Pairs, in the order of config.kinds
        self.specs = {kind: get_spec(kind) for kind in self.kinds}
        if model is None:
            # A scratch init draws from the global RNG: seed it (without disturbing the caller's RNG) so every process
            # and every rerun starts from the same weights.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                model = build_model(config, list(self.pairs.values()))
        self.model = model
        for spec in self.specs.values():
            check_memory(config, model, spec)
        self.progress = config.progress if progress is None else progress
        self.renderer = renderer
        self.output_dir = Path(config.output_dir)
        if config.save_operator and config.resume is None:
            check_fresh_output(self.output_dir, config.overwrite)
        self._stop_requested = False
        # The trained operator (a joint run: the JointOperator), with its training record, after `run`.
        self.operator: Operator | JointOperator | None = None

    def run(self) -> PopsPrior:
        deterministic_before = torch.are_deterministic_algorithms_enabled()
        accelerator = make_accelerator(self.config, self.output_dir)
        try:
            with self._sigterm_handler():
                return self._run(accelerator)
        finally:
            accelerator.end_training()
            torch.use_deterministic_algorithms(deterministic_before)
            release_accelerate_state()

    # ----- the run -----------------------------------------------------------------------------------------------
    def _run(self, accelerator) -> PopsPrior:
        c = self.config
        run = self._set_up(accelerator)
        monitor, validators = self._monitors(run)
        stopwatch = Stopwatch(start_step=run.state.step)
        bar = tqdm(
            total=c.max_steps,
            initial=run.state.step,
            desc=f"training {', '.join(self.kinds)}",
            unit="step",
            disable=not (self.progress and accelerator.is_main_process),
            dynamic_ncols=True,
        )
        run.prepared.train()
        while run.state.step < c.max_steps:
            kind = self.kinds[run.state.step % len(self.kinds)]  # a joint run: the operators in turn
            grad_norm = self._optimiser_step(run, kind, monitor)
            stopwatch.step_done()
            bar.update(1)
            monitor.step_done(run.state.step, run.schedule.get_last_lr()[0], grad_norm, bar)
            self._validate_and_checkpoint(run, monitor, validators)
            if self._should_stop(accelerator):
                bar.close()
                raise TrainingInterrupted(run.state.step, self._save(run))
        bar.close()
        stopwatch.stop()
        if c.checkpoint.at_end:
            self._save(run)
        return self._finish(run, stopwatch, monitor.last)

    def _set_up(self, accelerator) -> Run:
        """The trainable weights, the optimiser and its schedule, the EMA, the train state (a checkpoint's when
        resuming) and the pair streams."""
        c, plain = self.config, self.model
        params = trainable_parameters(plain, c)
        # The schedule is stepped by the loop once per optimiser step (not prepared: accelerate would step it once per
        # process), so its state is the same whatever the number of processes.
        optimizer, schedule = make_optimizer(c, params)
        prepared, optimizer = accelerator.prepare(plain, optimizer)  # `plain` stays the module inside any wrapper
        ema = ema_model(plain, c.ema.decay, c.ema.update_after_step).to(accelerator.device) if c.ema.enabled else None
        state = train_state(c, self.output_dir, accelerator, schedule, ema)
        return Run(
            accelerator=accelerator,
            plain=plain,
            prepared=prepared,
            params=params,
            optimizer=optimizer,
            schedule=schedule,
            ema=ema,
            state=state,
            streams=pair_streams(c, self.pairs, accelerator.device),
            loss_model=LossModel(prepared, plain),
            noise_scheduler=make_training_scheduler(),
            global_batch=c.batch_size * accelerator.num_processes * c.gradient_accumulation_steps,
        )

    def _monitors(self, run: Run) -> tuple[Monitor, list[Validator]]:
        """The loss and throughput log, and a validator per operator when validation is on."""
        c, accelerator = self.config, run.accelerator
        monitor = Monitor(accelerator, c, run.global_batch)
        if not c.validation.every:
            return monitor, []
        tag = (lambda kind: f"/{kind}") if c.joint else (lambda kind: "")
        return monitor, [
            Validator(accelerator, c, self.specs[k], self.pairs[k], self.renderer, tag=tag(k)) for k in self.kinds
        ]

    def _optimiser_step(self, run: Run, kind: str, monitor: Monitor):
        """One optimiser step on a global batch of `kind`'s stream: this process's shard of each accumulation
        micro-step, its loss and gradients (clipped at the last), then the schedule, the EMA and the train state.
        Returns the gradient norm when it was clipped."""
        c, accelerator, state = self.config, run.accelerator, run.state
        position = state.position(kind, c.joint)
        grad_norm = None
        for micro_step in range(c.gradient_accumulation_steps):
            shard = micro_step * accelerator.num_processes + accelerator.process_index
            batch = run.streams[kind].shard(position, c.batch_size, shard)
            generator = shard_generator(c.seed, state.step, shard)
            with accelerator.accumulate(run.prepared):
                loss, details = training_loss(
                    run.loss_model,
                    self.specs[kind],
                    batch,
                    run.noise_scheduler,
                    generator=generator,
                    layout=c.layout,
                    objective=c.objective,
                    alignment=c.alignment,
                )
                accelerator.backward(loss)
                if accelerator.sync_gradients and c.optim.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(run.params, c.optim.max_grad_norm)
                run.optimizer.step()
                run.optimizer.zero_grad(set_to_none=True)
            monitor.record(loss, details, kind if c.joint else None)
        if not accelerator.optimizer_step_was_skipped:
            run.schedule.step()
        if run.ema is not None:
            run.ema.update_parameters(run.plain)
        state.advance(kind, position, run.global_batch, c.joint)
        return grad_norm

    def _validate_and_checkpoint(self, run: Run, monitor: Monitor, validators: list[Validator]) -> None:
        step = run.state.step
        if validators and step % self.config.validation.every == 0:
            for validator in validators:
                validator.run(run.plain, step, monitor)
        if self.config.checkpoint.every and step % self.config.checkpoint.every == 0:
            self._save(run)

    def _finish(self, run: Run, stopwatch: Stopwatch, last_log: dict) -> PopsPrior:
        """The trained prior (EMA weights when EMA is on, LoRA merged), its operator and summary, saved if asked."""
        accelerator = run.accelerator
        accelerator.wait_for_everyone()
        # keep_fp32_wrapper=False: return the plain module, without accelerate's mixed-precision autocast on forward
        # (the caller samples in fp32, exactly like an operator loaded from its folder).
        model = accelerator.unwrap_model(run.plain, keep_fp32_wrapper=False)
        if run.ema is not None:
            copy_ema_to(run.ema, run.plain)
        merge_lora(model)
        model.eval()
        summary = run_summary(self.config, run, stopwatch)
        self.operator = trained_operator(self.config, model, self.pairs, run_record(self.config, summary, last_log))
        if accelerator.is_main_process and self.config.save_operator:
            self.operator.save_pretrained(self.output_dir)
            atomic_write_json(self.output_dir / SUMMARY_NAME, summary)
        accelerator.wait_for_everyone()
        self.summary = summary
        return model

    # ----- checkpoints -------------------------------------------------------------------------------------------
    def _save(self, run: Run) -> Path:
        state = run.state
        info = {
            "samples_seen": state.samples_seen,
            "num_processes": run.accelerator.num_processes,
            "config": self.config.to_dict(),
        }
        return checkpointing.save_checkpoint(
            run.accelerator,
            self.output_dir,
            state.step,
            info,
            self.config.checkpoint.total_limit,
            train_state=state.state_dict(),
            schedule=run.schedule,
            ema=run.ema,
        )

    # ----- SIGTERM -----------------------------------------------------------------------------------------------
    @contextmanager
    def _sigterm_handler(self):
        """On SIGTERM, finish the current step, checkpoint, and stop (signal handlers exist only in the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            self._stop_requested = True

        previous = signal.signal(signal.SIGTERM, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _should_stop(self, accelerator) -> bool:
        if accelerator.num_processes == 1:
            return self._stop_requested
        # Every process must agree, or the checkpoint's collective save would hang.
        flag = torch.tensor([1.0 if self._stop_requested else 0.0], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)
