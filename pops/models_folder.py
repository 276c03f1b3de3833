"""A models folder: the operators, renderers and assets that equations, `pops serve`, `pops eval` and `pops apply`
run on, read lazily. Every part is optional:

    MODELS/
      operators/<kind>/          an `Operator.save_pretrained` folder per operator (also accepted: MODELS/<kind>/)
      operators/<name>/          a joint folder (`JointOperator.save_pretrained`, e.g. operators/joint/): one prior
                                 providing each operator it holds
      renderer/                  a saved renderer: its renderer.json {"type": ...} says which (see pops.renderers)
      renderer/<type>/           or several, one per type; also renderers/<type>/
      assets/                    images that equations may name without a suffix: `wood` means assets/wood.png

`MODELS` may also be the `operators/` folder itself (the renderers and assets are then looked for one level up), or
a joint folder itself (then its operators are the only ones; renderers and assets come from the models folder
above when it sits in one's `operators/`).

How a name resolves: a kind's own folder (`operators/<kind>/`, `<kind>/`) wins over a joint folder that also holds
the kind — naming a folder after the kind is the explicit choice, and the joint model fills in the kinds that have
none (several joint folders: the first by name). To run every operator from the joint model, point at its folder
(`--models MODELS/operators/joint`). Operators load once (a joint folder's weights once for all its operators) and
share one image/text encoder per distinct encoder config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from pops.encoders import load_encoder
from pops.files import digest
from pops.reference import OPERATOR_CONFIG_NAME, is_joint_config
from pops.registry import REGISTRY
from pops.renderers import RENDERER_TYPES, load_renderer, renderer_type

ASSET_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".safetensors", ".pt")
# `auto` prefers the decoder (it draws new pictures) over retrieval (it shows the nearest gallery picture).
AUTO_ORDER = ("decoder", "retrieval")
RENDERER_CHOICES = ("auto", *RENDERER_TYPES, "none")


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
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return ()
    return tuple(k for k in config["operators"] if k in REGISTRY) if is_joint_config(config) else ()


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


def find_renderers(models_dir: Path) -> dict[str, Path]:
    """Renderer folders present under a models folder, by type name."""
    found: dict[str, Path] = {}
    for root in folder_roots(Path(models_dir)):
        for parent in (root / "renderer", root / "renderers"):
            if not parent.is_dir():
                continue
            for folder in (parent, *sorted(p for p in parent.iterdir() if p.is_dir())):
                type_name = renderer_type(folder)
                if type_name:
                    found.setdefault(type_name, folder)
    return found


def check_renderer_choice(name: str) -> None:
    if name not in RENDERER_CHOICES:
        raise ValueError(f"unknown renderer {name!r}; choose one of {', '.join(RENDERER_CHOICES)}")


class ModelSet:
    """Operators (by registry kind), image encoder and renderer for equations.

    Build it from a models folder (`ModelSet("outputs/demo")`), or from operators in memory
    (`ModelSet(operators={"texturing": op})`, e.g. `Operator.from_prior(...)`, or a `JointOperator`'s), or both
    (in-memory ones win). `load_encoders=False`: the folder's operators take embeddings only (no encoder is built).
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        operators: dict[str, Any] | None = None,
        image_encoder: Any = None,
        renderer: Any = None,
        load_encoders: bool = True,
    ):
        self.root = Path(root).expanduser() if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise FileNotFoundError(f"models folder not found: {self.root}")
        self._operators: dict[str, Any] = dict(operators or {})
        for kind in self._operators:
            if kind not in REGISTRY:
                raise ValueError(f"unknown operator kind {kind!r}; known: {', '.join(REGISTRY)}")
        self._memory = set(self._operators)  # kinds given in memory (no folder to fingerprint)
        self._image_encoder = image_encoder
        self._renderers: dict[str, Any] = {} if renderer is None else {"given": renderer}
        self._encoders: dict[str, Any] = {}
        self._joints: dict[Path, Any] = {}  # joint folder -> its JointOperator (loaded once for all its kinds)
        self._load_encoders = load_encoders

    @classmethod
    def coerce(cls, models: Any) -> ModelSet:
        """A ModelSet from what a user passes as `models=`: a folder, a ModelSet, an Operator, a list or a dict of "
        "them."""
        if isinstance(models, ModelSet):
            return models
        if isinstance(models, (str, os.PathLike)):
            return cls(models)
        if isinstance(models, dict):
            return cls(operators=models)
        if hasattr(models, "spec") and hasattr(models, "sample"):
            return cls(operators={models.spec.name: models})
        if hasattr(models, "kinds") and isinstance(getattr(models, "operators", None), dict):  # a JointOperator
            return cls(operators=dict(models.operators))
        if isinstance(models, Iterable):
            ops = list(models)
            if all(hasattr(op, "spec") for op in ops):
                return cls(operators={op.spec.name: op for op in ops})
        raise ValueError(f"models: expected a models folder, operators or a ModelSet, got {type(models).__name__}")

    # ----- operators -------------------------------------------------------------------------------------------
    def where(self, kind: str) -> str:
        """Where an operator comes from (for messages and records)."""
        if kind in self._memory:
            return "memory"
        path = find_operator_dir(self.root, kind) if self.root else None
        return str(path) if path else ""

    def available(self) -> list[str]:
        kinds = set(self._operators)
        if self.root is not None:
            kinds |= {k for k in REGISTRY if find_operator_dir(self.root, k)}
        return [k for k in REGISTRY if k in kinds]

    def missing_message(self, kind: str) -> str:
        if self.root is None:
            return f"no {kind!r} operator was given"
        if joint_kinds(self.root):
            return f"the joint folder {self.root} holds {', '.join(joint_kinds(self.root))}, not {kind!r}"
        return (
            f"no trained {kind!r} operator under {self.root} (expected operators/{kind}/{OPERATOR_CONFIG_NAME} or a "
            "joint folder holding it)"
        )

    def operator(self, kind: str):
        if kind not in self._operators:
            folder = find_operator_dir(self.root, kind) if self.root else None
            if folder is None:
                raise FileNotFoundError(self.missing_message(kind))
            op = self._load(folder, kind)
            # One encoder instance per distinct config, shared by every operator that names it (operators that do
            # not allow setting their encoders build their own, lazily).
            configs = getattr(op, "encoder_configs", {}) or {}
            for modality in ("image", "text"):
                attribute = getattr(type(op), f"{modality}_encoder", None)
                settable = not isinstance(attribute, property) or attribute.fset is not None
                if configs.get(modality) and settable:
                    setattr(op, f"{modality}_encoder", self._shared_encoder(configs[modality]))
            self._operators[kind] = op
        return self._operators[kind]

    def _load(self, folder: Path, kind: str):
        # diffusers: only once an operator is actually loaded
        from pops.joint import JointOperator
        from pops.operator import Operator

        if not joint_kinds(folder):
            return Operator.from_pretrained(folder, load_encoders=self._load_encoders)
        if folder not in self._joints:
            self._joints[folder] = JointOperator.from_pretrained(folder, load_encoders=self._load_encoders)
        return self._joints[folder][kind]

    def _shared_encoder(self, config: dict):
        key = digest(config)
        if key not in self._encoders:
            self._encoders[key] = load_encoder(config)
        return self._encoders[key]

    def fingerprint(self, kind: str) -> str | None:
        """A stable identity of the operator's weights, or None for in-memory operators (not cached on disk)."""
        if kind in self._memory:
            return None
        folder = find_operator_dir(self.root, kind) if self.root else None
        return folder_fingerprint(folder) if folder else None

    # ----- encoder and renderer --------------------------------------------------------------------------------
    def image_encoder(self, prefer: Iterable[str] = ()) -> tuple[Any, str | None]:
        """(encoder, fingerprint or None): the explicit one, else the first operator's (preferring `prefer`)."""
        if self._image_encoder is not None:
            return self._image_encoder, None
        kinds = [k for k in prefer if k in self.available()] + self.available()
        for kind in dict.fromkeys(kinds):
            op = self.operator(kind)
            if op.image_encoder is not None:  # (a failure to build it propagates, not "no encoder")
                config = (getattr(op, "encoder_configs", {}) or {}).get("image")
                if kind in self._memory or not config:
                    return op.image_encoder, None
                return op.image_encoder, digest(config, length=16)
        return None, None

    def embedding_dim(self, prefer: Iterable[str] = ()) -> int | None:
        kinds = [k for k in prefer if k in self.available()] + self.available()
        return self.operator(kinds[0]).embedding_dim if kinds else None

    def renderer_names(self) -> list[str]:
        """Renderers present: 'given' (passed in), then saved ones by type."""
        names = [n for n in self._renderers if n == "given"]
        if self.root is not None:
            names += list(find_renderers(self.root))
        return names

    def renderer_name(self, name: str = "auto") -> str:
        """The renderer `name` stands for: `auto` is the first saved one in AUTO_ORDER (else any present, else none)."""
        if name != "auto":
            return name
        present = self.renderer_names()
        return next((n for n in AUTO_ORDER if n in present), present[0] if present else "none")

    def renderer(self, name: str = "auto"):
        """The renderer to draw with: None for `none`, or for `auto` when there is none. A named renderer that is
        not saved is a FileNotFoundError."""
        check_renderer_choice(name)
        if name == "auto" and "given" in self._renderers:
            return self._renderers["given"]
        if name not in self._renderers:
            self._renderers[name] = self._saved_renderer(name)
        return self._renderers[name]

    def _saved_renderer(self, name: str):
        if name == "none" or self.root is None:
            if name not in ("none", "auto"):
                raise FileNotFoundError(f"no models folder to load the {name!r} renderer from")
            return None
        found = find_renderers(self.root)
        if name == "auto":
            name = next((n for n in AUTO_ORDER if n in found), "")
            if not name:
                return None
        if name not in found:
            raise FileNotFoundError(
                f"no {name!r} renderer under {self.root} (looked in renderer/ and renderers/{name}/)"
                + (f"; present: {', '.join(found)}" if found else "")
            )
        return load_renderer(found[name])

    def asset_dirs(self) -> list[Path]:
        return [root / "assets" for root in folder_roots(self.root)] if self.root is not None else []
