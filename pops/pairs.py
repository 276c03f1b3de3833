"""Training pairs: an operator's training data as embeddings, the format every trainer reads.

One safetensors file per operator and split, tensors (N = number of samples):
  `slot{i}`       (N, D) float32 raw image embeddings of image slot i (zeros where absent)
  `slot{i}.rows`  (N, T, W) float32 token rows of text slot i, `slot{i}.mask` (N, T) bool
  `present`       (N, num_slots) bool — False where a sample has no input in that slot
  `target`        (N, D) float32 raw target embeddings
  `align_text`    (N, D) optional text embeddings in the image space (instruct's alignment term)
  `class_ids`     (N,) optional int64 ground-truth class index (evaluation)
and metadata {"operator": kind, "pops": JSON with anything else (class names, encoder id, …)}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pops.embeddings_io import atomic_write
from pops.objective import Batch
from pops.registry import OperatorSpec, get_spec


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
        return Batch(slots=self._slots_at(index), target=self.target[index], present=self.present[index], align_text=align)

    def _slots_at(self, index: torch.Tensor) -> list:
        return [(s[0][index], s[1][index]) if isinstance(s, tuple) else s[index] for s in self.slots]

    def subset(self, index: torch.Tensor) -> "Pairs":
        """The samples at `index` as Pairs; per-sample lists in `info` (one entry per sample) follow them."""
        index = torch.as_tensor(index, dtype=torch.long)
        n, picked = len(self), index.tolist()
        info = {k: [v[i] for i in picked] if isinstance(v, list) and len(v) == n and k != "classes" else v for k, v in self.info.items()}
        return Pairs(
            self.kind, self._slots_at(index), self.present[index], self.target[index],
            align_text=self.align_text[index] if self.align_text is not None else None,
            class_ids=self.class_ids[index] if self.class_ids is not None else None, info=info,
        )  # fmt: skip

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
    def load(cls, path: str | Path) -> "Pairs":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such pairs file: {path}")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            names = set(f.keys())
            get = f.get_tensor
            kind = meta.get("operator")
            spec = get_spec(kind) if kind else None
            if spec is None or "target" not in names:
                raise ValueError(f"{path}: not a pops pairs file")
            slots = []
            for i, slot in enumerate(spec.slots):
                if slot.kind == "text":
                    slots.append((get(f"slot{i}.rows"), get(f"slot{i}.mask")))
                else:
                    slots.append(get(f"slot{i}"))
            return cls(
                kind=kind,
                slots=slots,
                present=get("present"),
                target=get("target"),
                align_text=get("align_text") if "align_text" in names else None,
                class_ids=get("class_ids") if "class_ids" in names else None,
                info=json.loads(meta.get("pops", "{}")),
            )
