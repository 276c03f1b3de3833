"""Where things lie in a models folder on disk: its operator folders (a kind's own, or a joint folder holding it), its
renderer folders, and the checks that read every config before a server starts (see pops.models.model_set for the
layout and how a name resolves)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pops.base.errors import reason
from pops.base.files import digest
from pops.base.readers import read_json
from pops.base.reference import OPERATOR_CONFIG_NAME, is_joint_config
from pops.base.registry import REGISTRY
from pops.operators.folder import OperatorConfig, check_operator_folder, operator_config
from pops.operators.subspace import SubspaceOperators, is_subspace_config
from pops.renderers import renderer_type


def folder_fingerprint(folder: Path) -> str:
    """Cheap identity of a saved model folder: names, sizes and modification times of its files."""
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = path.stat()
        files.append((str(path.relative_to(folder)), st.st_size, st.st_mtime_ns))
    return digest(str(folder.resolve()), files, length=16)


def folder_roots(models_dir: Path) -> list[Path]:
    """The folder itself, and the models folder it sits in: the parent of an `operators/` folder, the grandparent of
    a joint folder inside one."""
    models_dir = Path(models_dir)
    if models_dir.name == "operators":
        return [models_dir, models_dir.parent]
    if models_dir.parent.name == "operators" and joint_kinds(models_dir):
        return [models_dir, models_dir.parent.parent]
    return [models_dir]


def is_subspace_folder(folder: Path) -> bool:
    """Whether a folder holds training-free subspace operators (pops.operators.subspace), not a trained prior."""
    try:
        return is_subspace_config(read_json(Path(folder) / OPERATOR_CONFIG_NAME, "operator config"))
    except (OSError, ValueError):
        return False


def joint_kinds(folder: Path) -> tuple[str, ...]:
    """The operators a joint folder holds (empty for an ordinary operator folder or anything else)."""
    path = Path(folder) / OPERATOR_CONFIG_NAME
    try:
        return _joint_kinds(str(path.resolve()), path.stat().st_mtime_ns)
    except OSError:
        return ()


@lru_cache(maxsize=64)
def _joint_kinds(path: str, mtime_ns: int) -> tuple[str, ...]:
    # Keyed by modification time: a folder written again is read again.
    try:
        config = read_json(path, "operator config")
    except (OSError, ValueError):
        return ()  # unreadable: offers nothing (`unreadable_configs` says why when a kind is then missing)
    if not isinstance(config, dict) or not is_joint_config(config):
        return ()
    return tuple(k for k in config["operators"] if k in REGISTRY)


def unreadable_configs(models_dir: Path) -> list[str]:
    """'path: reason' for each operator config a models folder holds (itself, operators/*, */) that cannot be read:
    a damaged joint folder offers no operator, so a missing kind's message names these."""
    models_dir = Path(models_dir)
    found = []
    for folder in (models_dir, *(p for d in (models_dir / "operators", models_dir) if d.is_dir() for p in d.iterdir())):
        path = folder / OPERATOR_CONFIG_NAME
        if path.is_file():
            try:
                config = read_json(path, "operator config")
            except (OSError, ValueError) as exc:
                found.append(reason(exc))
                continue
            if not isinstance(config, dict):
                found.append(f"{path}: not an operator config (a JSON object)")
    return sorted(dict.fromkeys(found))


def joint_dirs(models_dir: Path) -> list[Path]:
    """The joint folders a models folder offers: itself when it is one, else those under operators/ (or directly
    inside it), by name."""
    models_dir = Path(models_dir)
    if joint_kinds(models_dir):
        return [models_dir]
    found = []
    for parent in (models_dir / "operators", models_dir):
        if parent.is_dir():
            found += [p for p in sorted(parent.iterdir()) if p.is_dir() and joint_kinds(p)]
    return found


def find_operator_dir(models_dir: Path, kind: str) -> Path | None:
    """The folder `kind` loads from: its own (operators/<kind>/ or <kind>/), else the first joint folder holding it
    (see the module docstring)."""
    models_dir = Path(models_dir)
    if not joint_kinds(models_dir):
        for candidate in (models_dir / "operators" / kind, models_dir / kind):
            if (candidate / OPERATOR_CONFIG_NAME).is_file():
                return candidate
    return next((folder for folder in joint_dirs(models_dir) if kind in joint_kinds(folder)), None)


def check_models_folder(models_dir: Path) -> list[str]:
    """The operators a models folder offers, each checked as loading it would check it but without reading a weight
    (pops.operators.folder.check_operator_folder: config, kind, guidance scale, the weights' header): a damaged operator
    is one ValueError naming its file now, not an error on every request later. An operator folder given where a
    models folder goes is refused too (a joint or subspace folder is a models folder of its operators)."""
    models_dir = Path(models_dir)
    if (models_dir / OPERATOR_CONFIG_NAME).is_file():
        if is_subspace_folder(models_dir):  # (like a joint folder, a models folder of its operators)
            return _checked_operators(models_dir)
        if not is_joint_config(check_operator_folder(models_dir)):
            raise ValueError(
                f"{models_dir} is an operator folder; a models folder holds operators/<kind>/ (give its parent, or "
                "`pops apply --model` for one operator)"
            )
        return _checked_operators(models_dir)
    found = []
    candidates = [p.parent for p in models_dir.glob(f"*/{OPERATOR_CONFIG_NAME}")]
    candidates += [p.parent for p in models_dir.glob(f"operators/*/{OPERATOR_CONFIG_NAME}")]
    # (hidden folders are the temporaries of a write still running, or of a killed one: not offered)
    candidates += [p for p in models_dir.glob("operators/*") if p.is_dir() and not p.name.startswith(".")]
    candidates = [p for p in candidates if not p.name.startswith(".") and any(p.iterdir())]
    for folder in dict.fromkeys(candidates):
        found += _checked_operators(folder)
    return list(dict.fromkeys(found))


def _checked_operators(folder: Path) -> list[str]:
    """The kinds an operator folder (or a joint folder, or a subspace folder) provides, its config and weights' header
    checked (a subspace folder's bases read: they are small)."""
    if is_subspace_folder(folder):
        return list(SubspaceOperators.from_pretrained(folder).operators)
    config = check_operator_folder(folder)
    kinds = list(config["operators"]) if is_joint_config(config) else [config["kind"]]
    for kind in kinds:
        OperatorConfig.from_dict(operator_config(config, kind, folder), where=folder)  # every setting, as loading would
    return kinds


def find_renderers(models_dir: Path) -> dict[str, Path]:
    """Renderer folders present under a models folder, by type name."""
    found: dict[str, Path] = {}
    for root in folder_roots(Path(models_dir)):
        parent = root / "renderers"
        if parent.is_dir():
            for folder in sorted(p for p in parent.iterdir() if p.is_dir()):
                type_name = renderer_type(folder)
                if type_name:
                    found.setdefault(type_name, folder)
    return found
