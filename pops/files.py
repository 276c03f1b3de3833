"""Files, written safely: one helper per job, used everywhere a file or folder is written or fingerprinted.

* `atomic_write(path, write)`: readers never see a half-written file (write to a temporary beside it, fsync, rename).
* `atomic_folder(out)`: build a folder as a hidden sibling and rename it into place: whole or absent.
* `check_writable(folder, what)`: fail before any work when an output folder cannot be written.
* `digest(*parts)`, `file_digest(path)`, `tensor_digest(tensors)`: sha256 fingerprints (hex).

This module imports only the standard library (and torch lazily, for tensors), so every room may use it.
"""

from __future__ import annotations

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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    """A temporary `atomic_write` left behind when its process was killed."""
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
