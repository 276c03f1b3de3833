"""The words an operator was trained on, and how it reads a word it never saw.

A prior trained on a closed vocabulary (the embedded world's instruct: 60 words for 15 edits) has never seen the
region of the text encoder's space where a new word lands, so its answer there is arbitrary. Reading the new word as
the known word nearest to it (cosine of the mean-pooled token rows: MiniLM's own sentence embedding) keeps the input
where the operator was trained (docs/EXPERIMENTS.md, "Reading unseen words", has how it was decided on validation
words).

A known word is its own nearest word, so the operator's answer to it does not change.
"""

from __future__ import annotations

import torch

from pops.embeddings.pairs import Pairs
from pops.encoders import pad_rows

# The file of an operator folder that holds its vocabularies: "<kind>.rows" (V, T, W) and "<kind>.mask" (V, T).
VOCABULARY_FILE = "vocabulary.safetensors"


def pooled(rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, W) unit-length means of each input's token rows over its mask."""
    weights = mask.to(rows.dtype).unsqueeze(-1)
    mean = (rows * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean.float(), dim=-1)


class Vocabulary:
    """Token rows (V, T, W) and their (V, T) bool mask, one entry per distinct word."""

    def __init__(self, rows: torch.Tensor, mask: torch.Tensor):
        if rows.ndim != 3 or mask.shape != rows.shape[:2] or rows.shape[0] == 0:
            raise ValueError(f"a vocabulary is (V, T, W) rows with a (V, T) mask, got {tuple(rows.shape)}")
        self.rows, self.mask = rows.float().cpu(), mask.bool().cpu()
        self.keys = pooled(self.rows, self.mask)

    @classmethod
    def from_text(cls, rows: torch.Tensor, mask: torch.Tensor) -> Vocabulary:
        """The distinct words among the (N, T, W) token rows of a text slot (e.g. every training pair's)."""
        flat = (rows.float() * mask.unsqueeze(-1)).flatten(1)
        _, inverse = torch.unique(flat, dim=0, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1,), len(inverse), dtype=torch.long)
        first.scatter_reduce_(0, inverse, torch.arange(len(inverse)), reduce="amin")
        return cls(rows[first], mask[first])

    def __len__(self) -> int:
        return self.rows.shape[0]

    def similarity(self, rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, V) cosine of each input to each known word."""
        return pooled(rows, mask).cpu() @ self.keys.T

    def nearest(self, rows: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each input's nearest known word, as its token rows and mask (on the inputs' device)."""
        pick = self.similarity(rows, mask).argmax(1)
        return self.rows[pick].to(rows.device, rows.dtype), self.mask[pick].to(mask.device)

    def knows(self, rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) bool: whether each input is one of the known words (its own nearest, up to rounding)."""
        return self.similarity(rows, mask).amax(1) > 1 - 1e-5

    def tensors(self, kind: str) -> dict[str, torch.Tensor]:
        """The tensors `VOCABULARY_FILE` holds for operator `kind`."""
        return {f"{kind}.rows": self.rows.contiguous(), f"{kind}.mask": self.mask.contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], kind: str) -> Vocabulary:
        try:
            return cls(tensors[f"{kind}.rows"], tensors[f"{kind}.mask"])
        except KeyError:
            raise ValueError(f"{VOCABULARY_FILE} holds no vocabulary for {kind}") from None


def training_vocabulary(pairs: Pairs) -> Vocabulary | None:
    """The distinct words of every text slot of `pairs` (None when it has none)."""
    texts = [pairs.slots[i] for i in pairs.spec.text_slots]
    if not texts:
        return None
    return Vocabulary.from_text(*pad_rows([row[m.bool()] for rows, mask in texts for row, m in zip(rows, mask)]))
