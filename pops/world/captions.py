"""Words for the world's classes: the caption of each class, as a photographer would title its picture.

A class key lists its factors ("obj=star|tex=zigzag", "obj=star+moon", "hat=cap|pants=jeans"); its caption says the
same in words — "a star made of zigzag", "a star and a moon", "a person wearing a cap and jeans". Instruct's caption
is the registry's alignment prompt with the word a sample says ("a crimson star"), the world's "A {word} {object}
{placement}" with no placement. The aligned text space (pops.encoders.text_tower) learns from the captions of the
training classes; the subspace operator builds its concept subspaces from them.
"""

from __future__ import annotations

from pops.base.registry import COMPOSITION_SLOTS

# Instruct's caption: the registry's "A {word} {object} {placement}" (the world draws no placement).
INSTRUCT_TEMPLATE = "a {word} {object}"


def factors(class_key: str) -> dict[str, str]:
    """A class key's factors by name: {"obj": "star", "tex": "zigzag"}; a union's "obj=a+b" gives obj_a and obj_b."""
    out = {}
    for part in class_key.split("|"):
        name, _, value = part.partition("=")
        if name == "obj" and "+" in value:
            out["obj_a"], out["obj_b"] = value.split("+", 1)
        else:
            out[name] = value
    return out


def _words(name: str) -> str:
    return name.replace("_", " ").replace("-", " ")


def caption(class_key: str, word: str | None = None) -> str:
    """The caption of a class of the world (`word`: the word an instruct sample says; default its edit's own)."""
    f = {k: _words(v) for k, v in factors(class_key).items()}
    if "edit" in f:
        return INSTRUCT_TEMPLATE.format(word=_words(word) if word else f["edit"], object=f["obj"])
    if "tex" in f:
        return f"a {f['obj']} made of {f['tex']}"
    if "scene" in f:
        return f"a {f['obj']} in the {f['scene']}"
    if "obj_a" in f:
        return f"a {f['obj_a']} and a {f['obj_b']}"
    if "obj" in f:
        return f"a {f['obj']}"
    garments = list(dict.fromkeys(f[slot] for slot in COMPOSITION_SLOTS if slot in f))
    if not garments:
        raise ValueError(f"no caption for the class {class_key!r}")
    listed = ", ".join(garments[:-1]) + (" and " if len(garments) > 1 else "") + garments[-1]
    return f"a person wearing {listed}"


def input_caption(input_class: str) -> str | None:
    """The caption of an operator's input picture by its class key: "a star" (obj=star), "a patch of zigzag"
    (tex=zigzag), "the beach" (scene=beach), "a cap" (a garment, hat=cap); None for a word (word=crimson)."""
    name, _, value = input_class.partition("=")
    words = _words(value)
    if name == "word":
        return None
    if name == "tex":
        return f"a patch of {words}"
    if name == "scene":
        return f"the {words}"
    return f"a {words}"


# Each operator's slots by the factor of its class key each one brings (pops.operators.subspace's concepts).
SLOT_FACTORS = {
    "texturing": ("obj", "tex"),
    "union": ("obj_a", "obj_b"),
    "scene": ("obj", "scene"),
    "instruct": ("obj", "edit"),
    "composition": COMPOSITION_SLOTS,
}
