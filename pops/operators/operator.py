"""`pops.Operator`: the public face of one trained operator (the contract of DESIGN §6)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import PriorTransformer, UnCLIPScheduler

from pops.base import checks
from pops.base.readers import read_safetensors, reason
from pops.base.reference import LAYOUTS, OPERATOR_CONFIG_NAME, SAMPLING_SCHEDULER_CONFIG, TRAINING_SCHEDULER_CONFIG
from pops.base.registry import OperatorSpec, get_spec
from pops.core.prior import Condition, PopsPrior
from pops.core.sampler import SAMPLERS, get_sampler, make_sampling_scheduler
from pops.embeddings.pairs import Batch, Pairs
from pops.encoders import load_encoder
from pops.operators import folder as checkpoints
from pops.operators.card import operator_card
from pops.operators.inputs import prepare_inputs
from pops.operators.vocabulary import VOCABULARY_FILE, Vocabulary


class Operator:
    """A pOps operator: a prior over raw image embeddings, conditioned on the inputs of a registry entry.

    Optional encoders (`image_encoder`, `text_encoder`, following pops.encoders' protocols) let `sample` take PIL
    images and words directly; without them it takes embeddings and token rows. Encoders named in
    `encoder_configs` ({"image": {"type": …}, "text": …}) are built on first use, so loading an operator stays cheap.
    `guidance_scale` is this operator's default scale: the registry's (the paper's) unless the operator was given its
    own, e.g. one chosen on validation data for a small operator trained from scratch; it is saved with the operator.
    So are `sampler` and `num_inference_steps`, what `sample` uses when none are named: the reference's (unclip, 25)
    unless the operator was made for others (a distilled student: ddim, 1 step, guidance 1 — one pass). `draws`:
    how many samples each output is the mean of (1, the reference: one sample; more estimate the posterior mean, the
    embedding closest on average to the target, at that many times the cost), also saved. `vocabulary`: the words
    of its text slot it was trained on (pops.operators.vocabulary; saved), when it reads every word as the nearest of
    them.
    """

    def __init__(
        self,
        model: PopsPrior,
        kind: str,
        *,
        scheduler: UnCLIPScheduler | None = None,
        image_encoder: Any = None,
        text_encoder: Any = None,
        encoder_configs: dict | None = None,
        guidance_scale: float | None = None,
        training: dict | None = None,
        sampler: str = "unclip",
        num_inference_steps: int = 25,
        source: dict | None = None,
        draws: int = 1,
        vocabulary: Vocabulary | None = None,
    ):
        self.model = model
        self.spec: OperatorSpec = get_spec(kind)
        self.guidance_scale = checks.guidance(self.spec.guidance_scale if guidance_scale is None else guidance_scale)
        self.scheduler_config = dict(scheduler.config) if scheduler is not None else dict(SAMPLING_SCHEDULER_CONFIG)
        self._encoders = {"image": image_encoder, "text": text_encoder}
        self._placement: dict = {}  # device/dtype for encoders built later (set by `to`)
        self.encoder_configs = encoder_configs or {}
        # How it was trained ({"rows": [[label, value], ...], "summary": {...}}, from pops.train): saved with the
        # operator and shown in its model card, so every later save keeps it.
        self.training = training
        # Where imported weights came from ({"checkpoint", "base", "license", "paper", …}, pops.models.released): saved
        # with the operator and shown in its model card.
        self.source = source
        # The sampler `sample` uses when none is named (pops.core.sampler.SAMPLERS): the reference's unless the operator
        # was made for another (saved with it).
        self.sampler = _sampler_name(sampler)
        # ... and its number of steps (a distilled one-pass student: 1).
        self.num_inference_steps = 25 if num_inference_steps is None else checks.steps(num_inference_steps)
        # ... and how many samples each output averages (see the class docstring).
        self.draws = checks.count(draws, "draws")
        # A text slot's input is read as the nearest word it was trained on (None: as it is).
        self.vocabulary = vocabulary

    # ----- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_prior(
        cls, prior: PriorTransformer, kind: str, scheduler: UnCLIPScheduler | None = None, **kwargs
    ) -> Operator:
        """Wrap an existing PriorTransformer (its clip statistics set) without copying it."""
        model = PopsPrior(prior, text_width=kwargs.pop("text_width", None))
        if not model.has_clip_stats():
            raise ValueError("the prior's clip_std is zero: set clip_mean/clip_std before wrapping it")
        return cls(model, kind, scheduler=scheduler, **kwargs)

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
        for several operators, pops.operators.joint) gives the operator `kind` names, with that operator's own settings;
        for an ordinary folder `kind`, when given, must be its kind. Encoders are built on first use;
        `load_encoders=False` never builds them (the operator then takes embeddings only)."""
        if checkpoint is None and (Path(path) / OPERATOR_CONFIG_NAME).is_file():
            model, config = checkpoints.load_operator_folder(Path(path))
            # A joint folder: the one operator asked for.
            op = cls.from_config(model, checkpoints.operator_config(config, kind, path), where=path)
        else:
            if checkpoint is not None:
                kind = checkpoints.check_kind(checkpoint, kind)  # a path naming another operator is refused
            if kind is None:
                if not Path(path).exists():
                    raise FileNotFoundError(f"no such operator folder: {path}")
                raise ValueError(
                    f"{path}: not a pops operator folder (no {OPERATOR_CONFIG_NAME}); to use a Kandinsky prior pass "
                    "checkpoint= and kind="
                )
            prior = checkpoints.load_kandinsky_prior(path)
            if checkpoint is not None:
                checkpoints.apply_pops_checkpoint(prior, checkpoints.load_state_dict_file(checkpoint))
            # The Kandinsky prior repo also holds the CLIP ViT-bigG encoders of its embedding space.
            # Released operators see pictures as the reference's inference scripts give them: squashed to 512².
            image = {"type": "clip-image", "repo": str(path), **({"resize": 512} if checkpoint is not None else {})}
            encoders = {"image": image, "text": {"type": "clip-text", "repo": str(path)}}
            op = cls.from_prior(prior, kind, encoder_configs=encoders)
        if not load_encoders:
            op.encoder_configs = {}
        if torch_dtype is not None:
            op.model.to(torch_dtype)
        return op

    @classmethod
    def from_config(cls, model: PopsPrior, config: dict, *, where: str | Path) -> Operator:
        """The operator a saved config describes (what `save_pretrained` writes, or a joint folder's entry for one
        operator: pops.operators.folder.operator_config), on `model`; a bad value is one ValueError naming the config
        file of the folder `where`."""
        try:
            return cls(
                model,
                config["kind"],
                scheduler=make_sampling_scheduler(config.get("sampling_scheduler")),
                encoder_configs=config.get("encoders") or {},
                guidance_scale=config.get("guidance_scale"),
                training=config.get("training"),
                sampler=config.get("sampler", "unclip"),
                num_inference_steps=config.get("num_inference_steps", 25),
                source=config.get("source"),
                draws=config.get("draws", 1),
                vocabulary=_saved_vocabulary(config, where),
            )
        except (TypeError, ValueError) as exc:  # a value of the config out of range, a scheduler it cannot build
            raise ValueError(f"{Path(where) / OPERATOR_CONFIG_NAME}: {reason(exc)}") from None

    def settings(self) -> dict:
        """How this operator samples and reads its inputs, as saved: its scale, scheduler, sampler, steps, encoders
        (a joint folder keeps one such entry per operator)."""
        config = dict(
            guidance_scale=self.guidance_scale, sampling_scheduler=self.scheduler_config, encoders=self.encoder_configs
        )
        if self.sampler != "unclip":
            config["sampler"] = self.sampler
        if self.num_inference_steps != 25:
            config["num_inference_steps"] = self.num_inference_steps
        if self.draws != 1:
            config["draws"] = self.draws
        if self.vocabulary is not None:
            config["vocabulary"] = len(self.vocabulary)  # words, in the folder's VOCABULARY_FILE
        return config

    def vocabulary_tensors(self) -> dict[str, torch.Tensor]:
        """This operator's share of its folder's VOCABULARY_FILE (nothing without a vocabulary)."""
        return self.vocabulary.tensors(self.spec.name) if self.vocabulary is not None else {}

    def save_pretrained(
        self, folder: str | Path, *, extra_json: dict[str, Any] | None = None, dtype: torch.dtype | None = None
    ) -> Path:
        """Write the operator folder (weights, config, model card, and `extra_json`: more JSON files by name, such as
        a training record) so that it appears, or changes, only once complete; weights holding NaN or inf are
        refused (ValueError) rather than saved. Files of an existing folder that the save does not write are kept.
        `dtype` (e.g. torch.float16) stores the weights in that precision, half the size of float32 (they load back
        as float32)."""
        config = dict(kind=self.spec.name, **self.settings(), training_scheduler=dict(TRAINING_SCHEDULER_CONFIG))
        if self.training is not None:
            config["training"] = self.training
        if self.source is not None:
            config["source"] = self.source
        checkpoints.save_operator_folder(
            Path(folder),
            self.model,
            config,
            card=self._model_card(),
            extra_json=extra_json,
            dtype=dtype,
            extra_tensors={VOCABULARY_FILE: self.vocabulary_tensors()},
        )
        return Path(folder)

    def to(self, device=None, dtype=None) -> Operator:
        """Move the prior; encoders built after this (from `encoder_configs`) are placed there too. `device` and
        `dtype` are checked as the CLI's --device/--dtype (pops.base.devices): one line for a device this machine lacks
        or an unknown precision."""
        from pops.base.devices import resolve_device, resolve_dtype

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
    ) -> torch.Tensor:
        """Sample (B, D) raw embeddings. `inputs` holds one entry per slot (see docs/ARCHITECTURE.md); None drops it.
        `guidance_scale` and `num_inference_steps` default to the operator's own (see the class docstring); batch-1
        inputs broadcast to `batch_size` (e.g. several samples of one input). `sampler`: a name of
        pops.core.sampler.SAMPLERS (`unclip`, the reference's ancestral loop; `ddim`; `ddim-linspace`; `dpmpp`), default
        `op.sampler`; `draws`: samples averaged into each output, default `op.draws`. Bad arguments raise
        pops.base.checks.BadValue (a TypeError and a ValueError) naming the argument; see pops.base.checks for the
        ranges (guidance 1 = no guidance)."""
        settings = (guidance_scale, num_inference_steps, generator, layout, sampler, draws)
        self._settings(*settings)  # bad values before any work
        cond = self.condition(inputs, batch_size)
        return self._sample(cond, *settings, progress)

    def sample_batch(
        self,
        batch: Batch | Pairs,
        *,
        guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        layout: str = "compact",
        chunk_size: int | None = 512,
        progress: bool = False,
        sampler: str | None = None,
        draws: int | None = None,
    ) -> torch.Tensor:
        """Sample one raw embedding per sample of a training `Batch` or of `Pairs` (already embeddings: slots as
        `Pairs` holds them; a slot a sample lacks, `present` False, is the null condition); returns (N, D).

        The samples go in chunks of `chunk_size` (None: all at once), which bound the memory of one sampling loop;
        the chunks draw from the ONE `generator` in turn, so the result depends on its seed and the chunk size."""
        if not isinstance(batch, (Batch, Pairs)):
            raise checks.BadValue(f"sample_batch takes a Batch or Pairs, got {type(batch).__name__}")
        size = len(batch) if isinstance(batch, Pairs) else batch.target.shape[0]
        if size == 0:
            raise ValueError("no samples to sample: the batch is empty")
        step = size if chunk_size is None else checks.count(chunk_size, "chunk_size")
        settings = (guidance_scale, num_inference_steps, generator, layout, sampler, draws)
        self.check_memory(min(step, size), layout, self._settings(*settings)[3])  # bad values before any work
        outs = []
        for start in range(0, size, step):
            index = torch.arange(start, min(start + step, size))
            part = batch.batch(index) if isinstance(batch, Pairs) else batch.select(index)
            drop = None if part.present is None else ~part.present.bool()
            cond = self._condition(part.slots, drop)
            outs.append(self._sample(cond, *settings, progress))
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
            f"sampling {batch} row(s) with the {self.spec.name} operator",
            "ask for fewer samples, or sample in chunks (Operator.sample_batch)",
            available=checks.device_memory(self.device),
        )

    def _settings(self, guidance_scale, num_inference_steps, generator, layout, sampler, draws):
        """The checked (guidance scale, sampler name, steps, draws) of one call (None: the operator's own)."""
        scale = self.guidance_scale if guidance_scale is None else checks.guidance(guidance_scale)
        if layout not in LAYOUTS:
            raise checks.BadValue(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        gens = generator if isinstance(generator, (list, tuple)) else [generator]
        if not all(g is None or isinstance(g, torch.Generator) for g in gens) or (generator is not None and not gens):
            raise checks.BadValue(f"generator must be a torch.Generator or a list of them, got {generator!r:.60}")
        name, steps = self.sampling(sampler, num_inference_steps)
        return scale, name, steps, checks.count(self.draws if draws is None else draws, "draws")

    def _sample(
        self, cond: Condition, guidance_scale, num_inference_steps, generator, layout, sampler, draws, progress
    ) -> torch.Tensor:
        """The one path from condition rows to samples: the operator's sampler, scheduler and guidance scale; with
        several draws, each row's samples in a row (each row's generator draws all of its own), then their mean."""
        scale, name, num_inference_steps, draws = self._settings(
            guidance_scale, num_inference_steps, generator, layout, sampler, draws
        )
        rows = cond.rows.shape[0]
        self.check_memory(rows, layout, draws)
        if isinstance(generator, (list, tuple)):
            if len(generator) != rows:
                raise checks.BadValue(f"generator: a list of {len(generator)} generators for {rows} row(s)")
            generator = [g for g in generator for _ in range(draws)]
        scheduler = make_sampling_scheduler(self.scheduler_config) if name == "unclip" else None
        with self.model.sampling_mode():
            out = get_sampler(name)(
                self.model,
                cond.repeat(draws) if draws > 1 else cond,
                guidance_scale=scale,
                num_inference_steps=num_inference_steps,
                generator=generator,
                layout=layout,
                scheduler=scheduler,
                progress=progress,
            )
        return out.view(rows, draws, -1).mean(1) if draws > 1 else out

    def sampling(self, sampler: str | None = None, num_inference_steps: int | None = None) -> tuple[str, int]:
        """The (sampler, steps) a call with these arguments uses: the operator's own where None; its own steps go
        with its own sampler only (another sampler named without steps takes the reference's 25)."""
        name = self.sampler if sampler is None else _sampler_name(sampler)
        if num_inference_steps is None:
            return name, self.num_inference_steps if name == self.sampler else 25
        return name, checks.steps(num_inference_steps)

    def _model_card(self) -> str:
        return operator_card(self)


def _sampler_name(name) -> str:
    if not isinstance(name, str):
        raise checks.BadValue(f"sampler must be a name ({', '.join(SAMPLERS)}), got {name!r:.40}")
    get_sampler(name)
    return name


def _saved_vocabulary(config: dict, where: str | Path) -> Vocabulary | None:
    """The vocabulary a saved config names (its words are in the folder's VOCABULARY_FILE), else None."""
    if not config.get("vocabulary"):
        return None
    tensors, _ = read_safetensors(Path(where) / VOCABULARY_FILE, "operator vocabulary")
    vocabulary = Vocabulary.from_tensors(tensors, config["kind"])
    if len(vocabulary) != config["vocabulary"]:
        raise ValueError(f"{VOCABULARY_FILE} holds {len(vocabulary)} words, the config says {config['vocabulary']}")
    return vocabulary
