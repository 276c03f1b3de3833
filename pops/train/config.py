"""Training configuration: nested dataclasses, one YAML file per operator (configs/train/*.yaml), dotted overrides.

Defaults are the reference recipe (AdamW, lr 1e-5 constant, betas 0.9/0.999, weight decay 0, grad-clip 1.0, init from
the Kandinsky 2.2 prior); batch size, warm-up, schedule, precision and the extras (LoRA, EMA, ...) are options.

`batch_size` is the micro-batch of one process. The global batch of one optimiser step is
`batch_size × num_processes × gradient_accumulation_steps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pops.base import checks
from pops.base.readers import read_text
from pops.base.reference import ALIGNMENTS, KANDINSKY_PRIOR, LAYOUTS, OBJECTIVES
from pops.base.registry import REGISTRY
from pops.base.schema import from_mapping, to_mapping

CLIP_STD = ("per-dim", "shared")
MIXED_PRECISION = ("no", "bf16", "fp16")
TRAIN_DEVICES = (None, "cpu", "cuda")
SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")


@dataclass
class ModelConfig:
    """Prior size for `init: scratch` (the defaults are the Kandinsky 2.2 prior's size)."""

    embedding_dim: int = 1280
    num_layers: int = 20
    num_attention_heads: int = 32
    attention_head_dim: int = 64
    # How a scratch prior normalises: each dimension by its own std ("per-dim", the reference's statistics), or
    # every dimension by one std, the root mean square of the per-dimension ones ("shared"). For sparse features
    # whose per-dimension spread spans orders of magnitude (EfficientNet's pooled ReLU6 activations) "shared" keeps
    # the normalised space a uniformly scaled copy of the raw one, so the MSE objective and cosine retrieval agree
    # (measured in the embedded world: texturing held-out top-1 0.71 -> 0.81 at guidance 3).
    clip_std: str = "per-dim"
    # Dropout inside the transformer blocks of a scratch prior (PriorTransformer's `dropout`; never in sampling).
    dropout: float = 0.0


@dataclass
class OptimConfig:
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    max_grad_norm: float = 1.0  # 0 turns clipping off
    schedule: str = "constant"  # one of SCHEDULES (diffusers.optimization.get_scheduler names)
    warmup_steps: int = 0


@dataclass
class LoraOptions:
    """LoRA adapters through peft (`prior.add_adapter`); the base weights are frozen, the result is merged on save."""

    enabled: bool = False
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass
class EmaOptions:
    """Exponential moving average of the trained weights (diffusers' EMAModel); saved instead of the raw weights."""

    enabled: bool = False
    decay: float = 0.9999
    update_after_step: int = 0


@dataclass
class CheckpointOptions:
    every: int = 1000  # optimiser steps between checkpoints; 0 = only on SIGTERM and at the end
    total_limit: int = 3  # newest complete checkpoints kept
    at_end: bool = True  # also checkpoint after the last step (so `resume` can extend a finished run)


@dataclass
class LoggingOptions:
    every: int = 50  # optimiser steps between log records; 0 = no logging
    tensorboard: bool = True
    timestep_buckets: int = 10  # loss per timestep bucket: the 1000 timesteps split into this many equal ranges


@dataclass
class ValidationOptions:
    every: int = 0  # optimiser steps between validations; 0 = none
    data: str | None = None  # a Pairs file; None = the first `num_samples` training pairs
    num_samples: int = 16
    guidance_scale: float | None = None  # None = the operator's default
    num_inference_steps: int = 25  # of the diffusion objective's sampler; a one-pass operator validates in its one pass
    # A saved renderer folder (its renderer.json names a type of pops.renderers.RENDERER_TYPES); None = no pictures,
    # only embedding metrics. Only registered types load: a config never names code to import.
    renderer: str | None = None
    # Where the validation samples' noise is drawn: cpu (the same numbers on every machine) or cuda (the reference's
    # generator, on the GPU the run trains on).
    generator_device: str = "cpu"


@dataclass
class TrainConfig:
    operator: str = "texturing"
    data: str | dict[str, str] | None = (
        None  # a Pairs file (pops.embeddings.pairs) of cached embeddings; joint: kind -> file
    )
    # A joint run (pops.operators.joint): ONE prior with a learned operator row for each of these operators, trained on
    # all their pairs; each optimiser step takes one batch of one operator, in turn (`operator` is then not used).
    operators: tuple[str, ...] = ()
    output_dir: str = "runs/train"
    init: str = "kandinsky"  # kandinsky | operator:<folder> | scratch
    # diffusion (the reference's x0 objective over 1000 timesteps) | one-pass (ECLIPSE: noise + condition to the
    # target in one pass; the operator is then sampled as ddim with 1 step). See pops.core.objective.
    objective: str = "diffusion"
    # Where instruct's text-alignment cosine is measured: raw (the reference) or centred on the clip mean (a space
    # whose raw cosines are all high, such as the embedded world's). See pops.core.objective.
    alignment: str = "raw"
    kandinsky_prior: str = KANDINSKY_PRIOR  # hub id or local folder
    resume: str | None = None  # auto | <checkpoint folder>; None = start fresh
    seed: int = 0
    deterministic: bool = False
    max_steps: int = 20000
    batch_size: int = 64
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    # cpu | cuda; None = accelerate's choice (its launch config, else a GPU when there is one). Which GPU each
    # process takes is accelerate's (`accelerate launch --gpu_ids`, CUDA_VISIBLE_DEVICES).
    device: str | None = None
    layout: str = "compact"
    train_blocks: int | None = None  # train only the first N transformer blocks (others frozen)
    gradient_checkpointing: bool = False
    compile: bool = False
    progress: bool = True
    # Training pairs per sample: each image input replaced by another encoded input of its class
    # (pops.embeddings.pairs.recombine).
    recombine: int = 1
    # Keep the words of the training pairs' text slots with the operator (pops.operators.vocabulary): it then reads a
    # word it never saw as the nearest of them. For a closed vocabulary (the embedded world's instruct), not an open
    # one.
    vocabulary: bool = False
    # An output_dir that already holds a trained operator, or checkpoints of an earlier run, is refused unless
    # `resume` continues that run or `overwrite` starts again (removing the earlier checkpoints): a trained operator
    # is never replaced silently (`pops train --overwrite`).
    overwrite: bool = False
    # Write the trained operator folder (weights, config, model card, summary) to output_dir at the end; a caller
    # that adds to the operator before saving it (the demo's chosen guidance) takes `Trainer.operator` instead.
    save_operator: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraOptions = field(default_factory=LoraOptions)
    ema: EmaOptions = field(default_factory=EmaOptions)
    checkpoint: CheckpointOptions = field(default_factory=CheckpointOptions)
    logging: LoggingOptions = field(default_factory=LoggingOptions)
    validation: ValidationOptions = field(default_factory=ValidationOptions)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The operators this run trains: the joint run's, else the one `operator`."""
        return tuple(self.operators) or (self.operator,)

    @property
    def joint(self) -> bool:
        return bool(self.operators)

    def validate(self) -> TrainConfig:
        """Raise a one-line ValueError on the first inconsistent value; return self."""
        self._check_operators_and_data()
        self._check_run()
        self._check_optimiser()
        self._check_extras()
        self._check_validation()
        self._check_model()
        return self

    def _check_operators_and_data(self) -> None:
        """What the run trains, on which pairs, from which start, to which objective."""
        for kind in self.kinds:
            _check(kind in REGISTRY, f"operator: unknown {kind!r}; known: {', '.join(REGISTRY)}")
        _check(len(set(self.kinds)) == len(self.kinds), f"operators: each operator once, got {list(self.operators)}")
        if isinstance(self.data, dict):
            _check(
                self.joint and set(self.data) == set(self.operators),
                f"data: a mapping names one pairs file per operator of `operators` ({', '.join(self.operators)}), "
                f"got {', '.join(self.data) or 'none'}",
            )
        else:
            _check(not (self.joint and self.data), "data: a joint run takes a mapping operator -> pairs file")
        _check(
            not (self.joint and self.validation.data),
            "validation.data holds one operator's pairs; a joint run validates each operator on its first training "
            "pairs (validation.data: null)",
        )
        init_ok = self.init in ("kandinsky", "scratch") or (self.init.startswith("operator:") and len(self.init) > 9)
        _check(init_ok, f"init: expected kandinsky, scratch or operator:<folder>, got {self.init!r}")
        _check(self.objective in OBJECTIVES, f"objective: one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        _check(self.alignment in ALIGNMENTS, f"alignment: one of {', '.join(ALIGNMENTS)}, got {self.alignment!r}")

    def _check_run(self) -> None:
        """Steps, batches, precision, device, layout and which weights train."""
        _check(self.max_steps >= 1, "max_steps must be at least 1")
        _check(self.batch_size >= 1, "batch_size must be at least 1")
        _check(self.recombine >= 1, "recombine must be at least 1")
        _check(self.model.clip_std in CLIP_STD, f"model.clip_std: one of {', '.join(CLIP_STD)}")
        _check(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be at least 1")
        _check(self.mixed_precision in MIXED_PRECISION, f"mixed_precision: one of {', '.join(MIXED_PRECISION)}")
        _check(self.device in TRAIN_DEVICES, f"device: cpu, cuda or null, got {self.device!r}")
        _check(self.layout in LAYOUTS, f"layout: one of {', '.join(LAYOUTS)}")
        _check(self.train_blocks is None or self.train_blocks >= 1, "train_blocks must be at least 1 (or null)")
        _check(not (self.lora.enabled and self.train_blocks), "lora and train_blocks cannot be combined")

    def _check_optimiser(self) -> None:
        """The optimiser, its schedule, and the seed of the run's random draws."""
        o = self.optim
        checks.learning_rate(o.lr, "optim.lr")
        checks.learning_rate(o.eps, "optim.eps")
        checks.real(o.weight_decay, "optim.weight_decay", 0.0)
        checks.seed(self.seed, "seed", training=True)
        _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas: two numbers in [0, 1)")
        checks.real(o.max_grad_norm, "optim.max_grad_norm (0 = no clipping)", 0.0)
        _check(o.schedule in SCHEDULES, f"optim.schedule: one of {', '.join(SCHEDULES)}")
        _check(o.warmup_steps >= 0, "optim.warmup_steps must be >= 0")

    def _check_extras(self) -> None:
        """LoRA, EMA, checkpoints and logging."""
        _check(self.lora.rank >= 1 and checks.real(self.lora.alpha, "lora.alpha") > 0, "lora: rank >= 1 and alpha > 0")
        _check(0 < self.ema.decay < 1, "ema.decay must be in (0, 1)")
        _check(
            self.checkpoint.every >= 0 and self.checkpoint.total_limit >= 1, "checkpoint: every >= 0, total_limit >= 1"
        )
        _check(
            self.logging.every >= 0 and self.logging.timestep_buckets >= 1, "logging: every >= 0, timestep_buckets >= 1"
        )

    def _check_validation(self) -> None:
        v = self.validation
        _check(
            v.generator_device in ("cpu", "cuda"),
            f"validation.generator_device: cpu or cuda, got {v.generator_device!r}",
        )
        _check(
            not (self.device == "cpu" and v.generator_device == "cuda"),
            "validation.generator_device cuda draws the noise on the GPU: train there too (device: cuda or null)",
        )
        checks.guidance(v.guidance_scale, "validation.guidance_scale")
        checks.steps(v.num_inference_steps, "validation.num_inference_steps", minimum=2)
        _check(
            v.every >= 0 and v.num_samples >= 1 and v.num_inference_steps >= 2,
            "validation: every >= 0, num_samples >= 1, num_inference_steps >= 2",
        )

    def _check_model(self) -> None:
        """The size of a scratch prior."""
        m = self.model
        _check(
            min(m.embedding_dim, m.num_layers, m.num_attention_heads, m.attention_head_dim) >= 1,
            "model: sizes must be positive",
        )
        _check(0.0 <= checks.real(m.dropout, "model.dropout") < 1.0, f"model.dropout: in [0, 1), got {m.dropout}")

    def to_dict(self) -> dict:
        return to_mapping(self)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def config_from_dict(data: dict) -> TrainConfig:
    if isinstance(data, dict) and data.get("mixed_precision") is False:
        # YAML reads the documented `mixed_precision: no` (and `--override mixed_precision=no`) as false.
        data = {**data, "mixed_precision": "no"}
    return from_mapping(TrainConfig, data, what="train config").validate()


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply `key.sub=value` strings (values parsed as YAML) to a nested mapping; returns a new mapping."""
    data = yaml.safe_load(yaml.safe_dump(data or {}))  # deep copy
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r}: expected key=value (e.g. optim.lr=1e-4)")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = _parse_value(raw)
    return data


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases (`*name`): a config never needs them, and nested aliases expand exponentially (a
    "billion laughs" under a real key would hang the checks that read or print the value)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted in a config", mark)
        return super().compose_node(parent, index)


def _safe_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def _parse_value(raw: str) -> Any:
    try:
        return _safe_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ValueError(f"override value {raw!r} is not YAML ({str(exc).splitlines()[0]})") from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config, apply overrides, validate. FileNotFoundError / one-line ValueError on bad input."""
    path = Path(path)
    text = read_text(path, "config file")
    try:
        data = _safe_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config is a mapping of keys to values, got {type(data).__name__}")
    return config_from_dict(apply_overrides(data, overrides))
