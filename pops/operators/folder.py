"""The operator folder, our format: what `Operator.save_pretrained` writes and `Operator.from_pretrained` reads.

A folder holds `model.safetensors` (the prior and the text projection, without the clip statistics),
`pops_config.json` (the operator's `OperatorConfig`, plus the format version, the PriorTransformer config, the clip
statistics, the training scheduler config and the text width), a model card `README.md` and, for an operator that
keeps its training words, `vocabulary.safetensors`.

A joint folder (pops.operators.joint: one prior for several operators) is the same, its weights holding the operator
rows too (`operator_table` names them), with `operators` — each operator's own settings (guidance scale, sampler, steps,
encoders) — instead of one `kind`. `operator_config` turns either into the config of one operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import PriorTransformer
from safetensors.torch import save_file

from pops.base.errors import reason
from pops.base.files import atomic_write, atomic_write_json, atomic_write_text, write_folder
from pops.base.readers import read_json, read_safetensors, read_safetensors_shapes
from pops.base.reference import (
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    OPERATOR_CONFIG_NAME,
    OPERATOR_WEIGHTS_NAME,
    SAMPLING_SCHEDULER_CONFIG,
    TRAINING_SCHEDULER_CONFIG,
    is_joint_config,
)
from pops.base.registry import get_spec
from pops.core.prior import PopsPrior
from pops.core.sampler import make_sampling_scheduler
from pops.core.sampling import SamplingConfig
from pops.encoders import bundle_encoder, located_encoder
from pops.operators.checkpoint import CLIP_STATS
from pops.operators.vocabulary import VOCABULARY_FILE, Vocabulary

FORMAT_VERSION = 1


@dataclass(frozen=True)
class OperatorConfig:
    """One operator's settings — the arguments of `Operator(model, kind, **settings)` and what its folder's
    pops_config.json holds of it (the one owner of that format: `to_dict` / `from_dict`).

    `sampling`: how a call samples when it names nothing (its own guidance scale, sampler, steps and draws: the
    registry's guidance and the reference's call unless it was given others, e.g. a scale chosen on validation data,
    or a distilled student's one pass). `sampling_scheduler`: the UnCLIPScheduler config of the `unclip` sampler.
    `encoder_configs`: the encoders to build on first use ({"image": {"type": …}, "text": …}), so a loaded operator
    takes pictures and words. `training`: how it was trained (pops.train's record, shown in its card). `source`:
    where imported weights came from (pops.models.released)."""

    kind: str
    sampling: SamplingConfig
    sampling_scheduler: dict = field(default_factory=lambda: dict(SAMPLING_SCHEDULER_CONFIG))
    encoder_configs: dict = field(default_factory=dict)
    training: dict | None = None
    source: dict | None = None

    def __post_init__(self) -> None:
        get_spec(self.kind)  # an unknown operator is one line naming the known ones
        own = self.sampling
        if None in (own.sampler, own.num_inference_steps, own.guidance_scale, own.draws):
            raise ValueError(f"an operator's own sampling names every value, got {own}")

    @classmethod
    def create(
        cls,
        kind: str,
        *,
        guidance_scale: float | None = None,
        sampler: str = DEFAULT_SAMPLER,
        num_inference_steps: int | None = DEFAULT_STEPS,
        draws: int = 1,
        sampling_scheduler: dict | None = None,
        encoder_configs: dict | None = None,
        training: dict | None = None,
        source: dict | None = None,
    ) -> OperatorConfig:
        """The config of `Operator`'s keyword arguments, each checked (guidance None: the registry's scale)."""
        spec = get_spec(kind)
        scale = spec.guidance_scale if guidance_scale is None else guidance_scale
        steps = DEFAULT_STEPS if num_inference_steps is None else num_inference_steps
        scheduler = dict(SAMPLING_SCHEDULER_CONFIG)
        if sampling_scheduler is not None:  # one it cannot take is refused now, not when it samples
            scheduler = dict(make_sampling_scheduler(sampling_scheduler).config)
        sampling = SamplingConfig(sampler, steps, scale, draws)
        return cls(kind, sampling, scheduler, encoder_configs or {}, training, source)

    def settings(self) -> dict:
        """How it samples and reads its inputs, as saved (a joint folder keeps one such entry per operator); the
        reference's sampler, steps and one draw are not written."""
        config = dict(
            guidance_scale=self.sampling.guidance_scale,
            sampling_scheduler=self.sampling_scheduler,
            encoders=self.encoder_configs,
        )
        if self.sampling.sampler != DEFAULT_SAMPLER:
            config["sampler"] = self.sampling.sampler
        if self.sampling.num_inference_steps != DEFAULT_STEPS:
            config["num_inference_steps"] = self.sampling.num_inference_steps
        if self.sampling.draws != 1:
            config["draws"] = self.sampling.draws
        return config

    def to_dict(self) -> dict:
        """The operator's entries of pops_config.json."""
        config = dict(kind=self.kind, **self.settings(), training_scheduler=dict(TRAINING_SCHEDULER_CONFIG))
        if self.training is not None:
            config["training"] = self.training
        if self.source is not None:
            config["source"] = self.source
        return config

    @classmethod
    def from_dict(cls, config: dict, *, where: str | Path) -> OperatorConfig:
        """The config a saved pops_config.json describes (or a joint folder's entry for one operator, from
        `operator_config`); a bad value is one ValueError naming the config file of the folder `where`."""
        try:
            return cls.create(
                config["kind"],
                guidance_scale=config.get("guidance_scale"),
                sampler=config.get("sampler", DEFAULT_SAMPLER),
                num_inference_steps=config.get("num_inference_steps", DEFAULT_STEPS),
                draws=config.get("draws", 1),
                sampling_scheduler=config.get("sampling_scheduler"),
                encoder_configs=located_encoders(config.get("encoders"), where),
                training=config.get("training"),
                source=config.get("source"),
            )
        except (TypeError, ValueError) as exc:  # a value out of range, a scheduler config it cannot build
            raise ValueError(f"{Path(where) / OPERATOR_CONFIG_NAME}: {reason(exc)}") from None


def saved_vocabulary(config: dict, where: str | Path) -> Vocabulary | None:
    """The vocabulary a saved config names (its words are in the folder's VOCABULARY_FILE), else None."""
    if not config.get("vocabulary"):
        return None
    tensors, _ = read_safetensors(Path(where) / VOCABULARY_FILE, "operator vocabulary")
    vocabulary = Vocabulary.from_tensors(tensors, config["kind"])
    if len(vocabulary) != config["vocabulary"]:
        raise ValueError(f"{VOCABULARY_FILE} holds {len(vocabulary)} words, the config says {config['vocabulary']}")
    return vocabulary


# ----- our format ------------------------------------------------------------------------------------------------
def save_operator_folder(
    folder: Path,
    model: PopsPrior,
    config: dict,
    card: str,
    extra_json: dict[str, Any] | None = None,
    *,
    dtype: torch.dtype | None = None,
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> None:
    """Write weights, config, model card (and `extra_json`: more JSON files, by name; `extra_tensors`: more
    safetensors files, by name, such as an operator's vocabulary; an empty one is not written) as one complete
    folder: it appears, or changes, only once every file is written (pops.base.files.write_folder; the config goes in
    last). `dtype` stores the floating-point weights in that precision (fp16/bf16 halve the file; loading upcasts to
    float32); the clip statistics stay exact."""
    state = {
        k: v.detach().to(dtype if dtype is not None and v.is_floating_point() else v.dtype).contiguous().cpu()
        for k, v in model.state_dict().items()
        if k.rsplit(".", 1)[-1] not in CLIP_STATS
    }
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise ValueError(
            f"operator not saved to {folder}: {len(broken)} of its {len(state)} weight tensors hold NaN or inf "
            "(did training diverge? lower the learning rate)"
        )
    config = dict(
        config,
        format_version=FORMAT_VERSION,
        prior_config={k: v for k, v in model.prior.config.items() if not k.startswith("_")},
        text_width=model.text_proj.in_features if model.text_proj is not None else None,
        operator_table=list(model.operators),
        clip_mean=model.prior.clip_mean.detach().float().cpu().reshape(-1).tolist(),
        clip_std=model.prior.clip_std.detach().float().cpu().reshape(-1).tolist(),
    )

    def write(tmp: Path) -> None:
        bundle_encoders(config, tmp)
        atomic_write(tmp / OPERATOR_WEIGHTS_NAME, lambda t: save_file(state, t, metadata={"format": "pt"}))
        atomic_write_text(tmp / "README.md", card)
        for name, value in (extra_json or {}).items():
            atomic_write_json(tmp / name, value)
        for name, tensors in (extra_tensors or {}).items():
            if tensors:  # nothing to keep (an operator without a vocabulary): no file
                atomic_write(tmp / name, lambda t, tensors=tensors: save_file(tensors, t, metadata={"format": "pt"}))
        atomic_write_json(tmp / OPERATOR_CONFIG_NAME, config)

    write_folder(Path(folder), write, commit=OPERATOR_CONFIG_NAME)


def bundle_encoders(config: dict, folder: Path) -> None:
    """Copy the encoders of ours that `config` names (its own, or each operator's of a joint folder) into the folder
    being written, naming them relative to it (pops.encoders.bundle_encoder)."""
    for entry in [config, *config.get("operators", {}).values()]:
        if entry.get("encoders"):
            entry["encoders"] = {m: bundle_encoder(c, folder) for m, c in entry["encoders"].items()}


def located_encoders(configs: dict | None, folder: str | Path) -> dict:
    """Saved encoder configs with the paths of bundled encoders resolved against their folder."""
    return {m: located_encoder(c, folder) if isinstance(c, dict) else c for m, c in (configs or {}).items()}


def read_operator_config(folder: Path) -> tuple[dict, PopsPrior]:
    """(config dict, the model's skeleton on the meta device) of an operator folder; a damaged or foreign config is
    one ValueError naming it."""
    folder = Path(folder)
    config_path, weights_path = folder / OPERATOR_CONFIG_NAME, folder / OPERATOR_WEIGHTS_NAME
    if not folder.is_dir():
        raise (NotADirectoryError if folder.exists() else FileNotFoundError)(f"no such operator folder: {folder}")
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: not a pops operator folder (missing {path.name})")
    config = read_json(config_path, "operator config")
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: not an operator config (a JSON object)")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{config_path}: unsupported format_version {config.get('format_version')!r}")
    # An ordinary folder names one `kind`; a joint one its `operators` (pops.operators.joint). `operator_table` names
    # the prior's operator rows: a joint folder's, or those of one operator saved from a joint prior.
    joint = is_joint_config(config)
    needed = ("operators", dict) if joint else ("kind", str)
    for key, kind in (needed, ("prior_config", dict), ("clip_mean", list), ("clip_std", list)):
        if not isinstance(config.get(key), kind):
            raise ValueError(f"{config_path}: {key!r} is missing or not a {kind.__name__}")
    table = config.get("operator_table") or []
    if not isinstance(table, list) or not all(isinstance(name, str) for name in table):
        raise ValueError(f"{config_path}: 'operator_table' must be a list of operator names")
    if joint and (not table or list(config["operators"]) != table):
        raise ValueError(f"{config_path}: 'operators' must name the operators of 'operator_table', in its order")
    if joint and not all(isinstance(v, dict) for v in config["operators"].values()):
        raise ValueError(f"{config_path}: each entry of 'operators' must be an object (that operator's settings)")
    if not joint and table and config["kind"] not in table:
        raise ValueError(f"{config_path}: the prior has no operator row for its kind {config['kind']!r}")
    try:
        with torch.device("meta"):  # shapes only: a config alone never makes pops allocate a model
            skeleton = _build_prior(config)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{config_path}: does not describe a prior ({reason(exc)})") from None
    if len(config["clip_mean"]) != skeleton.embedding_dim or len(config["clip_std"]) != skeleton.embedding_dim:
        raise ValueError(f"{config_path}: clip_mean and clip_std must hold {skeleton.embedding_dim} numbers each")
    return config, skeleton


def _build_prior(config: dict) -> PopsPrior:
    # A joint prior (or one operator saved from one) has a learned row per name of its operator table.
    operators = config.get("operator_table") or ()
    return PopsPrior(
        PriorTransformer(**config["prior_config"]), text_width=config.get("text_width"), operators=operators
    )


def _check_weight_shapes(weights_path: Path, skeleton: PopsPrior, shapes: dict[str, tuple[int, ...]]) -> None:
    own = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    for key, shape in shapes.items():
        if key in own and own[key] != tuple(shape):
            raise ValueError(f"{weights_path}: {key} has shape {tuple(shape)}, the config builds {own[key]}")
    missing = [k for k in own if k not in shapes and k.rsplit(".", 1)[-1] not in CLIP_STATS]
    unexpected = [k for k in shapes if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"{weights_path}: weights do not match the config (missing {missing[:4]}, unexpected {unexpected[:4]})"
        )


def check_operator_folder(folder: Path) -> dict:
    """What `load_operator_folder` refuses, found without reading a weight: the config, and the names and shapes in
    the weights file's header (a truncated file fails there). Returns the config. Cheap enough to run over every
    operator of a models folder before a server starts."""
    config, skeleton = read_operator_config(folder)
    weights_path = Path(folder) / OPERATOR_WEIGHTS_NAME
    _check_weight_shapes(weights_path, skeleton, read_safetensors_shapes(weights_path, "operator weights"))
    return config


def load_operator_folder(folder: Path) -> tuple[PopsPrior, dict]:
    """(model in float32, config dict) from a folder written by `save_operator_folder`; a damaged or foreign file is
    one ValueError naming it."""
    folder = Path(folder)
    config, skeleton = read_operator_config(folder)
    config_path, weights_path = folder / OPERATOR_CONFIG_NAME, folder / OPERATOR_WEIGHTS_NAME
    try:
        clip_mean, clip_std = torch.tensor(config["clip_mean"]), torch.tensor(config["clip_std"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{config_path}: does not describe a prior ({reason(exc)})") from None
    state, _ = read_safetensors(weights_path, "operator weights")
    _check_weight_shapes(weights_path, skeleton, {k: tuple(v.shape) for k, v in state.items()})
    # The weights file holds every tensor of this size: building the model allocates no more than that.
    model = _build_prior(config)
    model.load_state_dict(state, strict=False)
    try:
        model.set_clip_stats(clip_mean, clip_std)
    except ValueError as exc:
        raise ValueError(f"{config_path}: {reason(exc)}") from None
    return model, config


def operator_config(config: dict, kind: str | None, where: str | Path) -> dict:
    """The config of one operator from a folder's config: an ordinary folder's own (checked against `kind` when one
    is asked for), or, for a joint folder, the shared entries with `kind`'s settings on top (`kind` may be left out
    only when the folder holds one operator)."""
    if not is_joint_config(config):
        if kind is not None and kind != config.get("kind"):
            raise ValueError(f"{where} is a {config.get('kind')} operator, not {kind}")
        return config
    held = list(config["operators"])
    if kind is None:
        if len(held) != 1:
            raise ValueError(f"{where} holds one prior for the operators {', '.join(held)}: choose one (kind=...)")
        kind = held[0]
    if kind not in config["operators"]:
        raise ValueError(f"{where} holds the operators {', '.join(held)}, not {kind!r}")
    shared = {k: v for k, v in config.items() if k != "operators"}
    return {**shared, **config["operators"][kind], "kind": kind}
