"""`pops.Operator`: the public face of one trained operator (the contract of DESIGN §6)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from diffusers import PriorTransformer, UnCLIPScheduler

from pops.base import checks
from pops.base.devices import resolve_device, resolve_dtype
from pops.base.errors import BadValue
from pops.base.reference import OPERATOR_CONFIG_NAME
from pops.base.registry import OperatorSpec, get_spec
from pops.core.prior import Condition, PopsPrior
from pops.core.sampler import get_sampler, make_sampling_scheduler
from pops.core.sampling import SamplingConfig, call_sampling
from pops.embeddings.pairs import Batch, Pairs
from pops.encoders import load_encoder
from pops.operators import checkpoint
from pops.operators.card import operator_card
from pops.operators.folder import (
    OperatorConfig,
    load_operator_folder,
    operator_config,
    save_operator_folder,
    saved_vocabulary,
)
from pops.operators.inputs import prepare_inputs
from pops.operators.vocabulary import VOCABULARY_FILE, Vocabulary


class _ConfigField:
    """An operator attribute that is a field of its `OperatorConfig` (the one place the setting lives)."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, op, owner=None):
        return self if op is None else getattr(op.config, self.name)

    def __set__(self, op, value) -> None:
        op.config = replace(op.config, **{self.name: value})  # a new config, checked as any


class _SamplingField(_ConfigField):
    """An operator attribute that is a value of its own `SamplingConfig`; setting it checks the value."""

    def __get__(self, op, owner=None):
        return self if op is None else getattr(op.config.sampling, self.name)

    def __set__(self, op, value) -> None:
        op.sampling = replace(op.sampling, **{self.name: value})


class Operator:
    """A pOps operator: a prior over raw image embeddings, conditioned on the inputs of a registry entry.

    `Operator(model, kind, **settings)`: `kind` and `settings` make its `OperatorConfig` (pops.operators.folder:
    guidance_scale, sampler, num_inference_steps, draws, encoder_configs, training, source; `op.config`, saved with
    it). Its own `sampling` — what `sample` uses when a call names nothing — is the registry's guidance scale and the
    reference's call (unclip, 25 steps, one draw) unless it was given others (e.g. a scale chosen on validation data
    for a small operator trained from scratch; a distilled student's one pass). `draws`: how many samples each output
    is the mean of (more estimate the posterior mean, the embedding closest on average to the target, at that many
    times the cost). Optional encoders (`image_encoder`, `text_encoder`, following pops.encoders' protocols) let
    `sample` take PIL images and words; those named in `encoder_configs` are built on first use, so loading stays
    cheap. `vocabulary`: the words of its text slot it was trained on (pops.operators.vocabulary; saved), when it reads
    every word as the nearest of them.
    """

    kind = property(lambda self: self.config.kind)
    sampling = _ConfigField()
    encoder_configs = _ConfigField()
    training = _ConfigField()
    source = _ConfigField()
    guidance_scale = _SamplingField()
    sampler = _SamplingField()
    num_inference_steps = _SamplingField()
    draws = _SamplingField()

    def __init__(
        self,
        model: PopsPrior,
        kind: str | OperatorConfig,
        *,
        image_encoder: Any = None,
        text_encoder: Any = None,
        vocabulary: Vocabulary | None = None,
        **settings,
    ):
        self.model = model
        self.config = kind if isinstance(kind, OperatorConfig) else OperatorConfig.create(kind, **settings)
        if isinstance(kind, OperatorConfig) and settings:
            raise TypeError(f"give the settings in the OperatorConfig, not beside it: {', '.join(settings)}")
        self.spec: OperatorSpec = get_spec(self.config.kind)
        self._encoders = {"image": image_encoder, "text": text_encoder}
        self._placement: dict = {}  # device/dtype for encoders built later (set by `to`)
        # A text slot's input is read as the nearest word it was trained on (None: as it is).
        self.vocabulary = vocabulary

    # ----- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_prior(
        cls, prior: PriorTransformer, kind: str, scheduler: UnCLIPScheduler | None = None, **settings
    ) -> Operator:
        """Wrap an existing PriorTransformer (its clip statistics set) without copying it; `scheduler` configures the
        reference sampler, `settings` as in `Operator(...)` (and `text_width`, a text encoder's width)."""
        model = PopsPrior(prior, text_width=settings.pop("text_width", None))
        if not model.has_clip_stats():
            raise ValueError("the prior's clip_std is zero: set clip_mean/clip_std before wrapping it")
        if scheduler is not None:
            settings["sampling_scheduler"] = dict(scheduler.config)
        return cls(model, kind, **settings)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        checkpoint: str | Path | None = None,
        kind: str | None = None,
        load_encoders: bool = True,
        torch_dtype: torch.dtype | None = None,
    ) -> Operator:
        """Load our format (a folder written by `save_pretrained`), or a Kandinsky 2.2 prior (hub id or local folder)
        with a released pOps checkpoint on top (`checkpoint="pOpsPaper/operators:models/texturing/learned_prior.pth"`
        or a local .pth; the operator kind is read from the path when `kind` is not given). A joint folder (one prior
        for several operators, pops.operators.joint) gives the operator `kind` names, with that operator's own
        settings; for an ordinary folder `kind`, when given, must be its kind. Encoders are built on first use;
        `load_encoders=False` never builds them (the operator then takes embeddings only)."""
        if checkpoint is None and (Path(path) / OPERATOR_CONFIG_NAME).is_file():
            model, config = load_operator_folder(Path(path))
            op = cls.from_folder_config(model, operator_config(config, kind, path), where=path)
        else:
            op = cls._from_kandinsky(path, checkpoint, kind)
        if not load_encoders:
            op.encoder_configs = {}
        if torch_dtype is not None:
            op.model.to(torch_dtype)
        return op

    @classmethod
    def _from_kandinsky(cls, path: str | Path, released: str | Path | None, kind: str | None) -> Operator:
        """A Kandinsky 2.2 prior, with released pOps weights on top when `released` names a checkpoint."""
        if released is not None:
            kind = checkpoint.check_kind(released, kind)  # a path naming another operator is refused
        if kind is None:
            if not Path(path).exists():
                raise FileNotFoundError(f"no such operator folder: {path}")
            raise ValueError(
                f"{path}: not a pops operator folder (no {OPERATOR_CONFIG_NAME}); to use a Kandinsky prior pass "
                "checkpoint= and kind="
            )
        prior = checkpoint.load_kandinsky_prior(path)
        if released is not None:
            checkpoint.apply_pops_checkpoint(prior, checkpoint.load_state_dict_file(released))
        # The Kandinsky prior repo also holds the CLIP ViT-bigG encoders of its embedding space.
        # Released operators see pictures as the reference's inference scripts give them: squashed to 512².
        image = {"type": "clip-image", "repo": str(path), **({"resize": 512} if released is not None else {})}
        encoders = {"image": image, "text": {"type": "clip-text", "repo": str(path)}}
        return cls.from_prior(prior, kind, encoder_configs=encoders)

    @classmethod
    def from_folder_config(cls, model: PopsPrior, config: dict, *, where: str | Path) -> Operator:
        """The operator a folder's config describes (what `save_pretrained` writes, or a joint folder's entry for one
        operator: pops.operators.folder.operator_config), on `model`; a bad value is one ValueError naming the config
        file of the folder `where`."""
        return cls(model, OperatorConfig.from_dict(config, where=where), vocabulary=saved_vocabulary(config, where))

    def settings(self) -> dict:
        """How this operator samples and reads its inputs, as its folder saves them (a joint folder keeps one such
        entry per operator)."""
        return self.config.settings() | ({"vocabulary": len(self.vocabulary)} if self.vocabulary is not None else {})

    def vocabulary_tensors(self) -> dict[str, torch.Tensor]:
        """This operator's share of its folder's VOCABULARY_FILE (nothing without a vocabulary)."""
        return self.vocabulary.tensors(self.kind) if self.vocabulary is not None else {}

    def save_pretrained(
        self, folder: str | Path, *, extra_json: dict[str, Any] | None = None, dtype: torch.dtype | None = None
    ) -> Path:
        """Write the operator folder (weights, config, model card, and `extra_json`: more JSON files by name, such as
        a training record) so that it appears, or changes, only once complete; weights holding NaN or inf are
        refused (ValueError) rather than saved. Files of an existing folder that the save does not write are kept.
        `dtype` (e.g. torch.float16) stores the weights in that precision, half the size of float32 (they load back
        as float32)."""
        config = self.config.to_dict() | self.settings()
        save_operator_folder(
            Path(folder),
            self.model,
            config,
            card=operator_card(self),
            extra_json=extra_json,
            dtype=dtype,
            extra_tensors={VOCABULARY_FILE: self.vocabulary_tensors()},
        )
        return Path(folder)

    def to(self, device=None, dtype=None) -> Operator:
        """Move the prior; encoders built after this (from `encoder_configs`) are placed there too. `device` and
        `dtype` are checked as the CLI's --device/--dtype (pops.base.devices): one line for a device this machine lacks
        or an unknown precision."""
        device = resolve_device(device) if device is not None else None
        dtype = resolve_dtype(dtype) if dtype is not None else None
        self.model.to(device=device, dtype=dtype)
        self._placement = {k: v for k, v in dict(device=device, dtype=dtype).items() if v is not None}
        return self

    @property
    def image_encoder(self):
        return self._encoder("image")

    @image_encoder.setter
    def image_encoder(self, encoder) -> None:
        self._encoders["image"] = encoder

    @property
    def text_encoder(self):
        return self._encoder("text")

    @text_encoder.setter
    def text_encoder(self, encoder) -> None:
        self._encoders["text"] = encoder

    def _encoder(self, modality: str):
        if self._encoders[modality] is None and self.encoder_configs.get(modality):
            self._encoders[modality] = load_encoder(self.encoder_configs[modality], **self._placement)
        return self._encoders[modality]

    @property
    def embedding_dim(self) -> int:
        return self.model.embedding_dim

    @property
    def guidance_folded(self) -> bool:
        """True for a distilled student: its guidance is in its weights (trained to give its teacher's guided samples
        with no unconditional pass), so no other scale is a guidance scale for it (pops eval shows those as n/a)."""
        summary = (self.training or {}).get("summary") or {}
        return bool(summary.get("guidance_folded", summary.get("method") == "distill"))

    @property
    def device(self) -> torch.device:
        return self.model.prior.clip_mean.device

    # ----- sampling ------------------------------------------------------------------------------------------------
    def call_config(self, sampling: SamplingConfig | None = None, **values) -> SamplingConfig:
        """The complete SamplingConfig of one call: `sampling` or its values as keywords (pops.core.sampling.
        call_sampling), every value left None this operator's own."""
        return call_sampling(sampling, **values).resolve(self.sampling)

    def sample(
        self,
        inputs: Sequence[Any],
        *,
        guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        layout: str = "compact",
        batch_size: int | None = None,
        progress: bool = False,
        sampler: str | None = None,
        draws: int | None = None,
        sampling: SamplingConfig | None = None,
    ) -> torch.Tensor:
        """Sample (B, D) raw embeddings. `inputs` holds one entry per slot (see docs/ARCHITECTURE.md); None drops it.
        How it samples: `sampling` (a SamplingConfig), or its values as keywords — `guidance_scale`,
        `num_inference_steps`, `sampler` (a name of pops.core.sampler.SAMPLERS: `unclip`, the reference's ancestral
        loop; `ddim`; `ddim-linspace`; `dpmpp`), `draws` (samples averaged into each output), `layout` — each None the
        operator's own (`op.sampling`). Batch-1 inputs broadcast to `batch_size` (e.g. several samples of one input).
        Bad arguments raise pops.base.errors.BadValue (a TypeError and a ValueError) naming the argument; see
        pops.base.checks for the ranges (guidance 1 = no guidance)."""
        values = dict(guidance_scale=guidance_scale, num_inference_steps=num_inference_steps, sampler=sampler)
        config = self.call_config(sampling, **values, draws=draws, layout=layout)  # bad values before any work
        _check_generator(generator)
        cond = self.condition(inputs, batch_size)
        return self._sample(cond, config, generator, progress)

    def sample_batch(
        self,
        batch: Batch | Pairs,
        *,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | None = None,
        chunk_size: int | None = 512,
        progress: bool = False,
        **values,
    ) -> torch.Tensor:
        """Sample one raw embedding per sample of a training `Batch` or of `Pairs` (already embeddings: slots as
        `Pairs` holds them; a slot a sample lacks, `present` False, is the null condition); returns (N, D). How it
        samples: as `sample` (`sampling`, or its values as keywords).

        The samples go in chunks of `chunk_size` (None: all at once), which bound the memory of one sampling loop;
        the chunks draw from the ONE `generator` in turn, so the result depends on its seed and the chunk size."""
        if not isinstance(batch, (Batch, Pairs)):
            raise BadValue(f"sample_batch takes a Batch or Pairs, got {type(batch).__name__}")
        size = len(batch) if isinstance(batch, Pairs) else batch.target.shape[0]
        if size == 0:
            raise ValueError("no samples to sample: the batch is empty")
        step = size if chunk_size is None else checks.count(chunk_size, "chunk_size")
        config = self.call_config(sampling, **values)
        _check_generator(generator)
        self.check_memory(min(step, size), config.layout, config.draws)  # before any work
        outs = []
        for start in range(0, size, step):
            index = torch.arange(start, min(start + step, size))
            part = batch.batch(index) if isinstance(batch, Pairs) else batch.select(index)
            drop = None if part.present is None else ~part.present.bool()
            outs.append(self._sample(self._condition(part.slots, drop), config, generator, progress))
        return torch.cat(outs)

    def condition(self, inputs: Sequence[Any], batch_size: int | None = None) -> Condition:
        """Validate the user's inputs and turn them into condition rows (broadcasting batch-1 inputs)."""
        if batch_size is not None:
            batch_size = checks.count(batch_size, "batch_size")
        slots, drop = prepare_inputs(self, inputs, batch_size)
        return self._condition(slots, drop)

    def _condition(self, slots: Sequence[Any], drop: torch.Tensor | None) -> Condition:
        """The prior's condition rows of prepared slots, each text input read as its nearest known word first."""
        if self.vocabulary is not None:
            slots = [
                self.vocabulary.nearest(*value) if slot.kind == "text" and value is not None else value
                for slot, value in zip(self.spec.slots, slots)
            ]
        return self.model.condition(self.spec, slots, drop=drop)

    def sampling_bytes(self, batch: int, layout: str = "compact") -> float:
        """A lower-bound estimate of the memory one sampling call over `batch` rows allocates (guided: the
        unconditional rows too), from the prior's width and the layout's sequence length."""
        config = self.model.prior.config
        width = config["num_attention_heads"] * config["attention_head_dim"]
        rows = self.spec.num_slots if layout == "compact" else config["num_embeddings"]
        tokens = rows + config["additional_embeddings"]
        activations = checks.transformer_bytes(2 * batch, tokens, width, 1)
        return activations + 2 * batch * tokens * self.embedding_dim * 4 * 3  # condition rows, keys/values cached

    def check_memory(self, batch: int, layout: str = "compact", draws: int | None = None) -> None:
        """Refuse (one line) a call over `batch` rows, each sampled `draws` times (None: the operator's own draws),
        that cannot fit in the memory this machine has free."""
        batch *= self.draws if draws is None else draws
        checks.memory(
            self.sampling_bytes(batch, layout),
            f"sampling {batch} row(s) with the {self.kind} operator",
            "ask for fewer samples, or sample in chunks (Operator.sample_batch)",
            available=checks.device_memory(self.device),
        )

    def sampling_flops(self, rows: int, config: SamplingConfig) -> float:
        """An estimate of the floating-point work of sampling `rows` rows as a complete `config` says: two operations
        per weight and token, for every pass (steps x draws, twice when guided)."""
        weights = sum(p.numel() for p in self.model.prior.transformer_blocks.parameters())
        tokens = self.spec.num_slots + 8  # the condition rows (a word: a few) and the prior's own tokens
        passes = config.num_inference_steps * config.draws * (2 if config.guidance_scale > 1 else 1)
        return 2.0 * weights * tokens * passes * rows

    def check_work(self, rows: int, config: SamplingConfig, what: str | None = None) -> float:
        """Refuse (one line) sampling that no machine would finish in a day (pops.base.checks.work); returns the
        estimated seconds at best."""
        what = what or f"sampling {rows} row(s) with the {self.kind} operator ({config.label})"
        return checks.work(self.sampling_flops(rows, config), what, "ask for fewer samples or steps", self.device)

    def _sample(self, cond: Condition, config: SamplingConfig, generator, progress: bool) -> torch.Tensor:
        """The one path from condition rows to samples, as a complete `config` says; with several draws, each row's
        samples in a row (each row's generator draws all of its own), then their mean."""
        rows, draws = cond.rows.shape[0], config.draws
        self.check_memory(rows, config.layout, draws)
        self.check_work(rows, config)
        if isinstance(generator, (list, tuple)):
            if len(generator) != rows:
                raise BadValue(f"generator: a list of {len(generator)} generators for {rows} row(s)")
            generator = [g for g in generator for _ in range(draws)]
        scheduler = make_sampling_scheduler(self.config.sampling_scheduler) if config.sampler == "unclip" else None
        with self.model.sampling_mode():
            out = get_sampler(config.sampler)(
                self.model,
                cond.repeat(draws) if draws > 1 else cond,
                guidance_scale=config.guidance_scale,
                num_inference_steps=config.num_inference_steps,
                generator=generator,
                layout=config.layout,
                scheduler=scheduler,
                progress=progress,
            )
        return out.view(rows, draws, -1).mean(1) if draws > 1 else out


def _check_generator(generator) -> None:
    gens = generator if isinstance(generator, (list, tuple)) else [generator]
    if not all(g is None or isinstance(g, torch.Generator) for g in gens) or (generator is not None and not gens):
        raise BadValue(f"generator must be a torch.Generator or a list of them, got {generator!r:.60}")
