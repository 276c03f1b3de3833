"""What the demo computes (`DemoConfig`, the `--quick` variant) and how it runs (threads, worker processes, timing)."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pops.base import checks
from pops.base.reference import ALIGNMENTS
from pops.base.registry import REGISTRY, get_spec
from pops.core.sampling import SamplingConfig
from pops.demo.text_space import INSTRUCT_RECIPES
from pops.demo.training_recipes import default_train_per_class, default_training_only, demo_recipe
from pops.encoders.efficientnet import cpu_has_fast_bf16
from pops.renderers.decoder import DecoderConfig
from pops.world import WorldConfig


@dataclass
class DemoConfig:
    """Everything that decides what the demo computes. The defaults are the full demo (whole world)."""

    out: Path = Path("outputs/demo")
    cache_dir: Path | None = None  # default: <out>/cache
    seed: int = 0  # world seed; the operators' training seed too
    operators: tuple[str, ...] = field(default_factory=lambda: tuple(REGISTRY))  # (as registered when made)
    world: dict = field(default_factory=dict)  # WorldConfig overrides (names, outfits, holdout)
    image_size: int = 128  # the world draws at this size ...
    encoder_resolution: int = 128  # ... and EfficientNet sees it at this size (encoding is the slowest stage)
    train_per_class: dict = field(default_factory=dict)  # operator -> samples per class; default: the registry's
    recombine: int = 16  # training pairs per encoded sample (see pops.embeddings.pairs.recombine)
    test_per_class: int = 2  # test samples per held-out class
    gallery_per_class: int = 2  # class-gallery renderings per candidate class (top-1 prototypes, retrieval)
    # Choosing each operator's guidance, sampler and model (docs/EXPERIMENTS.md, "Which guidance, sampler and
    # draws"): on validation classes — a share of the TRAINING classes kept out of training, never a test class —
    # with fresh samples of each from their own stream, scored over sampling seeds; the paper's own setting (the
    # registry's guidance, the reference sampler, the separate operator) is kept unless a candidate beats it by more
    # than the noise: `choice_z` standard errors of the paired difference (pops.evaluation.choice).
    validation_fraction: float = 0.1
    validation_per_class: int = 4
    validation_seeds: int = 2
    choice_z: float = 1.0
    guidance_candidates: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 8.0)
    # Samplers (name, steps[, draws]) tried at every candidate scale beside the default (the reference's own call,
    # unclip 25, at the registry's scale); draws: each output the mean of that many samples, an estimate of the
    # posterior mean. The reference sampler at the other scales is not tried: it costs 6x `ddim 4` and scored the
    # same as `ddim 4` at the same scale (docs/EXPERIMENTS.md, "Choices that survive unseen seeds").
    fast_samplers: tuple[tuple, ...] = (("ddim", 4), ("ddim", 4, 4))
    # After the fact, every candidate scored on the test classes (one sampling seed): the regret of the choice, what
    # the shipped setting lost against the best candidate. Never used to choose.
    regret: bool = True
    # Instruct reads its word through an aligned text space, as the paper reads CLIP text: a text tower trained
    # LiT-style on the captions of the training classes (pops.demo.text_space). `instruct_recipe`: "paper" (target:
    # the input picture, plus the text-alignment term), "supervised" (the edited picture, no term) or "both";
    # `alignment`: where the term's cosine is measured (pops.core.objective).
    text_tower: bool = True
    tower_steps: int = 200
    instruct_recipe: str = "both"
    alignment: str = "centred"
    # Operators with a text slot (instruct) keep the words they were trained on and read a word they never saw as
    # the nearest of them (pops.operators.vocabulary).
    vocabulary: bool = True
    # The operator network: a PriorTransformer in the compact layout, `width` = heads x 64.
    width: int = 256
    layers: int = 2
    # An operator's demo recipe may multiply the batch (pops.demo.training_recipes: batch_factor, with its dropout);
    # the joint model trains at this size. docs/EXPERIMENTS.md has how these were chosen.
    batch_size: int = 64
    steps: int = 500  # optimiser steps per operator
    lr: float = 1e-3
    warmup_steps: int = 50
    bf16: bool | None = None  # bf16 autocast in training; None = where the CPU computes bf16 natively (~4x fp32)
    eval_seeds: int = 3  # sampling seeds at each operator's own scale (other scales: one seed)
    guidance_scales: tuple[float, ...] = ()  # also reported, besides each operator's own and the registry's scale
    # The decoder is for looking at; its training is one job beside the operators (one worker). What makes it draw is
    # how many decoded pictures go through the encoder (the embedding loss), and a wide stem (docs/EXPERIMENTS.md,
    # "The decoder").
    decoder_steps: int = 450
    decoder_size: int = 48
    decoder_stem: int = 12
    decoder_embedding_batch: int = 16  # decoded pictures per step that go through the encoder
    grid_rows: int = 4  # examples per operator in the report
    # Also train ONE model for all operators (pops.operators.joint: a learned operator row, trained on every operator's
    # pairs in turn) and show it beside them ("pops joint"); it saves as <out>/operators/joint. An operator runs on it
    # ("pops chosen") only when it beats the separate operator on validation by more than the noise. Off with fewer
    # than two operators. `joint_budget`: its steps, as a share of the separate operators' steps together. Off by
    # default (about a third of the full demo's time, and it rarely beats the separate operators beyond the noise);
    # the quick demo trains it.
    joint: bool = False
    joint_budget: float = 0.6
    retrain: bool = False
    threads: int | None = None  # torch threads per process (see choose_threads: 1 unless asked)
    workers: int | None = None  # processes that train and evaluate operators side by side (default: one per core, ≤ 2)
    progress: bool = True
    quick: bool = False
    # Replace operator folders under OUT that an earlier demo did not write (without their demo_training.json).
    overwrite: bool = False

    def __post_init__(self):
        """Fill in the defaults that depend on other fields, and check every value before anything is written: one
        line naming the first bad one."""
        self.out = Path(self.out)
        self.cache_dir = Path(self.cache_dir) if self.cache_dir is not None else self.out / "cache"
        self._check_operators()
        if self.bf16 is None:
            self.bf16 = cpu_has_fast_bf16()
        self._check_numbers()
        self._check_memory()
        self.world_config()  # the world's settings are checked now, before anything is written
        DecoderConfig(image_size=self.decoder_size, stem_size=self.decoder_stem).channels()  # a side it can draw
        self._check_shapes()

    def _check_operators(self) -> None:
        """Known operators, at least one; train_per_class (one number for all, or per operator) over the defaults."""
        for kind in self.operators:
            get_spec(kind)
        if not self.operators:
            raise ValueError("give at least one operator")
        if isinstance(self.train_per_class, int):
            self.train_per_class = {kind: self.train_per_class for kind in REGISTRY}
        unknown = sorted(set(self.train_per_class) - set(REGISTRY))
        if unknown:
            raise ValueError(f"train_per_class names unknown operators {unknown}; known: {', '.join(REGISTRY)}")
        self.train_per_class = {**default_train_per_class(self.quick), **self.train_per_class}

    def _check_numbers(self) -> None:
        """Counts, seed, threads, learning rate, samplers and guidance scales, in the ranges of pops.base.checks."""
        counts = dict(
            train_per_class=min(self.train_per_class.values()),
            test_per_class=self.test_per_class,
            gallery_per_class=self.gallery_per_class,
            steps=self.steps,
            batch_size=self.batch_size,
            eval_seeds=self.eval_seeds,
            validation_seeds=self.validation_seeds,
            tower_steps=self.tower_steps,
            layers=self.layers,
            recombine=self.recombine,
            decoder_steps=self.decoder_steps,
            decoder_embedding_batch=self.decoder_embedding_batch,
            workers=1 if self.workers is None else self.workers,
            threads=1 if self.threads is None else self.threads,
        )
        for name, value in counts.items():
            checks.count(value, name)
        checks.seed(self.seed, "seed", training=True)
        checks.threads(self.threads, "threads")
        checks.threads(self.workers, "workers")
        checks.learning_rate(self.lr, "lr")
        self.sampling_candidates()  # an unknown sampler, a bad number of steps or draws: one line now
        for scale in (*self.guidance_candidates, *self.guidance_scales):
            checks.guidance(scale, "guidance")
        checks.integer(self.validation_per_class, "validation_per_class", 0)
        checks.real(self.choice_z, "choice_z", 0.0)
        if self.instruct_recipe not in INSTRUCT_RECIPES:
            raise ValueError(
                f"instruct_recipe must be one of {', '.join(INSTRUCT_RECIPES)}, got {self.instruct_recipe!r}"
            )
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {', '.join(ALIGNMENTS)}, got {self.alignment!r}")

    def _check_memory(self) -> None:
        """Training fits in memory: the largest operator batch on every worker at once."""
        tokens = max(get_spec(kind).num_slots for kind in self.operators) + 4 + 8  # instruct: a word's tokens
        batch = self.batch_size * max(demo_recipe(kind).batch_factor for kind in self.operators)
        checks.memory(
            2 * checks.transformer_bytes(batch * self.workers_hint(), tokens, self.width, self.layers, training=True),
            f"training with batch_size {self.batch_size}",
            "give a smaller --batch-size",
        )

    def _check_shapes(self) -> None:
        """The network's width, the encoder's input side and the shares (joint budget, validation classes)."""
        if self.width < 64 or self.width % 64:
            raise ValueError(f"width must be a positive multiple of 64 (heads x 64), got {self.width}")
        if self.encoder_resolution < 32 or self.encoder_resolution % 32:
            raise ValueError(f"encoder_resolution must be a multiple of 32, got {self.encoder_resolution}")
        if not 0.0 < self.joint_budget <= 4.0:
            raise ValueError(f"joint_budget must be in (0, 4], got {self.joint_budget}")
        if not 0.0 <= self.validation_fraction < 0.5:
            raise ValueError(f"validation_fraction must be in [0, 0.5), got {self.validation_fraction}")
        if not self.guidance_candidates or min(self.guidance_candidates) < 1.0:
            raise ValueError("guidance_candidates must be scales >= 1")

    @property
    def trains_joint(self) -> bool:
        """Whether the demo trains the joint model: when asked, and for two operators or more."""
        return self.joint and len(self.operators) > 1

    def joint_steps(self) -> int:
        """The joint model's optimiser steps (each one operator's batch, in turn)."""
        return max(1, round(self.joint_budget * self.steps * len(self.operators)))

    def workers_hint(self) -> int:
        """Processes that will train at once (for the memory estimate): the requested number, else the cores (≤ 2)."""
        return self.workers if isinstance(self.workers, int) else usable_cores()

    def world_config(self):
        world = dict(self.world)
        world["training_only"] = {**default_training_only(self.quick), **world.get("training_only", {})}
        # from_dict: an unknown key is one line naming it (as in a YAML world config), not a constructor TypeError
        return WorldConfig.from_dict(dict(seed=self.seed, image_size=self.image_size, **world))

    def sampling_candidates(self) -> list[SamplingConfig]:
        """The calls tried at every candidate scale beside the default (pops.evaluation.choose_sampling): the
        `fast_samplers`."""
        return sampling_candidates(self.fast_samplers)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"], d["cache_dir"] = str(self.out), str(self.cache_dir)
        return d


def quick_config(**overrides) -> DemoConfig:
    """The `--quick` variant, which runs inside the test suite: a smaller world (12 shapes, 10 textures, 6 scenes,
    8 words; all 120 outfits: fewer classes, so fewer images to render and encode), fewer samples and steps, one gallery
    image per class, one sampling seed. Held-out combinations are still held out; the full demo's numbers are the
    result."""
    world = dict(
        shapes=(
            "circle",
            "square",
            "triangle",
            "star",
            "heart",
            "cross",
            "moon",
            "ring",
            "arrow",
            "house",
            "tree",
            "fish",
        ),
        textures=("stripes", "checks", "dots", "wood", "marble", "bricks", "zigzag", "waves", "plaid", "leopard"),
        scenes=("meadow", "beach", "night", "desert", "snow", "underwater"),
        edits=("red", "blue", "green", "big", "small", "rotated", "outlined", "blurry"),
    )
    base = dict(
        world=world,
        gallery_per_class=1,
        steps=200,
        warmup_steps=20,
        eval_seeds=1,
        # one scale beside the registry's: the quick world has too few validation classes to choose among five
        guidance_candidates=(3.0,),
        decoder_steps=30,
        decoder_size=32,
        decoder_stem=8,
        decoder_embedding_batch=8,
        grid_rows=2,
        joint=True,
        quick=True,
    )
    base.update(overrides)
    return DemoConfig(**base)


def choose_threads(requested: int | None) -> int:
    """Torch threads: 1 unless asked. The operators' matrix products are small, so a second thread gains little
    (measured here: 1.25x per training step on an idle 2-core machine), while OpenMP thread teams spin at every
    barrier and stall whenever another process holds a core (measured: the same training 2.6x slower with 2 threads
    than with 1 on a shared machine, up to 20x per step under heavy load). The cores are used by worker processes
    instead (see choose_workers)."""
    if requested is None:
        return 1
    if requested < 1:
        raise ValueError(f"threads must be at least 1, got {requested}")
    return requested


def usable_cores(limit: int = 2) -> int:
    """Cores this process may run on, at most `limit` (the demo is tuned for a 2-core machine)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(limit, cores))


def choose_encoder_threads(requested: int | None) -> int:
    """Torch threads while encoding images: the requested count, else one per core (≤ 2). Unlike the operators'
    small matrix products, EfficientNet's convolutions scale (measured: 9.1 -> 5.5 ms per image from 1 to 2 threads).
    Used for the class galleries; once the decoder trains beside the encoding in a worker, the rest is encoded with
    `choose_threads` (pops.demo.run.encode_world)."""
    return choose_threads(requested) if requested is not None else usable_cores()


def choose_workers(requested: int | None, jobs: int) -> int:
    """Processes that train and evaluate operators side by side: one per core (at most 2, which this machine
    has; measured: two operators trained at once take 1.15x the time of one), never more than there are jobs."""
    if requested is None:
        requested = usable_cores()
    if requested < 1:
        raise ValueError(f"workers must be at least 1, got {requested}")
    return max(1, min(requested, jobs))


class Stages:
    """Wall time per stage, for the summary the demo prints and the report shows."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def format_seconds(seconds: dict[str, float]) -> str:
    """The per-stage timing summary printed at the end of a run."""
    lines = [f"  {name:<28}{sec:8.1f} s" for name, sec in seconds.items()]
    return "\n".join(["stage timings:", *lines, f"  {'total':<28}{sum(seconds.values()):8.1f} s"])


def sampling_candidates(fast_samplers) -> list[SamplingConfig]:
    """Each (name, steps[, draws]) of `fast_samplers` as a SamplingConfig without a guidance scale (one draw unless a
    third number says)."""
    candidates = []
    for name, count, *draws in fast_samplers or ():
        if len(draws) > 1:
            raise ValueError(f"a fast sampler is (name, steps[, draws]), got {(name, count, *draws)}")
        names = {"num_inference_steps": f"fast_samplers {name} steps", "draws": f"fast_samplers {name} draws"}
        candidates.append(SamplingConfig(name, count, draws=draws[0] if draws else 1, names=names))
    return candidates
