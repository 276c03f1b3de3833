"""Instruct's vocabulary: training words, each an exactly defined edit of an object's rendering, and held-out synonyms.

A synonym maps to the same edit as its training word ("crimson" -> red): it never appears in training, so it
measures whether an operator generalises through the text encoder rather than memorising the word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class Edit:
    """What a word does to the object: kind in {colour, scale, rotate, outline, blur, pixelate, pattern, glow, pale}."""

    kind: str
    value: object = None
    description: str = ""


EDITS: dict[str, Edit] = {
    "red": Edit("colour", (220, 35, 40), "fill the object with red"),
    "blue": Edit("colour", (35, 85, 225), "fill the object with blue"),
    "green": Edit("colour", (35, 165, 60), "fill the object with green"),
    "yellow": Edit("colour", (250, 215, 25), "fill the object with yellow"),
    "purple": Edit("colour", (135, 55, 190), "fill the object with purple"),
    "big": Edit("scale", 1.3, "scale the object by 1.3"),
    "small": Edit("scale", 0.55, "scale the object by 0.55"),
    "rotated": Edit("rotate", 45.0, "rotate the object by 45 degrees"),
    "outlined": Edit("outline", 0.03, "a thick black outline, 3% of the image wide"),
    "blurry": Edit("blur", 0.025, "Gaussian blur, radius 2.5% of the image"),
    "pixelated": Edit("pixelate", 14, "a 14x14 mosaic"),
    "striped": Edit("pattern", ("stripes", 0.07, 45.0), "diagonal white stripes over the object's colours"),
    "dotted": Edit("pattern", ("dots", 0.07, 0.0), "white dots over the object's colours"),
    "glowing": Edit("glow", (255, 205, 30), "a soft yellow halo around the object"),
    "pale": Edit("pale", 0.6, "the object's colours 60% of the way to white"),
}

# Held out of training: each maps to the edit of one training word.
SYNONYMS: dict[str, str] = {
    "crimson": "red",
    "scarlet": "red",
    "azure": "blue",
    "emerald": "green",
    "golden": "yellow",
    "violet": "purple",
    "huge": "big",
    "giant": "big",
    "tiny": "small",
    "tilted": "rotated",
    "bordered": "outlined",
    "fuzzy": "blurry",
    "blocky": "pixelated",
    "stripy": "striped",
    "spotted": "dotted",
    "luminous": "glowing",
    "faded": "pale",
}


# More training words, several per edit (never a held-out synonym): an operator that meets four words for "red"
# learns where colour words lie in the text encoder's space instead of memorising one token, which is what lets
# a held-out synonym land on its edit. Half the training samples say one of these, half the edit's own word.
TRAINING_WORDS: dict[str, str] = {
    word: edit
    for edit, words in {
        "red": ("cherry", "ruby", "maroon"),
        "blue": ("navy", "cobalt", "sapphire"),
        "green": ("lime", "jade", "olive"),
        "yellow": ("lemon", "amber", "mustard"),
        "purple": ("lilac", "lavender", "plum"),
        "big": ("large", "enormous", "massive"),
        "small": ("little", "mini", "minuscule"),
        "rotated": ("turned", "slanted", "angled"),
        "outlined": ("framed", "edged", "contoured"),
        "blurry": ("blurred", "hazy", "unfocused"),
        "pixelated": ("mosaic", "pixelly", "jagged"),
        "striped": ("banded", "streaked", "lined"),
        "dotted": ("polka-dot", "speckled", "dappled"),
        "glowing": ("radiant", "shining", "gleaming"),
        "pale": ("washed-out", "pastel", "bleached"),
    }.items()
    for word in words
}
assert not set(TRAINING_WORDS) & set(SYNONYMS), "a training word must never be a held-out synonym"


class WordEdit(NamedTuple):
    """A word's canonical edit and its role: "train" (a training word) or "synonym" (held out of training)."""

    edit: str
    role: str


def instruct_words(edits: tuple[str, ...] | None = None) -> dict[str, WordEdit]:
    """Every word instruct knows (for the given edits, all by default): word -> (canonical edit, role)."""
    edits = tuple(EDITS) if edits is None else edits
    words = {e: WordEdit(e, "train") for e in edits}
    words.update({w: WordEdit(e, "train") for w, e in TRAINING_WORDS.items() if e in edits})
    words.update({w: WordEdit(e, "synonym") for w, e in SYNONYMS.items() if e in edits})
    return words


def synonyms_of(edit: str) -> list[str]:
    return [w for w, e in SYNONYMS.items() if e == edit]


def training_words_of(edit: str) -> list[str]:
    """The words a training sample of `edit` may say: the edit's own word first, then TRAINING_WORDS'."""
    return [edit, *(w for w, e in TRAINING_WORDS.items() if e == edit)]
