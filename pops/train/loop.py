"""The training loop on `accelerate`: one process on a CPU, or DDP / FSDP / DeepSpeed on many GPUs and nodes through
`accelerate launch` (its plugins come from the launch configuration; nothing here is specific to one of them).

Exact resume: model, optimiser, lr scheduler, the train state (step, samples consumed), EMA and every process's RNG are
in each checkpoint (none of it a pickle that could run code: pops.train.checkpointing), and each shard's randomness is
a function of (seed, step, shard) — see pops.train.stream.

A joint run (`operators: [...]`, pops.operators.joint) trains one prior for several operators: step s takes its batch
from operator s mod n (round-robin, so each operator gets the steps a separate run of max_steps / n would), each with
its own stream position and its registry entry's rules (dropout, swaps, text alignment) in the same objective.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from pops.base import checks
from pops.base.devices import check_placement
from pops.base.files import atomic_write_json
from pops.base.reference import OBJECTIVE_SAMPLING, OPERATOR_CONFIG_NAME
from pops.base.registry import get_spec
from pops.core.objective import make_training_scheduler, training_loss
from pops.core.prior import PopsPrior
from pops.embeddings.pairs import Pairs, recombine
from pops.operators.joint import JointOperator
from pops.operators.operator import Operator
from pops.operators.vocabulary import training_vocabulary
from pops.train import checkpointing
from pops.train.config import TrainConfig
from pops.train.ema import copy_ema_to, ema_model
from pops.train.model import build_model, configure_trainable, merge_lora
from pops.train.monitor import Monitor, Validator
from pops.train.stream import PairStream, shard_generator

log = logging.getLogger(__name__)
SUMMARY_NAME = "train_summary.json"


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM after saving a checkpoint; `checkpoint` is the folder to resume from."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(
            f"stopped by SIGTERM at step {step}; checkpoint saved to {checkpoint} (resume with resume=auto)"
        )
        self.step, self.checkpoint = step, checkpoint


class TrainState:
    """Where the run is: optimiser steps taken and samples consumed (the data position; a joint run also keeps each
    operator's own). Checkpointed as JSON."""

    def __init__(self):
        self.step = 0
        self.samples_seen = 0
        self.operator_samples: dict[str, int] = {}

    def state_dict(self) -> dict:
        state = {"step": self.step, "samples_seen": self.samples_seen}
        if self.operator_samples:
            state["operator_samples"] = dict(self.operator_samples)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step, self.samples_seen = int(state["step"]), int(state["samples_seen"])
        self.operator_samples = {k: int(v) for k, v in state.get("operator_samples", {}).items()}


class _LossModel:
    """What `training_loss` calls: `model(...)` goes through the accelerate-prepared module (DDP, autocast, compile);
    normalize/condition/denormalize go to the plain PopsPrior."""

    def __init__(self, prepared, plain: PopsPrior):
        self._prepared, self._plain = prepared, plain

    def __call__(self, *args, **kwargs):
        return self._prepared(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._plain, name)


OBJECTIVE_ROWS = {
    "diffusion": "diffusion (x0 prediction, 1000 timesteps)",
    "one-pass": "one-pass (ECLIPSE: noise + condition to the target at t = 999)",
}


def training_record(config: TrainConfig, summary: dict, last_log: dict) -> dict:
    """How this operator was trained: the rows of its model card's Training section, and the run's summary. It
    travels with the operator (`Operator.training`, saved in its folder's config)."""
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
    return {"rows": [list(row) for row in rows], "summary": summary}


def _release_accelerate_state() -> None:
    """accelerate keeps precision and accumulation in process-wide singletons; a later run (or other code) in the same
    process must be free to choose its own (the demo trains five operators in one process). The process group stays."""
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


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


def _check_memory(config: TrainConfig, model: PopsPrior, spec) -> None:
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


class Trainer:
    def __init__(self, config: TrainConfig, *, pairs=None, model=None, progress=None, renderer=None):
        self.config = config.validate()
        # CUDA asked for (to train on, or to draw the validation noise) on a machine without it: one line, at once.
        check_placement(config.device, None, config.validation.generator_device)
        self.kinds = config.kinds
        self.pairs = _training_pairs(config, pairs)  # kind -> Pairs, in the order of config.kinds
        self.specs = {kind: get_spec(kind) for kind in self.kinds}
        if model is None:
            # A scratch init draws from the global RNG: seed it (without disturbing the caller's RNG) so every process
            # and every rerun starts from the same weights.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                model = build_model(config, list(self.pairs.values()))
        self.model = model
        for spec in self.specs.values():
            _check_memory(config, model, spec)
        self.progress = config.progress if progress is None else progress
        self.renderer = renderer
        self.output_dir = Path(config.output_dir)
        if config.save_operator and config.resume is None:
            check_fresh_output(self.output_dir, config.overwrite)
        self._stop_requested = False
        # The trained operator (a joint run: the JointOperator), with its training record, after `run`.
        self.operator: Operator | JointOperator | None = None

    # ----- setup -------------------------------------------------------------------------------------------------
    def _accelerator(self):
        c = self.config
        _release_accelerate_state()
        use_tb = c.logging.every > 0 and c.logging.tensorboard
        accelerator = Accelerator(
            cpu=c.device == "cpu",
            mixed_precision=c.mixed_precision,
            gradient_accumulation_steps=c.gradient_accumulation_steps,
            log_with="tensorboard" if use_tb else None,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")
            ),
            dynamo_backend="inductor" if c.compile else None,
        )
        if c.deterministic:  # cuBLAS needs a fixed workspace for deterministic matmuls (no effect on a CPU)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        set_seed(c.seed, deterministic=c.deterministic)
        return accelerator

    def _optimizer_and_schedule(self, params):
        o = self.config.optim
        kwargs = dict(lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
        try:  # one fused kernel for all tensors: ~4x faster than the per-tensor loop on a CPU with a small prior
            optimizer = torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, ValueError):
            optimizer = torch.optim.AdamW(params, **kwargs)
        name = "constant_with_warmup" if o.schedule == "constant" and o.warmup_steps else o.schedule
        schedule = get_scheduler(
            name, optimizer, num_warmup_steps=o.warmup_steps, num_training_steps=self.config.max_steps
        )
        return optimizer, schedule

    # ----- the run -----------------------------------------------------------------------------------------------
    def run(self) -> PopsPrior:
        deterministic_before = torch.are_deterministic_algorithms_enabled()
        accelerator = self._accelerator()
        try:
            with self._sigterm_handler():
                return self._run(accelerator)
        finally:
            accelerator.end_training()
            torch.use_deterministic_algorithms(deterministic_before)
            _release_accelerate_state()

    def _run(self, accelerator) -> PopsPrior:
        c = self.config
        plain = self.model
        configure_trainable(plain, c)
        params = [p for p in plain.parameters() if p.requires_grad]
        if not params:
            raise ValueError("no trainable parameters (check lora / train_blocks)")
        optimizer, schedule = self._optimizer_and_schedule(params)
        prepared, optimizer = accelerator.prepare(plain, optimizer)  # `plain` stays the module inside any wrapper
        state = TrainState()
        ema = ema_model(plain, c.ema.decay, c.ema.update_after_step).to(accelerator.device) if c.ema.enabled else None
        # The scheduler is stepped here once per optimiser step (not prepared: accelerate would step it once per
        # process), so its state is the same whatever the number of processes.
        self._resume(accelerator, state, schedule, ema)
        # The clip statistics of a scratch prior came from the pairs as given; training sees them recombined.
        streams = {
            kind: PairStream(recombine(pairs, c.recombine, seed=c.seed), seed=c.seed, device=accelerator.device)
            for kind, pairs in self.pairs.items()
        }
        noise_scheduler = make_training_scheduler()
        loss_model = _LossModel(prepared, plain)
        procs, accum, micro = accelerator.num_processes, c.gradient_accumulation_steps, c.batch_size
        global_batch = micro * procs * accum
        monitor = Monitor(accelerator, c, global_batch)
        validators = []
        if c.validation.every:
            tag = (lambda kind: f"/{kind}") if c.joint else (lambda kind: "")
            validators = [
                Validator(accelerator, c, self.specs[k], self.pairs[k], self.renderer, tag=tag(k)) for k in self.kinds
            ]
        started, start_step, first_step_done = time.perf_counter(), state.step, None
        bar = tqdm(
            total=c.max_steps,
            initial=state.step,
            desc=f"training {', '.join(self.kinds)}",
            unit="step",
            disable=not (self.progress and accelerator.is_main_process),
            dynamic_ncols=True,
        )
        prepared.train()
        while state.step < c.max_steps:
            grad_norm = None
            kind = self.kinds[state.step % len(self.kinds)]  # a joint run: the operators in turn
            position = state.operator_samples.get(kind, 0) if c.joint else state.samples_seen
            for micro_step in range(accum):
                shard = micro_step * procs + accelerator.process_index
                batch = streams[kind].shard(position, micro, shard)
                generator = shard_generator(c.seed, state.step, shard)
                with accelerator.accumulate(prepared):
                    loss, details = training_loss(
                        loss_model,
                        self.specs[kind],
                        batch,
                        noise_scheduler,
                        generator=generator,
                        layout=c.layout,
                        objective=c.objective,
                    )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and c.optim.max_grad_norm > 0:
                        grad_norm = accelerator.clip_grad_norm_(params, c.optim.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                monitor.record(loss, details, kind if c.joint else None)
            if not accelerator.optimizer_step_was_skipped:
                schedule.step()
            if ema is not None:
                ema.update_parameters(plain)
            state.step += 1
            state.samples_seen += global_batch
            if c.joint:
                state.operator_samples[kind] = position + global_batch
            first_step_done = first_step_done or time.perf_counter()
            bar.update(1)
            monitor.step_done(state.step, schedule.get_last_lr()[0], grad_norm, bar)
            if validators and state.step % c.validation.every == 0:
                for validator in validators:
                    validator.run(plain, state.step, monitor)
            if c.checkpoint.every and state.step % c.checkpoint.every == 0:
                self._save(accelerator, state)
            if self._should_stop(accelerator):
                bar.close()
                folder = self._save(accelerator, state)
                raise TrainingInterrupted(state.step, folder)
        bar.close()
        timing = (started, first_step_done, time.perf_counter())
        if c.checkpoint.at_end:
            self._save(accelerator, state)
        return self._finish(accelerator, plain, ema, params, state, start_step, timing, global_batch, monitor.last)

    def _resume(self, accelerator, state: TrainState, schedule, ema) -> None:
        """Load the checkpoint `config.resume` names (accelerate's state, RNG included; the scheduler, train state and
        EMA), if any. `schedule` and `ema` are also what `_save` writes besides accelerate's state: they are not
        registered with accelerate, which would pickle them (and unpickle whatever a checkpoint folder holds)."""
        self._checkpointed = (schedule, ema)
        if accelerator.is_main_process:
            checkpointing.remove_stale_temporaries(self.output_dir)
            if self.config.overwrite and self.config.resume is None:  # starting again: the earlier run's go
                shutil.rmtree(checkpointing.checkpoint_root(self.output_dir), ignore_errors=True)
        accelerator.wait_for_everyone()
        resume_from = checkpointing.resolve_resume(self.config.resume, self.output_dir)
        if resume_from is not None:
            state.load_state_dict(checkpointing.load_checkpoint(accelerator, resume_from, schedule, ema))
            log.info("resumed from %s at step %d", resume_from, state.step)

    def _save(self, accelerator, state: TrainState) -> Path:
        info = {
            "samples_seen": state.samples_seen,
            "num_processes": accelerator.num_processes,
            "config": self.config.to_dict(),
        }
        schedule, ema = self._checkpointed
        return checkpointing.save_checkpoint(
            accelerator,
            self.output_dir,
            state.step,
            info,
            self.config.checkpoint.total_limit,
            train_state=state.state_dict(),
            schedule=schedule,
            ema=ema,
        )

    def _finish(
        self, accelerator, plain, ema, params, state, start_step, timing, global_batch, monitor_last
    ) -> PopsPrior:
        accelerator.wait_for_everyone()
        # keep_fp32_wrapper=False: return the plain module, without accelerate's mixed-precision autocast on forward
        # (the caller samples in fp32, exactly like an operator loaded from its folder).
        model = accelerator.unwrap_model(plain, keep_fp32_wrapper=False)
        if ema is not None:
            copy_ema_to(ema, plain)
        merge_lora(model)
        model.eval()
        steps = state.step - start_step
        started, first_done, ended = timing
        elapsed = ended - started
        # Steady-state throughput leaves out the first step (optimiser-state allocation, kernel warm-up).
        steady = (steps - 1) * global_batch / (ended - first_done) if steps > 1 and ended > first_done else None
        summary = {
            **({"operators": list(self.kinds)} if self.config.joint else {"operator": self.config.operator}),
            "objective": self.config.objective,
            "steps": state.step,
            "samples_seen": state.samples_seen,
            "steps_this_run": steps,
            "seconds": round(elapsed, 3),
            "global_batch": global_batch,
            "samples_per_second": round(steady, 2) if steady else None,
            "samples_per_second_overall": round(steps * global_batch / elapsed, 2) if elapsed > 0 else None,
            "num_processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "mixed_precision": self.config.mixed_precision,
            "ema": ema is not None,
            "lora": self.config.lora.enabled,
        }
        # The encoders that made the data, when the pairs files say.
        encoders = {k: p.info["encoders"] for k, p in self.pairs.items() if isinstance(p.info.get("encoders"), dict)}
        record = training_record(self.config, summary, monitor_last)
        sampler, steps = OBJECTIVE_SAMPLING[self.config.objective]  # the call the objective trained for
        if self.config.joint:
            self.operator = JointOperator.from_model(
                model, encoders, training=record, sampler=sampler, num_inference_steps=steps
            )
        else:
            kind = self.config.operator
            self.operator = Operator(
                model,
                kind,
                encoder_configs=encoders.get(kind),
                training=record,
                sampler=sampler,
                num_inference_steps=steps,
            )
        if self.config.vocabulary:
            operators = self.operator.operators if self.config.joint else {self.config.operator: self.operator}
            for name, op in operators.items():
                op.vocabulary = training_vocabulary(self.pairs[name])
        if accelerator.is_main_process and self.config.save_operator:
            self.operator.save_pretrained(self.output_dir)
            atomic_write_json(self.output_dir / SUMMARY_NAME, summary)
        accelerator.wait_for_everyone()
        self.summary = summary
        return model

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


def _training_pairs(config: TrainConfig, pairs) -> dict[str, Pairs]:
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
