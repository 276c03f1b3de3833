"""Word banks for the prompts of the data recipes (plain text files under pops/data/words/, one entry per line)."""

from __future__ import annotations

from functools import cache
from importlib import resources

BANKS = ("objects", "placements", "textures", "adjectives", "art_types")


@cache
def load_words(bank: str) -> tuple[str, ...]:
    """The entries of one bank, in file order; blank lines and `#` comments are skipped."""
    if bank not in BANKS:
        raise ValueError(f"unknown word bank {bank!r}; known banks: {', '.join(BANKS)}")
    text = (resources.files("pops") / "data" / "words" / f"{bank}.txt").read_text(encoding="utf-8")
    words = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not words:
        raise ValueError(f"word bank {bank!r} is empty")
    return words


def place_of(placement: str) -> str:
    """The place a placement names: its last word ("on a wooden table" -> "table"), as the reference does."""
    return placement.split()[-1] if placement.strip() else ""
