"""Synthetic pairs and slot inputs, and pairs files written without the writer's checks (for the readers to refuse)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def make_pairs(
    kind: str = "texturing",
    n: int = 48,
    dim: int = 32,
    *,
    seed: int = 0,
    text_width: int = 16,
    learnable: bool = True,
    keep: float | None = None,
    **fields,
):
    """Synthetic Pairs of `kind`: n samples of dim-d embeddings; a text slot holds n x 3 x text_width token rows.

    learnable (the default): a relation training can learn — the target is the mean of the image inputs plus a
    little noise; image inputs are drawn around 1 (scale 2), every third text lacks its last token, and the text
    alignment targets of an operator that trains one are drawn. learnable=False: inputs and target independent
    standard normal draws, whole texts, no alignment targets (data whose values do not matter).

    keep: each slot but the first present with this probability. None: every slot present, except composition's
    when learnable (kept with probability 0.5). `fields`: more Pairs fields (class_ids, info).
    Draws from one generator seeded with `seed`: the same arguments give the same pairs."""
    from pops.base.registry import get_spec
    from pops.embeddings.pairs import Pairs

    g = torch.Generator().manual_seed(seed)
    spec = get_spec(kind)
    slots, images = [], []
    for slot in spec.slots:
        if slot.kind == "text":
            rows = torch.randn(n, 3, text_width, generator=g)
            mask = torch.ones(n, 3, dtype=torch.bool)
            if learnable:
                mask[::3, 2] = False
            slots.append((rows, mask))
        else:
            e = torch.randn(n, dim, generator=g)
            e = e * 2 + 1 if learnable else e
            slots.append(e)
            images.append(e)
    if keep is None and learnable and kind == "composition":
        keep = 0.5
    present = torch.ones(n, spec.num_slots, dtype=torch.bool)
    if keep is not None:
        present = torch.rand(n, spec.num_slots, generator=g) < keep
        present[:, 0] = True
    if learnable:
        target = sum(images) / len(images) + 0.1 * torch.randn(n, dim, generator=g)
        fields.setdefault("align_text", torch.randn(n, dim, generator=g) if spec.text_alignment_weight else None)
    else:
        target = torch.randn(n, dim, generator=g)
    return Pairs(kind, slots, present, target, **fields)


def slot_inputs(kind: str, batch: int, dim: int = 32, text_width: int = 8, seed: int = 0) -> list:
    """One batch of inputs for every slot of `kind`, as an operator takes them: an image slot a batch x dim tensor, a
    text slot (batch x 3 x text_width token rows, a mask of whole texts)."""
    from pops.base.registry import get_spec

    g = torch.Generator().manual_seed(seed)
    slots = []
    for slot in get_spec(kind).slots:
        if slot.kind == "text":
            slots.append((torch.randn(batch, 3, text_width, generator=g), torch.ones(batch, 3, dtype=torch.bool)))
        else:
            slots.append(torch.randn(batch, dim, generator=g))
    return slots


def save_raw_pairs(pairs, path: Path, drop: tuple[str, ...] = ()) -> Path:
    """`pairs` in the pairs-file layout, written without Pairs.save's checks (NaN rows reach the reader), with the
    tensors named in `drop` left out (a file missing a slot)."""
    from safetensors.torch import save_file

    tensors = {"present": pairs.present, "target": pairs.target.contiguous()}
    for i, slot in enumerate(pairs.slots):
        tensors[f"slot{i}"] = slot.contiguous()
    if pairs.class_ids is not None:
        tensors["class_ids"] = pairs.class_ids
    tensors = {k: v for k, v in tensors.items() if k not in drop}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"operator": pairs.kind, "pops": json.dumps(pairs.info)})
    return path


def save_raw_embeddings(path: Path, embeds: torch.Tensor) -> Path:
    """An embeddings file written without save_embeddings' checks (NaN rows reach the reader)."""
    from safetensors.torch import save_file

    save_file({"embeddings": embeds.contiguous()}, str(path), metadata={"pops": "{}"})
    return path
