"""Where real models come from: a local folder, or a model hub id that is resolved without ever hanging.

Every real-model `from_pretrained` in pops goes through `resolve_model` / `resolve_file` first, so that an
offline machine (`HF_HUB_OFFLINE=1`) or an unreachable hub gives, at once, a one-line error that names the
model and says how to supply a local folder — instead of a half-minute of retries inside diffusers/transformers.

Resolution rules:
* an existing local path is used as is;
* a hub id (`owner/name`) is probed with a short timeout when the hub is online; if the probe answers, the id is
  returned and the libraries download what they need;
* offline or unreachable, a copy in the local hub cache is used (its snapshot folder, so the libraries never
  touch the network); with no cached copy, a `ValueError` says what to do.

huggingface_hub is imported where a hub id is resolved: commands import this module before they check their options.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# Seconds the hub gets to answer one probe: long enough for a slow link, short enough to never feel like a hang.
PROBE_TIMEOUT_S = 5.0

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TRUE = {"1", "true", "yes", "on"}


def is_offline() -> bool:
    """True when hub access is switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now, not at import)."""
    from huggingface_hub import constants  # huggingface_hub is imported on use: this module is read at CLI start

    env = any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return env or bool(constants.HF_HUB_OFFLINE)


def looks_like_hub_id(ref: str) -> bool:
    """`owner/name` with hub-legal characters, and not a path that exists here."""
    return bool(_HUB_ID.match(ref)) and not Path(ref).exists()


def _how_to_supply(repo_id: str, filename: str | None = None) -> str:
    what = f"{repo_id} {filename}" if filename else repo_id
    return f"download it where the hub is reachable (`hf download {what} --local-dir DIR`) and pass DIR instead"


def _probe(repo_id: str) -> str | None:
    """None when the hub knows `repo_id`; otherwise why not: 'missing', 'gated' or 'unreachable'."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo_id, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:
        return "gated"
    except RepositoryNotFoundError:
        return "missing"
    except Exception:  # DNS failure, refused connection, timeout, proxy error, 5xx …
        return "unreachable"
    return None


def _cached_snapshot(repo_id: str) -> str | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, FileNotFoundError, ValueError):
        return None


def _unavailable(repo_id: str, reason: str, what: str, filename: str | None = None) -> ValueError:
    why = {
        "offline": "the hub is switched off (HF_HUB_OFFLINE=1) and it is not in the local cache",
        "unreachable": "the hub cannot be reached and it is not in the local cache",
        "missing": "no such model on the hub (or it is private: log in with `hf auth login`)",
        "gated": "the model is gated: accept its licence on the hub and log in with `hf auth login`",
    }[reason]
    return ValueError(f"cannot load {what} {repo_id!r}: {why}; {_how_to_supply(repo_id, filename)}")


def resolve_model(ref: str | os.PathLike, *, what: str = "model") -> str:
    """A local folder or a hub id that `from_pretrained` can load without waiting on the network.

    Raises FileNotFoundError for a local path that does not exist, ValueError (one line, naming `ref` and how to
    supply a local folder) for a hub id that cannot be had.
    """
    ref = os.fspath(ref)
    path = Path(ref).expanduser()
    if path.exists():
        return str(path)
    if not looks_like_hub_id(ref):
        raise FileNotFoundError(f"{what}: no such folder {ref!r} (and it is not a hub id of the form owner/name)")
    if is_offline():
        reason = "offline"
    else:
        reason = _probe(ref)
        if reason is None:
            return ref
    # Offline or unreachable: a cached copy still works, loaded by path so nothing retries the network.
    if reason in ("offline", "unreachable"):
        snapshot = _cached_snapshot(ref)
        if snapshot is not None:
            return snapshot
    raise _unavailable(ref, reason, what)


def resolve_file(ref: str | os.PathLike, filename: str, *, what: str = "weights") -> str:
    """The local path of `filename` inside a local folder or a hub repo (downloaded once, then cached)."""
    ref = os.fspath(ref)
    path = Path(ref).expanduser()
    if path.is_file() and not filename:
        return str(path)
    if path.exists():
        target = path / filename
        if not target.is_file():
            raise FileNotFoundError(f"{what}: no file {filename!r} in {ref!r}")
        return str(target)
    if not looks_like_hub_id(ref):
        raise FileNotFoundError(f"{what}: no such folder {ref!r} (and it is not a hub id of the form owner/name)")

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    offline = is_offline()
    reason = "offline" if offline else _probe(ref)
    if reason is None:
        try:
            return hf_hub_download(ref, filename, etag_timeout=PROBE_TIMEOUT_S)
        except EntryNotFoundError:
            raise FileNotFoundError(f"{what}: no file {filename!r} in hub repo {ref!r}") from None
    if reason in ("offline", "unreachable"):
        try:
            return hf_hub_download(ref, filename, local_files_only=True)
        except Exception:  # LocalEntryNotFoundError / OfflineModeIsEnabled: not cached
            pass
    raise _unavailable(ref, reason, what, filename)


def split_file_ref(spec: str) -> tuple[str, str]:
    """`owner/name:path/in/repo.pth` → (`owner/name`, `path/in/repo.pth`); a plain path → (path, "")."""
    if ":" in spec and not Path(spec).exists():
        repo, _, filename = spec.partition(":")
        if looks_like_hub_id(repo) and filename:
            return repo, filename
    return spec, ""


def resolve_file_ref(ref: str | os.PathLike, *, what: str = "weights") -> Path:
    """A local file, or `owner/repo:path/in/repo` downloaded from the hub (e.g. `pOpsPaper/operators:models/…`)."""
    if Path(ref).exists():
        return Path(ref)
    ref = str(ref)
    if ":" not in ref or ref.count("/") < 2:
        raise FileNotFoundError(f"no such file: {ref} (hub files are written owner/repo:path/in/repo)")
    repo, filename = split_file_ref(ref)
    return Path(resolve_file(repo, filename, what=what))
