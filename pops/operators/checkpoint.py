"""A released pOps checkpoint on its base: the Kandinsky 2.2 prior, and a `learned_prior.pth` loaded on top of it.

The paper's operators are released as `learned_prior.pth` files (DESIGN §2): the bare `PriorTransformer.state_dict()`
without `clip_mean` / `clip_std`, which the Kandinsky 2.2 prior supplies. A checkpoint written by a DDP or
`torch.compile` run carries `module.` / `_orig_mod.` prefixes, read here as the plain keys. `Operator.from_pretrained(
base, checkpoint=...)` is the one caller; pops.models.released imports such an operator into our folder format.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import PriorTransformer

from pops.base import hub
from pops.base.readers import load_torch, read_safetensors
from pops.base.reference import KANDINSKY_PRIOR, RELEASED_KINDS
from pops.base.registry import REGISTRY, get_spec

# The prior's embedding statistics: the base's, never a checkpoint's.
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


def load_state_dict_file(ref: str | Path) -> dict[str, torch.Tensor]:
    """A plain {name: tensor} state dict from a `.pth` (loaded with weights_only=True) or `.safetensors` file."""
    path = hub.resolve_file_ref(ref, what="pOps checkpoint")
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
