"""The demo's aligned text space: a text tower (pops.encoders.text_tower) trained on the captions of every operator's
training classes, then instruct's words read through it as the paper reads CLIP text.

* The tower learns from the training pairs alone — each target's caption ("a star made of zigzag", "a cherry star")
  and each input's ("a star", "a patch of zigzag", "the beach") — so no test class, validation class or held-out
  word ever trains it. It is saved in `OUT/encoders/text-tower/` and reused while its captions and pictures are the
  same.
* Instruct's pairs then carry the tower's token rows in their text slot (its condition rows) and, for the recipes
  with the alignment term, the tower's embedding of each sample's caption as `align_text`. The paper's recipe
  ("paper") has no edited pictures: its target is the input picture's own embedding; "supervised" keeps the world's
  edited target and no alignment term; "both" keeps the edited target and adds the term.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from pops.base.files import tensor_digest
from pops.base.readers import read_json
from pops.embeddings.pairs import Pairs
from pops.encoders import each_text_once
from pops.encoders.text_tower import TOWER_CONFIG, TextTowerEncoder, fit_text_tower, load_text_tower
from pops.world.captions import caption, input_caption

INSTRUCT_RECIPES = ("paper", "supervised", "both")
TOWER_FOLDER = Path("encoders") / "text-tower"


def training_captions(train: dict[str, Pairs]) -> tuple[list[str], list[int], torch.Tensor, list[int]]:
    """(captions, their class ids, picture embeddings, their class ids) from every operator's training pairs: each
    target with its class's caption (instruct's: with the word the sample says), each image input with its own."""
    texts: dict[tuple[str, int], None] = {}
    images, image_classes, ids = [], [], {}
    for pairs in train.values():
        classes = pairs.info["classes"]
        for i, class_id in enumerate(pairs.class_ids.tolist()):
            if class_id < 0:  # a training-only combination: no class name to caption
                continue
            key = classes[class_id]
            parts = [(caption(key, pairs.info["recipes"][i].get("word")), key, pairs.target[i])]
            for slot, input_class in zip(pairs.spec.image_slots, _image_classes(pairs, i)):
                text = input_caption(input_class) if input_class else None
                if text is not None and bool(pairs.present[i, slot]):
                    parts.append((text, input_class, pairs.slots[slot][i]))
            for text, name, embed in parts:
                number = ids.setdefault(name, len(ids))
                texts[text, number] = None
                images.append(embed)
                image_classes.append(number)
    if not images:
        raise ValueError("no training classes to caption")
    return [t for t, _ in texts], [c for _, c in texts], torch.stack(images).float(), image_classes


def _image_classes(pairs: Pairs, i: int) -> list[str | None]:
    names = pairs.info["input_classes"][i]
    return [names[s] for s in pairs.spec.image_slots]


def text_tower(out: Path, train: dict[str, Pairs], base, *, steps: int, seed: int) -> TextTowerEncoder:
    """The tower of these training pairs: the one saved under `out` when it learnt from the same captions and
    pictures with the same settings, else trained now (seconds) and saved there."""
    texts, classes, images, image_classes = training_captions(train)
    fingerprint = tensor_digest([images, torch.tensor(classes), torch.tensor(image_classes)], length=16)
    identity = {"texts": len(texts), "fingerprint": fingerprint, "steps": steps, "seed": seed}
    folder = out / TOWER_FOLDER
    if (folder / TOWER_CONFIG).is_file() and read_json(folder / TOWER_CONFIG).get("trained_on") == identity:
        return load_text_tower(folder)
    states = base.token_rows(texts)
    tower, _ = fit_text_tower(
        states, torch.tensor(classes), images, torch.tensor(image_classes), steps=steps, seed=seed
    )
    encoder = TextTowerEncoder(tower, base)
    encoder.save_pretrained(folder, trained_on=identity)
    return encoder


def through_tower(pairs: Pairs, tower: TextTowerEncoder, recipe: str, *, align: bool) -> Pairs:
    """Instruct's `pairs` with the tower's token rows in the text slot (their text slot holds the base encoder's
    token states) and, when `align`, each sample's caption embedding as `align_text`; the "paper" recipe's targets
    are the input pictures' own embeddings (training pairs only: evaluation keeps the true edited target)."""
    if recipe not in INSTRUCT_RECIPES:
        raise ValueError(f"instruct recipe must be one of {', '.join(INSTRUCT_RECIPES)}, got {recipe!r}")
    (text,) = pairs.spec.text_slots
    (image,) = pairs.spec.image_slots
    states, mask = pairs.slots[text]
    out = copy.copy(pairs)
    out.slots = list(pairs.slots)
    with torch.no_grad():
        out.slots[text] = (tower.tower.rows(states), mask)
    if align and recipe in ("paper", "both"):
        out.align_text = torch.stack(each_text_once(tower.encode, _captions(pairs)))
        if recipe == "paper":
            out.target = pairs.slots[image].clone()
    return out


def _captions(pairs: Pairs) -> list[str]:
    """Each instruct sample's caption: "a {word} {object}" with the word it says."""
    recipes = pairs.info["recipes"]
    return [caption(f"obj={r['object']}|edit={r['edit']}", r["word"]) for r in recipes]
