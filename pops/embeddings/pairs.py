"""Training pairs: an operator's training data as embeddings, the format every trainer reads.

One safetensors file per operator and split, tensors (N = number of samples):
  `slot{i}`       (N, D) float32 raw image embeddings of image slot i (zeros where absent)
  `slot{i}.rows`  (N, T, W) float32 token rows of text slot i, `slot{i}.mask` (N, T) bool
  `present`       (N, num_slots) bool — False where a sample has no input in that slot
  `target`        (N, D) float32 raw target embeddings
  `align_text`    (N, D) optional text embeddings in the image space (instruct's alignment term)
  `class_ids`     (N,) optional int64 ground-truth class index (evaluation); -1: a training-only row, no class
and metadata {"operator": kind, "pops": JSON with anything else (class names, encoder id, …)}.

`assemble_pairs` (and `PairsAssembler`, for data encoded chunk by chunk) turns encoded images and words into
`Pairs`: every source of training data (the embedded world, a generated dataset) goes through it. `Batch` is what
one training step reads. This module imports no diffusers: data tools use it without the model stack.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from pops.base.files import atomic_write
from pops.base.readers import read_safetensors
from pops.base.registry import OperatorSpec, get_spec
from pops.encoders import pad_rows


@dataclass
class Batch:
    """One training batch, raw embeddings.

    slots: one entry per registry slot — (B, D) image embeddings, `TextRows` for text slots, or None (the prior's
        `SlotInput`; not imported here, the prior sits above this module).
    target: (B, D) — the embedding the operator should produce (for instruct without paired data: the input's own).
    present: optional (B, num_slots) bool — False where a sample has no input in that slot (composition's unworn
        garments); such a slot is the null condition for that sample.
    align_text: optional (B, D) text embeddings in the image space, for the text-alignment term.
    """

    slots: list[Any]
    target: torch.Tensor
    present: torch.Tensor | None = None
    align_text: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> Batch:
        """The samples at `index`."""
        slots = [_take(s, index) for s in self.slots]
        return Batch(slots, self.target[index], _take(self.present, index), _take(self.align_text, index))


def _take(value, index: torch.Tensor):
    """Rows `index` of a slot's value: a tensor, (rows, mask) of a text slot, or None (a dropped slot)."""
    if value is None:
        return None
    return tuple(t[index] for t in value) if isinstance(value, tuple) else value[index]


@dataclass
class Pairs:
    kind: str
    slots: list  # per slot: (N, D) tensor, or (rows, mask) for text slots
    present: torch.Tensor
    target: torch.Tensor
    align_text: torch.Tensor | None = None
    class_ids: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    @property
    def spec(self) -> OperatorSpec:
        return get_spec(self.kind)

    def __len__(self) -> int:
        return self.target.shape[0]

    def batch(self, index: torch.Tensor) -> Batch:
        """The samples at `index` as a training Batch."""
        align = self.align_text[index] if self.align_text is not None else None
        return Batch(
            slots=self._slots_at(index), target=self.target[index], present=self.present[index], align_text=align
        )

    def _slots_at(self, index: torch.Tensor) -> list:
        return [_take(s, index) for s in self.slots]

    def subset(self, index: torch.Tensor) -> Pairs:
        """The samples at `index` as Pairs; per-sample lists in `info` (one entry per sample) follow them."""
        index = torch.as_tensor(index, dtype=torch.long)
        n, picked = len(self), index.tolist()
        info = {
            k: [v[i] for i in picked] if isinstance(v, list) and len(v) == n and k != "classes" else v
            for k, v in self.info.items()
        }
        return Pairs(
            self.kind,
            self._slots_at(index),
            self.present[index],
            self.target[index],
            align_text=self.align_text[index] if self.align_text is not None else None,
            class_ids=self.class_ids[index] if self.class_ids is not None else None,
            info=info,
        )

    def save(self, path: str | Path) -> Path:
        tensors = {"present": self.present.bool(), "target": self.target.float().contiguous()}
        for i, s in enumerate(self.slots):
            if isinstance(s, tuple):
                tensors[f"slot{i}.rows"], tensors[f"slot{i}.mask"] = s[0].float().contiguous(), s[1].bool().contiguous()
            else:
                tensors[f"slot{i}"] = s.float().contiguous()
        if self.align_text is not None:
            tensors["align_text"] = self.align_text.float().contiguous()
        if self.class_ids is not None:
            tensors["class_ids"] = self.class_ids.long()
        meta = {"operator": self.kind, "pops": json.dumps(self.info)}
        atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Pairs:
        """Pairs from a file `save` wrote; a missing, damaged or foreign file, or tensors that do not line up (wrong
        shapes, NaN or inf), is one error naming the file."""
        path = Path(path)
        tensors, meta = read_safetensors(path, "pairs file")
        kind = meta.get("operator")
        if not kind or "target" not in tensors:
            raise ValueError(f"{path}: not a pops pairs file (no operator metadata or no 'target' tensor)")
        try:
            spec = get_spec(kind)
            info = json.loads(meta.get("pops", "{}"))
        except (ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a pops pairs file ({str(exc).splitlines()[0]})") from None

        def get(name: str) -> torch.Tensor:
            if name not in tensors:
                raise ValueError(f"{path}: no {name!r} tensor, which a {kind} pairs file holds")
            return tensors[name]

        slots = []
        for i, slot in enumerate(spec.slots):
            slots.append((get(f"slot{i}.rows"), get(f"slot{i}.mask")) if slot.kind == "text" else get(f"slot{i}"))
        pairs = cls(
            kind=kind,
            slots=slots,
            present=get("present"),
            target=get("target"),
            align_text=tensors.get("align_text"),
            class_ids=tensors.get("class_ids"),
            info=info if isinstance(info, dict) else {},
        )
        pairs.check(str(path))
        return pairs

    def check(self, what: str = "pairs") -> Pairs:
        """Raise a one-line ValueError unless every tensor lines up: N samples everywhere, one width D, finite
        values, a (N, num_slots) presence mask, N class ids (pops.evaluation checks them against the classes)."""
        n = self.target.shape[0] if self.target.ndim == 2 else -1
        if n < 1 or self.target.shape[1] < 1:
            raise ValueError(f"{what}: target must be a non-empty (N, D) tensor, got {tuple(self.target.shape)}")
        dim = self.target.shape[1]
        named = [("target", self.target), ("align_text", self.align_text)]
        for i, slot in enumerate(self.slots):
            if isinstance(slot, tuple):
                rows, mask = slot
                if rows.ndim != 3 or rows.shape[0] != n or tuple(mask.shape) != tuple(rows.shape[:2]):
                    raise ValueError(f"{what}: slot{i} token rows {tuple(rows.shape)} / mask {tuple(mask.shape)}")
                named.append((f"slot{i}.rows", rows))
            elif slot.ndim != 2 or tuple(slot.shape) != (n, dim):
                raise ValueError(f"{what}: slot{i} has shape {tuple(slot.shape)}, expected {(n, dim)}")
            else:
                named.append((f"slot{i}", slot))
        for name, tensor in named:
            if tensor is None:
                continue
            if not tensor.is_floating_point():
                raise ValueError(f"{what}: {name} is {str(tensor.dtype).removeprefix('torch.')}, expected floats")
            if name == "align_text" and tuple(tensor.shape) != (n, dim):
                raise ValueError(f"{what}: align_text has shape {tuple(tensor.shape)}, expected {(n, dim)}")
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{what}: {name} contains NaN or inf values")
        if tuple(self.present.shape) != (n, len(self.slots)):
            raise ValueError(f"{what}: present has shape {tuple(self.present.shape)}, expected {(n, len(self.slots))}")
        if self.class_ids is not None:
            # -1: a training-only combination (a procedural object, a further outfit), which has no class
            if tuple(self.class_ids.shape) != (n,) or self.class_ids.is_floating_point() or (self.class_ids < -1).any():
                raise ValueError(
                    f"{what}: class_ids must be N integers, each a class index or -1 (no class), "
                    f"got {tuple(self.class_ids.shape)}"
                )
        return self


@dataclass(frozen=True)
class PairRow:
    """One pair before assembly. `inputs`, one per registry slot: the index of its encoded image (image slots), its
    word (text slots), or None (no input in that slot); `target`: the index of the target's encoded image."""

    inputs: tuple[int | str | None, ...]
    target: int


class PairsAssembler:
    """Pairs written chunk by chunk into tensors sized once for `capacity` pairs.

    One allocation (not a list of chunks concatenated at the end) keeps the peak memory at the size of the result:
    a full texturing set is tens of GB of float32 rows with the bigG encoder.
    """

    def __init__(self, spec: OperatorSpec, capacity: int, dim: int):
        self.spec = spec
        self.images = {i: torch.zeros(capacity, dim) for i in spec.image_slots}
        self.present = torch.ones(capacity, spec.num_slots, dtype=torch.bool)
        self.target = torch.zeros(capacity, dim)
        self.words: dict[int, list[str]] = {i: [] for i in spec.text_slots}  # text slot -> each pair's word
        self.count = 0

    def add(self, rows: Sequence[PairRow], embeds: torch.Tensor) -> None:
        """Append `rows`, whose image indices point into `embeds` (this chunk's encoded images)."""
        if not rows:
            return
        table = torch.cat([embeds, torch.zeros(1, embeds.shape[1])])  # row -1: the absent slot's zeros
        image_slots = self.spec.image_slots
        where = torch.tensor(
            [[-1 if r.inputs[i] is None else r.inputs[i] for i in image_slots] for r in rows], dtype=torch.long
        ).reshape(len(rows), -1)
        at = slice(self.count, self.count + len(rows))
        for column, i in enumerate(image_slots):
            self.images[i][at] = table[where[:, column]]
            self.present[at, i] = where[:, column] >= 0
        self.target[at] = table[torch.tensor([r.target for r in rows], dtype=torch.long)]
        for i, words in self.words.items():
            if any(r.inputs[i] is None for r in rows):
                raise ValueError(f"{self.spec.kind}: every pair needs a word in text slot {self.spec.slots[i].name!r}")
            words.extend(r.inputs[i] for r in rows)
        self.count += len(rows)

    def pairs(
        self,
        encode_words: Callable[[list[str]], list[torch.Tensor]] | None = None,
        *,
        align_text: torch.Tensor | None = None,
        class_ids: torch.Tensor | None = None,
        info: dict | None = None,
    ) -> Pairs:
        """The pairs added so far. `encode_words(words)`: the (T_i, W) token rows of each pair's word of a text slot
        (the caller chooses how words are batched through its text encoder)."""
        n = self.count
        slots: list = []
        for i, slot in enumerate(self.spec.slots):
            if slot.kind == "text":
                if encode_words is None:
                    raise ValueError(f"{self.spec.kind} has a text slot: pass encode_words")
                slots.append(pad_rows(encode_words(self.words[i])))
            else:
                slots.append(self.images[i][:n])  # rows never filled (skipped examples) are left out
        return Pairs(
            self.spec.kind,
            slots,
            self.present[:n],
            self.target[:n],
            align_text=align_text,
            class_ids=class_ids,
            info=info if info is not None else {},
        )


def assemble_pairs(
    spec: OperatorSpec, rows: Sequence[PairRow], embeds: torch.Tensor, encode_words=None, **extra
) -> Pairs:
    """`Pairs` of `rows` over the encoded images `embeds` in one go (`extra`: align_text, class_ids, info)."""
    assembler = PairsAssembler(spec, len(rows), embeds.shape[1])
    assembler.add(rows, embeds)
    return assembler.pairs(encode_words, **extra)


def recombine(pairs: Pairs, factor: int, seed: int = 0) -> Pairs:
    """`factor` times the training pairs without encoding anything: every target again, with each image input
    replaced by another encoded input of the same input class (e.g. another patch of the same texture, another
    rendering of the same garment), drawn at random. The first copy is the original pairs.

    For union's objects, texturing's patch and composition's garments the world draws the input's jitter
    independently of the target's, so these pairs are exact world samples. Where an input shares the target's
    jitter (the object's pose in texturing, scene and instruct; the scene's crop in scene), the recombined input
    keeps its class but not that jitter: the operator learns to carry the object's identity rather than copy one
    picture. This is what lets a few hundred encoded samples train an operator that generalises to held-out
    combinations (without it, each unique object picture lets the network memorise its target).
    """
    if factor <= 1:
        return pairs
    classes = pairs.info["input_classes"]
    image_slots = pairs.spec.image_slots
    pool: dict[str, list[tuple[int, int]]] = {}
    for j, row in enumerate(classes):
        for i in image_slots:
            if row[i] is not None:
                pool.setdefault(row[i], []).append((j, i))
    generator = torch.Generator().manual_seed(seed)
    slots = []
    for i, slot in enumerate(pairs.slots):
        if i not in image_slots:
            slots.append(
                (slot[0].repeat(factor, 1, 1), slot[1].repeat(factor, 1))
                if isinstance(slot, tuple)
                else slot.repeat(factor, 1)
            )
            continue
        column = [slot]
        for _ in range(factor - 1):
            copy = torch.zeros_like(slot)
            for j, row in enumerate(classes):
                if row[i] is not None:
                    options = pool[row[i]]
                    src, src_slot = options[int(torch.randint(len(options), (1,), generator=generator))]
                    copy[j] = pairs.slots[src_slot][src]
            column.append(copy)
        slots.append(torch.cat(column))
    info = {k: v for k, v in pairs.info.items() if k not in ("recipes", "input_classes")}
    info["recombined"] = factor
    return Pairs(
        pairs.kind,
        slots,
        pairs.present.repeat(factor, 1),
        pairs.target.repeat(factor, 1),
        align_text=None if pairs.align_text is None else pairs.align_text.repeat(factor, 1),
        class_ids=pairs.class_ids.repeat(factor),
        info=info,
    )
