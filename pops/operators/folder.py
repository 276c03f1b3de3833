"""Weights in and out: the Kandinsky 2.2 prior, released pOps `learned_prior.pth` files, and our own format.

Our format is a folder: `model.safetensors` (the prior and the text projection, without the clip statistics),
`pops_config.json` (format version, operator kind, the PriorTransformer config, the clip statistics, the sampling and
training scheduler configs, the text width, the encoders to rebuild) and a model card `README.md`.

A joint folder (pops.operators.joint: one prior for several operators) is the same, its weights holding the operator
rows too (`operator_table` names them), with `operators` — each operator's own settings (guidance scale, sampler, steps,
encoders) — instead of one `kind`. `operator_config` turns either into the config of one operator.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import PriorTransformer
from safetensors.torch import save_file

from pops.base import hub
from pops.base.files import atomic_write, atomic_write_json, atomic_write_text, write_folder
from pops.base.readers import load_torch, read_json, read_safetensors, read_safetensors_shapes, reason
from pops.base.reference import (
    KANDINSKY_PRIOR,
    OPERATOR_CONFIG_NAME,
    OPERATOR_WEIGHTS_NAME,
    RELEASED_KINDS,
    is_joint_config,
)
from pops.base.registry import REGISTRY, get_spec
from pops.core.prior import PopsPrior

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CLIP_STATS = ("clip_mean", "clip_std")


def is_local(ref: str | Path) -> bool:
    return Path(ref).exists()


# ----- the Kandinsky 2.2 prior -----------------------------------------------------------------------------------
def load_kandinsky_prior(
    repo_or_path: str | Path = KANDINSKY_PRIOR, *, subfolder: str = "prior", torch_dtype: torch.dtype | None = None
) -> PriorTransformer:
    """The Kandinsky 2.2 prior's PriorTransformer (clip statistics included) from the hub or a local folder."""
    if is_local(repo_or_path):
        folder = Path(repo_or_path)
        if (folder / subfolder / "config.json").is_file():
            folder = folder / subfolder
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{repo_or_path}: no PriorTransformer config.json (looked in ./ and ./{subfolder})")
        return PriorTransformer.from_pretrained(folder, torch_dtype=torch_dtype)
    resolved = hub.resolve_model(str(repo_or_path), what="Kandinsky 2.2 prior")  # fails at once when unreachable
    return PriorTransformer.from_pretrained(resolved, subfolder=subfolder, torch_dtype=torch_dtype)


# ----- released pOps checkpoints -------------------------------------------------------------------------------
def resolve_file(ref: str | Path) -> Path:
    """A local file, or `owner/repo:path/in/repo` downloaded from the hub (e.g. `pOpsPaper/operators:models/…`)."""
    if is_local(ref):
        return Path(ref)
    ref = str(ref)
    if ":" not in ref or ref.count("/") < 2:
        raise FileNotFoundError(f"no such file: {ref} (hub files are written owner/repo:path/in/repo)")
    repo, filename = hub.split_file_ref(ref)
    return Path(hub.resolve_file(repo, filename, what="pOps checkpoint"))


def load_state_dict_file(ref: str | Path) -> dict[str, torch.Tensor]:
    """A plain {name: tensor} state dict from a `.pth` (loaded with weights_only=True) or `.safetensors` file."""
    path = resolve_file(ref)
    if path.suffix == ".safetensors":
        return read_safetensors(path, "checkpoint")[0]
    state = load_torch(path, "state dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ValueError(f"{path}: not a plain state dict of tensors")
    return state


# Prefixes a wrapped model writes before every key: DDP / accelerate (`module.`), torch.compile (`_orig_mod.`).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with the prefixes of DDP and torch.compile wrappers removed (repeatedly: both may stack)."""
    out = {}
    for key, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        out[key] = value
    return out


def apply_pops_checkpoint(prior: PriorTransformer, state: dict[str, torch.Tensor]) -> None:
    """Load released pOps weights on top of a base prior; the clip statistics stay the base's.

    Keys written by a DDP or torch.compile wrapper (`module.`, `_orig_mod.`) are read as the plain keys. Anything
    else that does not match the base is refused with a ValueError naming the keys: a tensor of another shape, a
    missing key other than the clip statistics, or an unexpected key (loading would otherwise keep the base
    prior's weights silently).
    """
    state = {k: v for k, v in strip_wrapper_prefixes(state).items() if k not in CLIP_STATS}
    own = prior.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(
                f"checkpoint does not fit the base prior: {key} has shape {tuple(value.shape)} in the checkpoint, "
                f"{tuple(own[key].shape)} in the base"
            )
    damaged = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if damaged is not None:
        raise ValueError(f"checkpoint holds NaN or inf values (in {damaged}): a damaged file")
    missing = [k for k in own if k not in state and k not in CLIP_STATS]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = [f"{len(missing)} missing ({', '.join(missing[:4])})" if missing else ""]
        parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:4])})" if unexpected else "")
        raise ValueError(
            f"checkpoint does not match the base prior: {'; '.join(p for p in parts if p)} keys "
            "(a checkpoint of another operator layout or model?)"
        )
    prior.load_state_dict(state, strict=False)


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
        atomic_write(tmp / OPERATOR_WEIGHTS_NAME, lambda t: save_file(state, t, metadata={"format": "pt"}))
        atomic_write_text(tmp / "README.md", card)
        for name, value in (extra_json or {}).items():
            atomic_write_json(tmp / name, value)
        for name, tensors in (extra_tensors or {}).items():
            if tensors:  # nothing to keep (an operator without a vocabulary): no file
                atomic_write(tmp / name, lambda t, tensors=tensors: save_file(tensors, t, metadata={"format": "pt"}))
        atomic_write_json(tmp / OPERATOR_CONFIG_NAME, config)

    write_folder(Path(folder), write, commit=OPERATOR_CONFIG_NAME)


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


def kind_named_by(ref: str | Path) -> str | None:
    """The operator kind a checkpoint's path names (`…/models/union/learned_prior.pth` → "union"), if any."""
    parts = str(ref).replace(":", "/").replace("\\", "/").split("/")
    return next((p for p in reversed(parts[:-1]) if p in REGISTRY), None)


def check_kind(checkpoint: str | Path, kind: str | None) -> str:
    """The operator a checkpoint is imported as: `kind`, else the one its path names; a path naming another
    operator than `kind` is refused (the four released operators share one architecture: only the path tells)."""
    named = kind_named_by(checkpoint)
    if kind is None:
        if named is None:
            raise ValueError(f"cannot tell which operator {checkpoint} is; give its kind ({', '.join(RELEASED_KINDS)})")
        kind = named
    get_spec(kind)
    if named is not None and named != kind:
        raise ValueError(f"{checkpoint} is the released {named!r} operator, not {kind!r}")
    return kind
