"""The protocol's word lists: the objects (one input picture each) and the adjectives (one edit each).

The paper names the sizes (52 objects, 65 adjectives) but not the words, so pops ships its own lists
(`pops/data/words/protocol_objects.txt`, `protocol_adjectives.txt`, "lists: pops" in the results); any text file with
one entry a line replaces them ("lists: custom"). `--objects N` / `--adjectives M` take the first N / M entries.
A list file that is missing, empty, not text, repeats an entry or holds fewer entries than asked for is one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pops.base.readers import read_text
from pops.evaluation.protocol.paper import NUM_ADJECTIVES, NUM_OBJECTS

SHIPPED = {"objects": "protocol_objects.txt", "adjectives": "protocol_adjectives.txt"}
PAPER_SIZES = {"objects": NUM_OBJECTS, "adjectives": NUM_ADJECTIVES}


@dataclass(frozen=True)
class WordList:
    """The entries of one list as the run uses them, and where they came from ("pops" or the file's path)."""

    kind: str  # "objects" | "adjectives"
    words: tuple[str, ...]
    source: str

    @property
    def shipped(self) -> bool:
        return self.source == "pops"


def parse_words(text: str, where: str, kind: str) -> tuple[str, ...]:
    """One entry a line; blank lines and `#` comments are skipped; inner whitespace is collapsed."""
    if "\x00" in text:
        raise ValueError(f"{where}: not a text file of {kind} (it holds NUL bytes)")
    words = tuple(
        " ".join(line.split()) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )
    if not words:
        raise ValueError(f"{where}: no {kind} in it (one entry a line; `#` starts a comment)")
    seen: set[str] = set()
    for word in words:
        if word.lower() in seen:
            raise ValueError(f"{where}: {word!r} is listed twice; every entry of the {kind} list must be different")
        seen.add(word.lower())
    return words


def load_list(kind: str, path: str | Path | None = None, count: int | None = None) -> WordList:
    """The first `count` entries of the shipped list of `kind` (None: all of them, the paper's 52 or 65), or of the
    text file `path` (None: all its entries)."""
    if kind not in SHIPPED:
        raise ValueError(f"unknown list {kind!r}; the protocol has {' and '.join(SHIPPED)}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"--{kind} must be a whole number of at least 1, got {count!r}")
    if path is None:
        text = (resources.files("pops") / "data" / "words" / SHIPPED[kind]).read_text(encoding="utf-8")
        words, source = parse_words(text, SHIPPED[kind], kind), "pops"
    else:
        text = read_text(path, f"{kind} list")
        words, source = parse_words(text, str(path), kind), str(path)
    if count is not None and count > len(words):
        where = "the shipped list" if path is None else str(path)
        raise ValueError(f"{where}: {len(words)} {kind}, fewer than the {count} asked for (--{kind} {count})")
    return WordList(kind, words[: count or len(words)], source)


def lists_label(objects: WordList, adjectives: WordList) -> str:
    """What the results call the lists: "pops" (the shipped ones), or "custom"."""
    return "pops" if objects.shipped and adjectives.shipped else "custom"


def slug(word: str) -> str:
    """A file-name form of an entry: "teddy bear" -> "teddy_bear"."""
    return "".join(c if c.isalnum() or c in "-." else "_" for c in word.strip().lower().replace(" ", "_"))
