"""The paper's released operators in our format, and a complete real models folder built from them.

`import_operator` turns a released `learned_prior.pth` (a PriorTransformer state dict without the clip statistics,
possibly with DDP / torch.compile key prefixes) on its Kandinsky 2.2 base into an operator folder: safetensors
weights (optionally fp16/bf16: half the 4.1 GB fp32 pickle), the CLIP ViT-bigG encoders of the base repo (pictures
squashed to 512² first, as the reference's inference scripts do) and a model card naming the checkpoint, its licence
and the paper. Samples are those of the checkpoint loaded directly (`Operator.from_pretrained(base,
checkpoint=...)`), bit for bit in fp32.

`write_real_models` writes what equations, `pops serve`, `pops apply --models` and `pops eval` read:

    OUT/operators/<kind>/       the released operators, imported
    OUT/renderers/<type>/       a renderer folder (renderer.json: hub ids or local folders, pops.renderers.settings)
    OUT/README.md               where everything came from

Every folder is written whole or not at all (pops.base.files.atomic_folder): a wrong checkpoint leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pops.base.devices import dtype_name, resolve_dtype
from pops.base.files import atomic_folder, atomic_write_text, file_digest
from pops.base.hub import looks_like_hub_id, resolve_file_ref, resolve_model
from pops.base.readers import check_file
from pops.base.reference import (
    KANDINSKY_LICENSE,
    KANDINSKY_PRIOR,
    PAPER,
    RELEASED_CHECKPOINT,
    RELEASED_KINDS,
    RELEASED_LICENSE,
    RELEASED_OPERATORS,
)
from pops.base.registry import get_spec
from pops.operators.checkpoint import apply_pops_checkpoint, check_kind, load_kandinsky_prior, load_state_dict_file
from pops.operators.operator import Operator
from pops.renderers.settings import make_settings, write_renderer_folder

CHECKPOINT_NAME = "learned_prior.pth"


def released_checkpoint(kind: str, source: str | Path = RELEASED_OPERATORS) -> str:
    """Where the released `kind` operator lies: `owner/repo:models/<kind>/learned_prior.pth` for a hub repo, or the
    file inside a local copy of it (`hf download … --local-dir DIR`: DIR/models/<kind>/, or DIR/<kind>/)."""
    if kind not in RELEASED_KINDS:
        raise ValueError(f"no released {kind!r} operator; the paper released {', '.join(RELEASED_KINDS)}")
    inside = RELEASED_CHECKPOINT.format(kind=kind)
    path = Path(source).expanduser()
    if path.is_dir():
        for candidate in (path / inside, path / kind / CHECKPOINT_NAME):
            if candidate.is_file():
                return str(candidate)
        raise FileNotFoundError(
            f"no released {kind} operator in {source} (looked for {inside} and {kind}/{CHECKPOINT_NAME})"
        )
    if looks_like_hub_id(str(source)):
        return f"{source}:{inside}"
    raise FileNotFoundError(f"no such folder {str(source)!r} (and it is not a hub repo id of the form owner/name)")


def _encoder_repo(base: str) -> str:
    """How operator folders name the base repo of their CLIP encoders: a hub id as is, a local folder absolute (so
    the models folder works from any working directory)."""
    return base if looks_like_hub_id(base) else str(Path(base).expanduser().resolve())


def load_released(
    checkpoint: str | Path, *, kind: str | None = None, base: str = KANDINSKY_PRIOR, checksum: bool = True
):
    """The released operator as an `Operator` (fp32), with its provenance in `op.source` (`checksum`: with the
    file's sha256, some seconds for 4 GB — what an imported folder records). Hub ids are settled first (a one-line
    error, at once, when one cannot be had)."""
    kind = check_kind(checkpoint, kind)
    base = str(base)
    resolve_model(base, what="Kandinsky 2.2 prior")  # fails fast offline, before the checkpoint downloads
    path = check_file(resolve_file_ref(checkpoint, what="pOps checkpoint"), "checkpoint file")
    prior = load_kandinsky_prior(base)
    apply_pops_checkpoint(prior, load_state_dict_file(path))
    repo = _encoder_repo(base)
    encoders = {"image": {"type": "clip-image", "repo": repo, "resize": 512}}
    if get_spec(kind).text_slots:  # instruct's word
        encoders["text"] = {"type": "clip-text", "repo": repo}
    source = {
        "checkpoint": str(checkpoint),
        "sha256": file_digest(path) if checksum else None,
        "license": RELEASED_LICENSE,
        "base": base,
        "base_is_hub_id": looks_like_hub_id(base),
        "base_license": KANDINSKY_LICENSE,
        "paper": PAPER,
    }
    return Operator.from_prior(prior, kind, encoder_configs=encoders, source=source)


def import_operator(
    checkpoint: str | Path,
    out: str | Path,
    *,
    kind: str | None = None,
    base: str = KANDINSKY_PRIOR,
    dtype: str | None = None,
):
    """Import one released checkpoint into the operator folder `out` (new or empty); returns the Operator."""
    weights_dtype = resolve_dtype(dtype) if dtype is not None else None
    with atomic_folder(out) as tmp:
        op = load_released(checkpoint, kind=kind, base=base)
        op.source["weights_dtype"] = dtype_name(weights_dtype) if weights_dtype is not None else "fp32"
        op.save_pretrained(tmp, dtype=weights_dtype)
    return op


MODELS_README = """# pOps: the paper's models

Written by `pops models real`. Use it with `pops apply "EQUATION" --models DIR`, `pops serve --models DIR` and
`pops eval --models DIR`.

| part | from | licence |
|---|---|---|
{rows}
Paper: {paper}.
"""


def write_real_models(
    out: str | Path,
    *,
    base: str = KANDINSKY_PRIOR,
    checkpoints: str | Path = RELEASED_OPERATORS,
    kinds: Sequence[str] = RELEASED_KINDS,
    dtype: str | None = None,
    renderer: str = "kandinsky",
    renderer_settings: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> Path:
    """A complete real models folder: the released operators `kinds` (from the hub repo or a local copy of it) on
    `base`, and one renderer folder of type `renderer` with `renderer_settings` (pops.renderers.settings)."""
    kinds = list(dict.fromkeys(kinds))
    if not kinds:
        raise ValueError("name at least one operator")
    refs = {kind: released_checkpoint(kind, checkpoints) for kind in kinds}  # bad names fail before any work
    resolve_model(str(base), what="Kandinsky 2.2 prior")  # so does an unreachable base
    settings = dict(renderer_settings or {})
    if renderer == "kandinsky":  # its negative comes from the base repo's image encoder, as the operators' inputs
        settings.setdefault("prior", _encoder_repo(str(base)))
    make_settings(renderer, settings, what=f"{renderer} renderer")
    out = Path(out)
    with atomic_folder(out) as tmp:
        rows = []
        for kind, ref in refs.items():
            log(f"importing the released {kind} operator from {ref}")
            op = import_operator(ref, tmp / "operators" / kind, kind=kind, base=base, dtype=dtype)
            rows.append(f"| operators/{kind} | {ref} | {op.source['license']} |")
        write_renderer_folder(tmp / "renderers" / renderer, renderer, **settings)
        rows.append(f"| renderers/{renderer} | see its renderer.json | the licences of the models it names |")
        rows.append(f"| CLIP ViT-bigG/14 encoders, clip statistics | {base} | {KANDINSKY_LICENSE} |")
        atomic_write_text(tmp / "README.md", MODELS_README.format(rows="\n".join(rows) + "\n", paper=PAPER))
    return out
