"""A models folder: the operators, renderers and assets that equations, `pops serve`, `pops eval` and `pops apply`
run on, read lazily. Every part is optional:

    MODELS/
      operators/<kind>/          an `Operator.save_pretrained` folder per operator (also accepted: MODELS/<kind>/)
      operators/<name>/          a joint folder (`JointOperator.save_pretrained`, e.g. operators/joint/): one prior
                                 providing each operator it holds
      operators/subspace/        a training-free folder (`pops models subspace`, the demo's peer): one operator per kind
                                 it holds, like a joint folder
      renderers/<name>/          saved renderers, one folder each: its renderer.json {"type": ...} says which (see
                                 pops.renderers): retrieval or decoder (embedded world), kandinsky, ipadapter,
                                 ipadapter-depth (real)
      assets/                    images that equations may name without a suffix: `wood` means assets/wood.png

`MODELS` may also be the `operators/` folder itself (the renderers and assets are then looked for one level up), or
a joint folder itself (then its operators are the only ones; renderers and assets come from the models folder
above when it sits in one's `operators/`).
`MODELS` = `pOpsPaper/operators` (the hub repo, when no such local folder exists) is the paper's released
operators on the Kandinsky 2.2 prior, downloaded on first use, with the real renderers from their hub ids
(`ReleasedModels`).

How a name resolves: a kind's own folder (`operators/<kind>/`, `<kind>/`) wins over a joint folder that also holds
the kind — naming a folder after the kind is the explicit choice, and the joint model fills in the kinds that have
none (several joint folders: the first by name). To run every operator from the joint model, point at its folder
(`--models MODELS/operators/joint`). Operators load once (a joint folder's weights once for all its operators) and
share one image/text encoder per distinct encoder config. `device`/`dtype` place the operators, their CLIP encoders
and the real renderers (None: each part's own default, cuda when available).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pops.base import devices
from pops.base.errors import reason
from pops.base.files import digest
from pops.base.hub import resolve_file_ref
from pops.base.reference import (
    KANDINSKY_PRIOR,
    OPERATOR_CONFIG_NAME,
    RELEASED_KINDS,
    RELEASED_OPERATORS,
)
from pops.base.registry import REGISTRY
from pops.encoders import load_encoder
from pops.models.layout import (
    find_operator_dir,
    find_renderers,
    folder_fingerprint,
    folder_roots,
    is_subspace_folder,
    joint_kinds,
    unreadable_configs,
)
from pops.models.released import load_released, released_checkpoint
from pops.operators.joint import JointOperator
from pops.operators.operator import Operator
from pops.operators.subspace import SubspaceOperators
from pops.renderers import RENDERER_TYPES, build_renderer, load_renderer

ASSET_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".safetensors", ".pt")
# `auto` prefers renderers that draw new pictures: the real stack's (a folder that holds one is a real models
# folder), then the decoder, then retrieval (it shows the nearest gallery picture); the depth renderer needs input A
# to be a picture, so it comes last.
AUTO_ORDER = ("kandinsky", "ipadapter", "decoder", "retrieval", "ipadapter-depth")
RENDERER_CHOICES = ("auto", *RENDERER_TYPES, "none")


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
        device: str | None = None,
        dtype: str | None = None,
        cpu_offload: bool | None = None,
    ):
        self.device, self.dtype, self.cpu_offload = device, dtype, cpu_offload
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
    def coerce(cls, models: Any, **placement) -> ModelSet:
        """A ModelSet from what a user passes as `models=`: a folder, a ModelSet, an Operator, a list or a dict of
        them. `placement` (device, dtype, cpu_offload) applies to a folder named here."""
        if isinstance(models, ModelSet):
            return models
        if isinstance(models, (str, os.PathLike)):
            if str(models) == RELEASED_OPERATORS and not Path(models).is_dir():
                return ReleasedModels(**placement)
            return cls(models, **placement)
        if isinstance(models, dict):
            return cls(operators=models)
        if hasattr(models, "spec") and hasattr(models, "sample"):
            return cls(operators={models.spec.kind: models})
        if hasattr(models, "kinds") and isinstance(getattr(models, "operators", None), dict):  # a JointOperator
            return cls(operators=dict(models.operators))
        if isinstance(models, Iterable):
            ops = list(models)
            if all(hasattr(op, "spec") for op in ops):
                return cls(operators={op.spec.kind: op for op in ops})
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
            "joint folder holding it)" + self.unreadable_note()
        )

    def unreadable_note(self) -> str:
        """'; unreadable: …' naming the operator configs of the folder that cannot be read (else ''): why an
        operator a damaged joint folder would offer is missing."""
        damaged = unreadable_configs(self.root) if self.root is not None else []
        return f"; unreadable: {'; '.join(damaged)}" if damaged else ""

    def _load_operator(self, kind: str):
        folder = find_operator_dir(self.root, kind) if self.root else None
        if folder is None:
            raise FileNotFoundError(self.missing_message(kind))
        # diffusers: only once an operator is actually loaded
        if not joint_kinds(folder):
            return Operator.from_pretrained(folder, load_encoders=self._load_encoders)
        if folder not in self._joints:  # one copy of the weights for all the operators it holds
            load = SubspaceOperators.from_pretrained if is_subspace_folder(folder) else self._load_joint
            self._joints[folder] = load(folder)
        return self._joints[folder][kind]

    def _load_joint(self, folder: Path) -> JointOperator:
        return JointOperator.from_pretrained(folder, load_encoders=self._load_encoders)

    def operator(self, kind: str):
        if kind not in self._operators:
            op = self._load_operator(kind)
            if self.device is not None or self.dtype is not None:
                device = devices.resolve_device(self.device)
                op.to(device=device, dtype=devices.resolve_dtype(self.dtype, device) if self.dtype else None)
            # One encoder instance per distinct config, shared by every operator that names it (operators that do
            # not allow setting their encoders build their own, lazily).
            configs = getattr(op, "encoder_configs", {}) or {}
            for modality in ("image", "text"):
                if not any(slot.kind == modality for slot in op.spec.slots):  # image or text
                    continue  # (a texturing operator that names a text encoder never needs it: not loaded)
                attribute = getattr(type(op), f"{modality}_encoder", None)
                settable = not isinstance(attribute, property) or attribute.fset is not None
                if configs.get(modality) and settable:
                    setattr(op, f"{modality}_encoder", self._shared_encoder(configs[modality]))
            self._operators[kind] = op
        return self._operators[kind]

    def _shared_encoder(self, config: dict):
        key = digest(config)
        if key not in self._encoders:
            self._encoders[key] = load_encoder(config, device=self.device, dtype=self.dtype)
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
                f"no {name!r} renderer under {self.root} (looked in renderers/)"
                + (f"; present: {', '.join(found)}" if found else "")
            )
        try:
            return load_renderer(found[name], device=self.device, dtype=self.dtype, cpu_offload=self.cpu_offload)
        except (ValueError, OSError):
            raise
        except Exception as exc:  # a damaged weights file (safetensors raises its own error types)
            raise ValueError(f"{found[name]}: cannot load the {name} renderer ({reason(exc)})") from None

    def location(self) -> str | None:
        """Where the models are, as a record names them (and `--replay` finds them again)."""
        return str(self.root.resolve()) if self.root is not None else None

    def asset_dirs(self) -> list[Path]:
        return [root / "assets" for root in folder_roots(self.root)] if self.root is not None else []


# The real renderers, from the reference's hub ids; `auto` draws with Kandinsky 2.2, the paper's main renderer.
REAL_RENDERERS = ("kandinsky", "ipadapter", "ipadapter-depth")


class ReleasedModels(ModelSet):
    """The paper's released operators (hub repo `repo`, models/<kind>/learned_prior.pth) on the Kandinsky 2.2 prior
    `base`, and the real renderers from their hub ids: a models folder that is not on disk. Each operator is
    downloaded (once, into the hub cache) and loaded when first used; offline, a one-line error names the model."""

    def __init__(self, repo: str = RELEASED_OPERATORS, *, base: str = KANDINSKY_PRIOR, **placement):
        super().__init__(None, **placement)
        self.repo, self.base = repo, base

    def where(self, kind: str) -> str:
        return "memory" if kind in self._memory else released_checkpoint(kind, self.repo)

    def available(self) -> list[str]:
        return [k for k in REGISTRY if k in RELEASED_KINDS or k in self._operators]

    def missing_message(self, kind: str) -> str:
        return f"the paper released no {kind!r} operator (released: {', '.join(RELEASED_KINDS)})"

    def _load_operator(self, kind: str):
        if kind not in RELEASED_KINDS:
            raise FileNotFoundError(self.missing_message(kind))
        return load_released(self.where(kind), kind=kind, base=self.base, checksum=False)  # nothing is saved

    def fingerprint(self, kind: str) -> str | None:
        """The released file (as cached: path, size, time) on its base: a new upload is a new identity."""
        if kind in self._memory:
            return None
        path = resolve_file_ref(
            self.where(kind), what="pOps checkpoint"
        )  # downloads it now if needed (it is about to be loaded anyway)
        stat = path.stat()
        return digest(self.repo, kind, self.base, str(path), stat.st_size, stat.st_mtime_ns, length=16)

    def renderer_names(self) -> list[str]:
        return [n for n in self._renderers if n == "given"] + list(REAL_RENDERERS)

    def _saved_renderer(self, name: str):
        if name == "none":
            return None
        name = "kandinsky" if name == "auto" else name
        if name not in REAL_RENDERERS:
            raise FileNotFoundError(
                f"the released models have no {name!r} renderer; choose one of {', '.join(REAL_RENDERERS)}"
            )
        return build_renderer(name, device=self.device, dtype=self.dtype, cpu_offload=self.cpu_offload)

    def location(self) -> str:
        return self.repo

    def asset_dirs(self) -> list[Path]:
        return []
