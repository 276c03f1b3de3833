"""Turning what a user passes to `Operator.sample` into checked, batched slot inputs.

Image slots take a (B, D) or (D,) embedding, a list of B embeddings/None (None drops that sample's slot), or PIL
images when the operator has an image encoder. Text slots take (B, T, W) / (T, W) token rows, a list of (T_i, W)
rows (padded, with a mask), a (rows, mask) pair, or strings when the operator has a text encoder. Batch-1 inputs
broadcast to the common batch size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from pops.embeddings.io import check_embeddings, check_floats
from pops.encoders import pad_rows

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pops.operators.operator import Operator


def prepare_inputs(op: Operator, inputs: Sequence[Any], batch_size: int | None = None):
    """(slots, drop): slot inputs with a common batch size B and a (B, num_slots) per-sample drop mask."""
    spec = op.spec
    if not isinstance(inputs, Sequence) and not isinstance(inputs, torch.Tensor):
        raise ValueError(f"{spec.kind} takes a list of {spec.num_slots} inputs, got {type(inputs).__name__}")
    if isinstance(inputs, (torch.Tensor, str)) or len(inputs) != spec.num_slots:
        n = 1 if isinstance(inputs, (torch.Tensor, str)) else len(inputs)
        raise ValueError(f"{spec.kind} takes {spec.num_slots} inputs ({', '.join(spec.slot_names)}), got {n}")
    slots, drops = [], []
    for slot, value in zip(spec.slots, inputs):
        name = f"input {slot.name!r}"
        if value is None:
            slots.append(None)
            drops.append(None)
        elif slot.kind == "text":
            slots.append(_text_rows(op, value, name))
            drops.append(None)
        else:
            embeds, drop = _image_embeds(op, value, name)
            slots.append(embeds)
            drops.append(drop)

    sizes = {(s[0] if isinstance(s, tuple) else s).shape[0] for s in slots if s is not None}
    if batch_size is not None:
        sizes.add(batch_size)
    sizes.discard(1)
    if len(sizes) > 1:
        raise ValueError(f"inputs have different batch sizes: {sorted(sizes)} (batch-1 inputs broadcast)")
    batch = sizes.pop() if sizes else 1
    op.check_memory(batch, draws=1)  # before the condition rows are built for every sample (one each)
    slots = [_expand(s, batch) for s in slots]
    drop = torch.zeros(batch, spec.num_slots, dtype=torch.bool)
    for i, d in enumerate(drops):
        if d is not None:
            drop[:, i] = d.expand(batch)
    return slots, drop


def _image_embeds(op, value, name):
    """(embeds (B, D), per-sample drop (B,) or None)."""
    dim = op.embedding_dim
    if isinstance(value, (list, tuple)) and any(v is None for v in value):
        present = [v for v in value if v is not None]
        if not present:
            return None, None
        rows = [check_embeddings(_as_tensor(op, v, name), dim, name) for v in present]
        out = torch.zeros(len(value), dim)
        keep = torch.tensor([v is not None for v in value])
        out[keep] = torch.cat(rows)
        return out, ~keep
    return check_embeddings(_as_tensor(op, value, name), dim, name), None


def _as_tensor(op, value, name) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    images = value if isinstance(value, (list, tuple)) else [value]
    if all(hasattr(v, "convert") for v in images):  # PIL images
        if op.image_encoder is None:
            raise ValueError(f"{name}: an image was given but this operator has no image encoder; pass embeddings")
        return op.image_encoder.encode([im.convert("RGB") for im in images])
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return torch.cat(
            [check_embeddings(v.reshape(1, -1), op.embedding_dim, f"{name}[{i}]") for i, v in enumerate(value)]
        )
    raise ValueError(f"{name}: expected an embedding tensor or an image, got {type(value).__name__}")


def _text_rows(op, value, name):
    """(rows (B, T, W), mask (B, T))."""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, torch.Tensor) for v in value):
        rows, mask = value
    else:
        if isinstance(value, str) or (
            isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value)
        ):
            if op.text_encoder is None:
                raise ValueError(f"{name}: a word was given but this operator has no text encoder; pass token rows")
            words = [value] if isinstance(value, str) else list(value)
            value = op.text_encoder.token_rows(words)
            _say_unknown_words(op, words, value)
        if isinstance(value, torch.Tensor):
            rows = value[None] if value.ndim == 2 else value
            mask = torch.ones(rows.shape[:2], dtype=torch.bool)
        elif (
            isinstance(value, (list, tuple))
            and value
            and all(isinstance(v, torch.Tensor) and v.ndim == 2 for v in value)
        ):
            rows, mask = pad_rows(list(value))
        else:
            raise ValueError(f"{name}: expected a word, token rows (T, W) / (B, T, W) or a list of them")
    if rows.ndim != 3 or mask.shape != rows.shape[:2]:
        raise ValueError(f"{name}: token rows must be (B, T, W) with a (B, T) mask, got {tuple(rows.shape)}")
    check_floats(rows, name)
    if rows.shape[-1] != op.model.text_width:
        raise ValueError(f"{name}: token rows of width {rows.shape[-1]}, this operator expects {op.model.text_width}")
    if not torch.isfinite(rows).all():
        raise ValueError(f"{name}: contains NaN or inf values")
    return rows.float(), mask.bool()


def _expand(slot, batch):
    if slot is None:
        return None
    if isinstance(slot, tuple):
        rows, mask = slot
        return rows.expand(batch, -1, -1), mask.expand(batch, -1)
    return slot.expand(batch, -1)


def _say_unknown_words(op, words: list[str], rows: list[torch.Tensor]) -> None:
    """Tell the user which words an operator with a vocabulary (pops.operators.vocabulary) reads as another."""
    if op.vocabulary is None or not rows:
        return
    for word, known in zip(words, op.vocabulary.knows(*pad_rows(rows)).tolist()):
        if not known:
            log.warning(
                "%s: %r is not one of the %d words it was trained on; it reads it as the nearest of them",
                op.spec.kind,
                word,
                len(op.vocabulary),
            )
