"""Training checkpoints that are never half-written: accelerate's `save_state` into a temporary folder, a marker file,
then one rename.

Layout: `<output_dir>/checkpoints/checkpoint_<step>/` holding accelerate's state (model weights as safetensors, the
optimiser and every process's RNG as `torch.save` files of plain tensors and numbers), ours (`train_state.json`: the
train state and the lr scheduler; `ema.safetensors`) and `pops_checkpoint.json` (written last, before the rename).
A folder counts as a checkpoint only with that name *and* the marker, so a run killed while saving — which leaves
`.tmp-checkpoint_<step>` or, on a crashed file system, a folder without marker — is never resumed from.

accelerate's own `automatic_checkpoint_naming` writes straight into the final folder (and its rotation counts any
folder), so naming and rotation are done here.

A checkpoint folder is input from disk, so resuming must never run code from it: nothing of ours is a pickle (the
objects accelerate would pickle through `register_for_checkpointing` are written here as JSON / safetensors), what
accelerate writes is read back with `weights_only=True` (its loader's default for RNG and scaler, asked for the
optimiser), and a folder holding any file outside ALLOWED — a `custom_checkpoint_0.pkl` that accelerate would
unpickle freely, a sub-folder of a sharded FSDP or DeepSpeed save (their loaders unpickle metadata) — is refused
before anything is read. So resume takes the checkpoints of one process or DDP only (accelerate's plain layout).
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

from accelerate.utils import load
from safetensors.torch import load_model, save_model

from pops.base.errors import reason
from pops.base.files import atomic_write_json
from pops.base.readers import read_json

MARKER = "pops_checkpoint.json"
TRAIN_STATE = "train_state.json"
EMA_WEIGHTS = "ema.safetensors"
PREFIX = "checkpoint_"
TMP_PREFIX = ".tmp-"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")
# Every file a checkpoint may hold: ours, then accelerate's (model weights, optimiser, RNG of each process, the
# fp16 gradient scaler).
ALLOWED = re.compile(
    rf"^(?:{re.escape(MARKER)}|{re.escape(TRAIN_STATE)}|{re.escape(EMA_WEIGHTS)}"
    r"|model(?:_\d+)?\.safetensors|optimizer(?:_\d+)?\.bin|random_states_\d+\.pkl|scaler\.pt)$"
)


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def is_complete(folder: str | Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and _NAME.match(folder.name) is not None and (folder / MARKER).is_file()


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints under output_dir, oldest (lowest step) first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if is_complete(p)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """The checkpoint folder to resume from: None (fresh start), `auto` (the newest complete one, if any) or a path."""
    if resume is None:
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    folder = Path(resume)
    if not folder.is_dir():
        raise FileNotFoundError(f"resume: no such checkpoint folder: {folder}")
    if not is_complete(folder):
        raise ValueError(f"resume: {folder} is not a complete checkpoint (no {MARKER}; a save was interrupted?)")
    return folder


def check_allowed(folder: str | Path) -> None:
    """Refuse a checkpoint folder holding anything our save does not write (one-line ValueError naming it)."""
    folder = Path(folder)
    for entry in sorted(folder.iterdir()):
        if not (entry.is_file() and not entry.is_symlink() and ALLOWED.match(entry.name)):
            raise ValueError(f"resume: {folder} holds {entry.name!r}, which a pops checkpoint never holds; refused")


def load_checkpoint(accelerator, folder: str | Path, schedule, ema=None) -> dict:
    """Restore accelerate's state (model, optimiser, RNG), the lr scheduler and the EMA from `folder`; returns the
    train state (`TrainState.state_dict()`) saved with them. Nothing in the folder is unpickled beyond tensors."""
    folder = Path(folder)
    check_allowed(folder)
    try:
        # accelerate swallows any error reading the RNG file (and would then resume with fresh randomness): read it
        # first, the way it does, so a file that is not plain tensors and numbers stops the resume instead.
        load(folder / f"random_states_{accelerator.process_index}.pkl")
        accelerator.load_state(str(folder), load_kwargs={"weights_only": True})
    except pickle.UnpicklingError:
        raise ValueError(f"resume: {folder} holds a file that is not plain tensors and numbers; refused") from None
    except (RuntimeError, KeyError, ValueError, OSError, EOFError) as exc:  # another model size, a damaged file
        raise ValueError(f"resume: cannot load {folder} into this run's model ({reason(exc)})") from None
    saved = read_json(folder / TRAIN_STATE, "train state")
    try:
        schedule.load_state_dict(saved["lr_scheduler"])
        if ema is not None:
            load_model(ema, folder / EMA_WEIGHTS, device=str(next(ema.parameters()).device))
        return saved["train_state"]
    except Exception as exc:  # safetensors' own errors, a missing key, a shape of another model
        raise ValueError(f"resume: cannot load {folder} into this run ({reason(exc)})") from None


def read_marker(folder: str | Path) -> dict:
    return read_json(Path(folder) / MARKER, "checkpoint marker")


def remove_stale_temporaries(output_dir: str | Path) -> None:
    """Delete leftovers of interrupted saves (main process only)."""
    root = checkpoint_root(output_dir)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(TMP_PREFIX) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(
    accelerator,
    output_dir: str | Path,
    step: int,
    info: dict,
    total_limit: int,
    *,
    train_state: dict,
    schedule,
    ema=None,
) -> Path:
    """Save accelerate's full state, `train_state`, the lr scheduler and the EMA for `step` atomically; keep the
    newest `total_limit` checkpoints.

    Every process must call this (each writes its own RNG state); the main process renames and rotates.
    """
    root = checkpoint_root(output_dir)
    final = root / f"{PREFIX}{step}"
    if is_complete(final):
        return final
    tmp = root / f"{TMP_PREFIX}{PREFIX}{step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if final.exists():  # an incomplete folder of the same name (marker missing): it is garbage
            shutil.rmtree(final)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:  # the scheduler, train state and EMA are the same on every process
        atomic_write_json(tmp / TRAIN_STATE, {"train_state": train_state, "lr_scheduler": schedule.state_dict()})
        if ema is not None:
            save_model(ema, str(tmp / EMA_WEIGHTS))
        atomic_write_json(tmp / MARKER, dict(info, step=step))
        _fsync_dir(tmp)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in complete_checkpoints(output_dir)[:-total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _fsync_dir(folder: Path) -> None:
    # Make the rename durable (a crash right after must not lose the folder entry); not possible on every OS.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
