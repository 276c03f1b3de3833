"""Training checkpoints that are never half-written: accelerate's `save_state` into a temporary folder, a marker file,
then one rename.

Layout: `<output_dir>/checkpoints/checkpoint_<step>/` holding accelerate's state (model, optimiser, RNG of every
process, registered objects: lr scheduler, train state, EMA) and `pops_checkpoint.json` (written last, before the
rename). A folder counts as a checkpoint only with that name *and* the marker, so a run killed while saving — which
leaves `.tmp-checkpoint_<step>` or, on a crashed file system, a folder without marker — is never resumed from.

accelerate's own `automatic_checkpoint_naming` writes straight into the final folder (and its rotation counts any
folder), so naming and rotation are done here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from pops.files import atomic_write_json

MARKER = "pops_checkpoint.json"
PREFIX = "checkpoint_"
TMP_PREFIX = ".tmp-"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")


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


def read_marker(folder: str | Path) -> dict:
    return json.loads((Path(folder) / MARKER).read_text())


def remove_stale_temporaries(output_dir: str | Path) -> None:
    """Delete leftovers of interrupted saves (main process only)."""
    root = checkpoint_root(output_dir)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(TMP_PREFIX) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(accelerator, output_dir: str | Path, step: int, info: dict, total_limit: int) -> Path:
    """Save accelerate's full state for `step` atomically; keep the newest `total_limit` checkpoints.

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
    if accelerator.is_main_process:
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
