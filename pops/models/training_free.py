"""Training-free operators for the real stack: IP-Composer's concept subspaces (pops.operators.subspace) from CLIP
ViT-bigG text, the space the released operators and the Kandinsky/SDXL renderers work in.

Each concept's subspace is spanned by the CLIP text embeddings of captions that vary it — the reference's own prompt
templates over the word banks pops ships (pops/data/words/: objects, textures, placements, adjectives, art types), a
sample of `per_concept` captions each — grouped by everything else the caption says. `pops models subspace OUT` writes
the folder; it is a models folder by itself (`pops apply "texturing(a.png, b.png)" --models OUT`, `pops serve`,
`pops eval`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from pops.base.reference import KANDINSKY_PRIOR, RELEASED_KINDS
from pops.encoders.clip import CLIPTextEncoder
from pops.generate.words import load_words
from pops.operators.subspace import SubspaceOperators, build_subspace_operator

# The reference's prompts (DESIGN §2), with the concept each operator's second input brings.
TEMPLATES = {
    "texturing": ("A {object} made from {texture}", "texture"),
    "union": ("A photo of {object} and a {other}", "other"),
    "scene": ("A photo of a {object} {placement}", "placement"),
    "instruct": ("A {word} {object}", "word"),
}
CAPTION_COUNT = 2000
RANK = 16


def real_concept_captions(kind: str, per_concept: int = CAPTION_COUNT, seed: int = 0) -> list[tuple[str, str]]:
    """`per_concept` captions of `kind`'s template, each keyed by the object it names (the concept varies within a
    key): texturing's textures, union's second objects, scene's placements, instruct's adjectives and art types."""
    template, concept = TEMPLATES[kind]
    objects = load_words("objects")
    values = {
        "texture": load_words("textures"),
        "other": objects,
        "placement": load_words("placements"),
        "word": (*load_words("adjectives"), *load_words("art_types")),
    }[concept]
    rng = random.Random(seed)
    captions = []
    for _ in range(per_concept):
        obj, value = rng.choice(objects), rng.choice(values)
        captions.append((template.format(object=obj, **{concept: value}), obj))
    return captions


def real_subspaces(
    embed: Callable[[list[str]], torch.Tensor],
    dim: int,
    kinds: Sequence[str] = RELEASED_KINDS,
    *,
    rank: int = RANK,
    per_concept: int = CAPTION_COUNT,
    encoder_configs: dict | None = None,
) -> SubspaceOperators:
    """Every kind's subspace operator from CLIP text embeddings (`embed`: captions -> (N, dim) `text_embeds`), in
    the shared space (centre 0)."""
    operators = {}
    for kind in kinds:
        if kind not in TEMPLATES:
            raise ValueError(f"no real-stack template for {kind!r}; known: {', '.join(TEMPLATES)}")
        captions = [None, real_concept_captions(kind, per_concept)]
        operators[kind] = build_subspace_operator(
            kind, captions, embed, torch.zeros(dim), rank, encoder_configs=encoder_configs
        )
    return SubspaceOperators(operators, source={"text": "CLIP ViT-bigG/14 text", "captions": per_concept})


def write_real_subspace(
    out: str | Path,
    *,
    base: str = KANDINSKY_PRIOR,
    kinds: Sequence[str] = RELEASED_KINDS,
    rank: int = RANK,
    per_concept: int = CAPTION_COUNT,
) -> Path:
    """The real stack's training-free operators as one folder: the concept subspaces from the CLIP ViT-bigG text
    encoder of the Kandinsky 2.2 prior repo `base`; the operators read pictures with its image encoder (squashed to
    512², as the released operators) and words with its text encoder."""
    encoder = CLIPTextEncoder.from_pretrained(base)
    configs = {"image": {"type": "clip-image", "repo": str(base), "resize": 512}, "text": encoder.to_config()}
    with torch.no_grad():
        operators = real_subspaces(
            encoder.encode, encoder.dim, kinds, rank=rank, per_concept=per_concept, encoder_configs=configs
        )
    return operators.save_pretrained(out)  # written whole or not at all
