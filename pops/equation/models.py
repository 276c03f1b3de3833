"""What an equation runs on: operators by kind, the image encoder, and a renderer — read lazily from a models folder.

Layout of a models folder (what the embedded demo writes; every part is optional):

    MODELS/
      operators/<kind>/          an `Operator.save_pretrained` folder per operator (also accepted: MODELS/<kind>/)
      renderer/                  a saved renderer: its `renderer.json` {"type": "retrieval" | "decoder"} says which
      renderer/<name>/           or several, by type name (`retrieval`, `decoder`); also `renderers/<name>/`
      assets/                    images that equations may name without a suffix: `wood` means assets/wood.png

`MODELS` may also be the `operators/` folder itself (the renderer and assets are then looked for one level up).
Operators load once and share one image/text encoder per distinct encoder config. A renderer folder is loaded with
its class's `from_pretrained(folder)`; a retrieval renderer without one is read from `gallery.safetensors` and
`images/*.png` (what `save_retrieval_renderer` writes).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from pops.registry import REGISTRY

OPERATOR_CONFIG = "pops_config.json"  # pops.checkpoints.CONFIG_NAME (not imported: that module pulls in diffusers)
ASSET_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".safetensors", ".pt")

# Renderers a models folder may hold: name -> "module:Class"; each class has `from_pretrained(folder)`.
RENDERER_TYPES = {
    "retrieval": "pops.renderers.retrieval:RetrievalRenderer",
    "decoder": "pops.renderers.decoder:DecoderRenderer",
}
# `auto` prefers the decoder (it draws new pictures) over retrieval (it shows the nearest gallery picture).
AUTO_ORDER = ("decoder", "retrieval")
RENDERER_CHOICES = ("auto", *RENDERER_TYPES, "none")


def folder_fingerprint(folder: Path) -> str:
    """Cheap identity of a saved model folder: names, sizes and modification times of its files."""
    h = hashlib.sha256(str(folder.resolve()).encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = path.stat()
        h.update(f"{path.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _roots(models_dir: Path) -> list[Path]:
    """The folder itself, and its parent when it is an `operators/` folder."""
    return [models_dir, models_dir.parent] if models_dir.name == "operators" else [models_dir]


def find_operator_dir(models_dir: Path, kind: str) -> Path | None:
    for candidate in (models_dir / "operators" / kind, models_dir / kind):
        if (candidate / OPERATOR_CONFIG).is_file():
            return candidate
    return None


def _renderer_type(folder: Path) -> str | None:
    """The renderer type a folder holds: its config's "type", else the folder's own name."""
    for name in ("renderer.json", "config.json", "pops_renderer.json"):
        config = folder / name
        if config.is_file():
            try:
                kind = json.loads(config.read_text()).get("type")
            except (json.JSONDecodeError, AttributeError):
                kind = None
            if kind in RENDERER_TYPES:
                return kind
    return folder.name if folder.name in RENDERER_TYPES else None


def find_renderers(models_dir: Path) -> dict[str, Path]:
    """Renderer folders present under a models folder, by type name."""
    found: dict[str, Path] = {}
    for root in _roots(Path(models_dir)):
        for parent in (root / "renderer", root / "renderers"):
            if not parent.is_dir():
                continue
            kind = _renderer_type(parent)
            if kind:
                found.setdefault(kind, parent)
            for sub in sorted(p for p in parent.iterdir() if p.is_dir()):
                kind = _renderer_type(sub)
                if kind:
                    found.setdefault(kind, sub)
    return found


def load_renderer(models_dir: str | Path | None, name: str = "auto"):
    """The renderer called `name` saved under `models_dir`, or None for `none` (or for `auto` when none is saved).

    `auto` takes the decoder if present, else retrieval. A named renderer that is missing is a FileNotFoundError.
    """
    if name not in RENDERER_CHOICES:
        raise ValueError(f"unknown renderer {name!r}; choose one of {', '.join(RENDERER_CHOICES)}")
    if name == "none" or models_dir is None:
        if name not in ("none", "auto"):
            raise FileNotFoundError(f"no models folder to load the {name!r} renderer from")
        return None
    found = find_renderers(Path(models_dir))
    if name == "auto":
        name = next((n for n in AUTO_ORDER if n in found), "")
        if not name:
            return None
    if name not in found:
        raise FileNotFoundError(
            f"no {name!r} renderer under {models_dir} (looked in renderer/ and renderers/{name}/)"
            + (f"; present: {', '.join(found)}" if found else "")
        )
    module, cls = RENDERER_TYPES[name].split(":")
    renderer_cls = getattr(importlib.import_module(module), cls)
    if hasattr(renderer_cls, "from_pretrained"):
        return renderer_cls.from_pretrained(found[name])
    if name == "retrieval":
        return _load_retrieval(found[name], renderer_cls)
    raise ValueError(f"{renderer_cls.__name__} cannot be loaded from a folder (it has no from_pretrained)")


# ----- the retrieval renderer's folder (used when RetrievalRenderer has no save/load of its own) -------------------
RETRIEVAL_GALLERY = "gallery.safetensors"


def save_retrieval_renderer(folder: str | Path, renderer) -> Path:
    """Write a RetrievalRenderer as `renderer.json` + `gallery.safetensors` (M, D) + `images/<i>.png`."""
    from pops.embeddings_io import atomic_write, save_embeddings

    folder = Path(folder)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(renderer.images):
        atomic_write(images / f"{i:06d}.png", lambda tmp, image=image: image.save(tmp, format="PNG"))
    save_embeddings(folder / RETRIEVAL_GALLERY, renderer.gallery, {"images": len(renderer.images)})
    config = {"type": "retrieval", "gallery": RETRIEVAL_GALLERY, "images": "images", "count": len(renderer.images)}
    atomic_write(folder / "renderer.json", lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))
    return folder


def _load_retrieval(folder: Path, renderer_cls):
    from PIL import Image

    from pops.embeddings_io import load_embeddings

    embeds, _ = load_embeddings(folder / RETRIEVAL_GALLERY)
    paths = sorted((folder / "images").glob("*.png"))
    if len(paths) != embeds.shape[0]:
        raise ValueError(f"{folder}: {embeds.shape[0]} gallery embeddings but {len(paths)} images")
    images = []
    for path in paths:
        with Image.open(path) as im:
            images.append(im.convert("RGB"))
    return renderer_cls(embeds, images)


class ModelSet:
    """Operators (by registry kind), image encoder and renderer for equations.

    Build it from a models folder (`ModelSet("outputs/demo")`), or from operators in memory
    (`ModelSet(operators={"texturing": op})`, e.g. `Operator.from_prior(...)`), or both (in-memory ones win).
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        operators: dict[str, Any] | None = None,
        image_encoder: Any = None,
        renderer: Any = None,
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

    @classmethod
    def coerce(cls, models: Any) -> "ModelSet":
        """A ModelSet from what a user passes as `models=`: a folder, a ModelSet, an Operator, a list or a dict of them."""
        if isinstance(models, ModelSet):
            return models
        if isinstance(models, (str, os.PathLike)):
            return cls(models)
        if isinstance(models, dict):
            return cls(operators=models)
        if hasattr(models, "spec") and hasattr(models, "sample"):
            return cls(operators={models.spec.name: models})
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
        return f"no trained {kind!r} operator under {self.root} (expected operators/{kind}/{OPERATOR_CONFIG})"

    def operator(self, kind: str):
        if kind not in self._operators:
            folder = find_operator_dir(self.root, kind) if self.root else None
            if folder is None:
                raise FileNotFoundError(self.missing_message(kind))
            from pops.operator import Operator

            op = Operator.from_pretrained(folder)
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

    def _shared_encoder(self, config: dict):
        key = json.dumps(config, sort_keys=True)
        if key not in self._encoders:
            from pops.encoders import load_encoder

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
                return op.image_encoder, hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
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

    def renderer(self, name: str = "auto"):
        """The renderer to draw with (None for `none`, or for `auto` when there is none)."""
        if name == "auto" and "given" in self._renderers:
            return self._renderers["given"]
        if name not in self._renderers:
            self._renderers[name] = load_renderer(self.root, name)
        return self._renderers[name]

    def asset_dirs(self) -> list[Path]:
        return [root / "assets" for root in _roots(self.root)] if self.root is not None else []
