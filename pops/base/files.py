"""Files, written safely: one helper per job, used everywhere a file or folder is written or fingerprinted.

* `atomic_write(path, write)`: readers never see a half-written file (write to a temporary beside it, fsync, rename).
* `atomic_folder(out)`: build a folder as a hidden sibling and rename it into place: whole or absent.
* `check_writable(folder, what)`: fail before any work when an output folder cannot be written.
* `check_output(path, overwrite=...)`: the one overwrite rule of every command (below), checked before any work.
* `write_folder(folder, write)`: a folder that appears (or changes) only once it is complete.
* `digest(*parts)`, `file_digest(path)`, `tensor_digest(tensors)`: sha256 fingerprints (hex).

This module imports only the standard library (and torch lazily, for tensors), so every room may use it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".tmp-"


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Call `write(tmp_path)`, flush it to disk, then move it onto `path` (parents created). On any error the
    temporary is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        full = _disk_error(exc)
        if full is not None:  # say which file could not be written (the earlier file, if any, is intact)
            raise OSError(full, f"cannot write {path}: {os.strerror(full)}") from None
        raise
    return path


def _disk_error(exc: BaseException) -> int | None:
    """The errno of a full, read-only or failing disk behind `exc` (also when a library wraps it in its own error
    type, as safetensors does), else None."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
        return exc.errno
    text = str(exc)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        if os.strerror(code) in text or f"os error {code})" in text:
            return code
    return None


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, **dumps) -> Path:
    dumps = {"indent": 2, **dumps}
    return atomic_write_text(path, json.dumps(obj, **dumps) + "\n")


@contextmanager
def atomic_folder(out: str | Path) -> Iterator[Path]:
    """`with atomic_folder(out) as tmp:` write into `tmp`; on success it is renamed to `out`, on any error removed.

    `out` must not exist or be an empty folder (FileExistsError otherwise, before anything is written).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty folder; choose another or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: the folder gets the user's usual permissions (mkdtemp's are owner-only).
    tmp = out.parent / f"{TEMP_PREFIX}{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part"
    tmp.mkdir()
    try:
        yield tmp
        if out.is_dir():
            out.rmdir()  # empty (checked above); a rename cannot replace a folder on every system
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_temporary(path: Path) -> bool:
    """A temporary `atomic_write` (or `write_folder`) left behind when its process was killed."""
    return path.name.startswith(TEMP_PREFIX) and path.name.endswith(".part")


def check_writable(folder: str | Path, what: str = "output folder") -> Path:
    """Create `folder` and prove a file can be written there; PermissionError with a one-line message otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise PermissionError(f"{what} {folder} is not writable: {exc.strerror or exc}") from None
    return folder


# The overwrite rule: an output that exists (a file, or a folder holding anything) is replaced only when the caller
# says so (`--overwrite`); without it the command refuses before any work. Caches (`pops embed -o`, OUT/.cache) are
# added to, and `pops generate -o` resumes its own folder: neither replaces anything.
OVERWRITE_HINT = "pass --overwrite to replace it"


def check_output(path: str | Path, *, overwrite: bool, folder: bool = False, what: str = "output") -> Path:
    """Refuse an existing output unless `overwrite` (FileExistsError), an output of the wrong kind (a folder where a
    file goes, or the reverse), and one whose nearest existing parent is not a writable folder (PermissionError) —
    without creating anything."""
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise NotADirectoryError(f"{what} {path} is a file, not a folder")
        if not folder and path.is_dir():
            raise IsADirectoryError(f"{what} {path} is a folder; give a file name")
        if not overwrite and (not folder or any(p.name != ".cache" for p in path.iterdir())):
            raise FileExistsError(f"{what} {path} already exists; {OVERWRITE_HINT}")
    parent = path if folder and path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise PermissionError(f"{what} {path} is not writable: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path} is not writable: {parent} does not allow writing")
    return path


def write_folder(
    folder: str | Path, write: Callable[[Path], Any], commit: str | None = None, *, keep_others: bool = True
) -> Path:
    """Fill a folder so that readers only ever see it complete: `write(tmp)` fills a hidden sibling, which then
    becomes `folder`. An existing folder keeps its other files (an operator saved into a training run's output_dir
    keeps checkpoints/ and logs/): the new files replace the old ones one by one, `commit` (the file whose presence
    marks the folder complete, e.g. an operator's config) removed first and moved in last. On an error while writing
    (a full disk) the temporary is removed and `folder` is left as it was. `keep_others=False` replaces the whole
    folder instead (the old one is moved aside, the new one moved in, the old one removed)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_folders(folder)
    # mkdir, not mkdtemp: the folder gets the user's usual permissions (mkdtemp's are owner-only).
    tmp = folder.parent / f"{TEMP_PREFIX}{folder.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part"
    tmp.mkdir()
    try:
        write(tmp)
        if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
            if folder.exists():
                folder.rmdir()  # rename cannot replace a folder on every system
            os.replace(tmp, folder)
            return folder
        if not keep_others:
            old = tmp.with_name(tmp.name.replace(".part", ".old"))
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
            return folder
        names = sorted(p.name for p in tmp.iterdir())
        if commit in names:
            (folder / commit).unlink(missing_ok=True)
            names = [n for n in names if n != commit] + [commit]
        for name in names:
            target = folder / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(tmp / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _remove_stale_folders(folder: Path) -> None:
    """Remove the temporaries of `write_folder(folder)` calls whose process is gone (killed while writing)."""
    for stale in folder.parent.glob(f"{TEMP_PREFIX}{folder.name}.*-*"):
        pid = stale.name[len(TEMP_PREFIX) + len(folder.name) + 1 :].split("-")[0]
        if stale.suffix in (".part", ".old") and pid.isdigit() and not _alive(int(pid)) and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def digest(*parts: Any, length: int = 64) -> str:
    """sha256 of JSON-able parts (keys sorted; anything else by repr, so 0.1 and 0.1000001 differ), hex."""
    text = json.dumps(parts, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, hex (memoised per process on path, size and mtime)."""
    path = Path(path)
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _FILE_DIGESTS[key] = h.hexdigest()
    return _FILE_DIGESTS[key]


def tensor_digest(tensors: Iterable[Any], length: int = 64) -> str:
    """sha256 over the bytes of tensors (in order), hex."""
    h = hashlib.sha256()
    for tensor in tensors:
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:length]
