"""The world's recipes: combinations (the target classes), how a sample is drawn, and how it is rendered.

`WORLD_RECIPES` maps a registry entry's `recipe` name to its class; the world makes one instance per entry, so two
entries may share a recipe (each with its own operator name and random streams). A recipe dict holds every choice
(names and jitter) as plain JSON values; rendering it is a pure function, so a stored recipe re-renders
pixel-identically. Jitter (pose, crop offsets) never changes the target class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from pops.base.registry import COMPOSITION_SLOTS
from pops.world import render as R
from pops.world.edits import EDITS, SYNONYMS, TRAINING_WORDS, synonyms_of, training_words_of
from pops.world.figure import GARMENTS, outfit_class, random_outfit
from pops.world.scenes import SCENES, WIDTH
from pops.world.shapes import SHAPES, procedural_name
from pops.world.textures import TEXTURES, TILE

if TYPE_CHECKING:  # the config is defined next to the World, which imports this module
    from pops.world.world import WorldConfig

SYNONYM_SPLIT = "test_synonyms"
Combo = tuple  # a hashable description of one target class
# An operator's random stream of the world: rng(stream name, *more integers) -> a fresh generator.
Streams = Callable[..., np.random.Generator]


def _r(v: float) -> float:
    return round(float(v), 4)


def random_pose(rng: np.random.Generator, x=0.5, y=0.5, dxy=0.05, r=(0.3, 0.36), angle=15.0) -> list[float]:
    return [
        _r(x + rng.uniform(-dxy, dxy)),
        _r(y + rng.uniform(-dxy, dxy)),
        _r(rng.uniform(*r)),
        _r(rng.uniform(-angle, angle)),
    ]


def random_offset(rng: np.random.Generator) -> list[float]:
    return [_r(rng.uniform(0, TILE - 1)), _r(rng.uniform(0, TILE - 1))]


def _need(recipe: dict, key: str, known=None) -> Any:
    if key not in recipe:
        raise ValueError(f"{recipe.get('operator', 'recipe')} recipe lacks {key!r}")
    value = recipe[key]
    if known is not None and value not in known:
        raise ValueError(f"unknown name {value!r} in recipe field {key!r}")
    return value


class Recipe(ABC):
    """Base: subclasses define the combinations, the sampling of one recipe, and its rendering.

    Made as `cls(operator, config, rng)`: the registry entry's name (written into every recipe dict), the world's
    config, and the entry's random streams of the world.
    """

    # Test splits this recipe draws beyond "train" and "test" (an entry's `extra_test_splits` names which), each
    # with its stable random-stream id (never change one: it fixes every sample's jitter).
    extra_splits: dict[str, int] = {}

    def __init__(self, operator: str, config: WorldConfig, rng: Streams):
        self.operator = operator
        # the world's configured shapes, textures, scenes and edits
        self.names = {
            "shapes": config.shapes,
            "textures": config.textures,
            "scenes": config.scenes,
            "edits": config.edits,
        }

    def training_only(self, count: int, rng: np.random.Generator) -> list[Combo]:
        """`count` extra training combinations that are never candidate classes (more diversity than the candidate
        grid holds); none unless the recipe has a source of them."""
        return []

    def extra_split(self, split: str, combos: list[Combo]) -> list[Combo]:
        """The combinations of one of `extra_splits`, out of all of them."""
        raise ValueError(f"the {type(self).__name__.lower()} recipe draws no {split!r} split")

    @abstractmethod
    def combos(self) -> list[Combo]:
        """Every candidate target class, as hashable combinations of names."""

    @abstractmethod
    def components(self, combo: Combo) -> tuple[str, ...]:
        """The parts a combination is made of (each must keep training examples when combinations are held out)."""

    @abstractmethod
    def class_of(self, combo: Combo) -> str:
        """The class key, e.g. "obj=star|tex=wood"."""

    @abstractmethod
    def make(self, combo: Combo, rng: np.random.Generator, split: str) -> dict:
        """A recipe for one sample of this combination, with its jitter drawn from rng."""

    @abstractmethod
    def combo_of(self, recipe: dict) -> Combo:
        """The combination a recipe renders (validating its names: ValueError on unknown ones)."""

    @abstractmethod
    def input_classes(self, recipe: dict) -> list[str | None]:
        """One class key per registry slot (None for an empty slot)."""

    @abstractmethod
    def render_inputs(self, recipe: dict, size: int) -> list[Image.Image | str | None]:
        """The inputs, one per registry slot: images, the word for a text slot, None for an empty slot."""

    @abstractmethod
    def render_target(self, recipe: dict, size: int) -> Image.Image:
        """The rendered ground-truth target."""


def procedural_combos(count: int, partners: tuple[str, ...], rng: np.random.Generator) -> list[Combo]:
    """(procedural object, partner) combinations, each object with one partner; the partners are dealt in shuffled
    rounds, so every texture, scene or word meets count / len(partners) new objects."""
    if count < 1:
        return []
    order = np.concatenate([rng.permutation(len(partners)) for _ in range(-(-count // len(partners)))])
    return [(procedural_name(i), partners[int(order[i])]) for i in range(count)]


class Texturing(Recipe):
    def training_only(self, count, rng):
        return procedural_combos(count, self.names["textures"], rng)

    def combos(self):
        return [(s, t) for s in self.names["shapes"] for t in self.names["textures"]]

    def components(self, combo):
        return (f"obj={combo[0]}", f"tex={combo[1]}")

    def class_of(self, combo):
        return f"obj={combo[0]}|tex={combo[1]}"

    def make(self, combo, rng, split):
        return {
            "operator": self.operator,
            "object": combo[0],
            "texture": combo[1],
            "pose": random_pose(rng),
            "texture_offset": random_offset(rng),
            "patch_offset": random_offset(rng),
        }

    def combo_of(self, recipe):
        return (_need(recipe, "object", SHAPES), _need(recipe, "texture", TEXTURES))

    def input_classes(self, recipe):
        return [f"obj={recipe['object']}", f"tex={recipe['texture']}"]

    def render_inputs(self, recipe, size):
        shape, texture = self.combo_of(recipe)
        return [
            R.plain_object(shape, _need(recipe, "pose"), size),
            R.texture_patch(texture, _need(recipe, "patch_offset"), size),
        ]

    def render_target(self, recipe, size):
        shape, texture = self.combo_of(recipe)
        return R.textured_object(shape, _need(recipe, "pose"), texture, _need(recipe, "texture_offset"), size)


class Union(Recipe):
    def combos(self):
        return [tuple(sorted(p)) for p in combinations(self.names["shapes"], 2)]

    def components(self, combo):
        return tuple(f"obj={s}" for s in combo)

    def class_of(self, combo):
        return f"obj={combo[0]}+{combo[1]}"

    def make(self, combo, rng, split):
        objects = list(combo) if rng.random() < 0.5 else [combo[1], combo[0]]  # slot order A/B is jitter
        left = int(rng.integers(2))  # which object stands on the left of the target
        targets = [
            random_pose(rng, x=0.27, dxy=0.03, r=(0.18, 0.21)),
            random_pose(rng, x=0.73, dxy=0.03, r=(0.18, 0.21)),
        ]
        if left == 1:
            targets.reverse()
        return {
            "operator": self.operator,
            "objects": objects,
            "poses": [random_pose(rng), random_pose(rng)],
            "target_poses": targets,
        }

    def combo_of(self, recipe):
        objects = _need(recipe, "objects")
        if len(objects) != 2 or any(o not in SHAPES for o in objects) or objects[0] == objects[1]:
            raise ValueError(f"union recipe needs two different known objects, got {objects!r}")
        return tuple(sorted(objects))

    def input_classes(self, recipe):
        return [f"obj={o}" for o in recipe["objects"]]

    def render_inputs(self, recipe, size):
        self.combo_of(recipe)
        return [R.plain_object(o, p, size) for o, p in zip(recipe["objects"], _need(recipe, "poses"))]

    def render_target(self, recipe, size):
        self.combo_of(recipe)
        return R.object_pair(tuple(recipe["objects"]), tuple(_need(recipe, "target_poses")), size)


class Scene(Recipe):
    def training_only(self, count, rng):
        return procedural_combos(count, self.names["scenes"], rng)

    def combos(self):
        return [(s, b) for s in self.names["shapes"] for b in self.names["scenes"]]

    def components(self, combo):
        return (f"obj={combo[0]}", f"scene={combo[1]}")

    def class_of(self, combo):
        return f"obj={combo[0]}|scene={combo[1]}"

    def make(self, combo, rng, split):
        pose = random_pose(rng, y=0.56, dxy=0.08, r=(0.22, 0.27), angle=10.0)
        offset = _r(rng.uniform(0, WIDTH - 1))
        return {"operator": self.operator, "object": combo[0], "scene": combo[1], "pose": pose, "scene_offset": offset}

    def combo_of(self, recipe):
        return (_need(recipe, "object", SHAPES), _need(recipe, "scene", SCENES))

    def input_classes(self, recipe):
        return [f"obj={recipe['object']}", f"scene={recipe['scene']}"]

    def render_inputs(self, recipe, size):
        shape, scene = self.combo_of(recipe)
        return [
            R.plain_object(shape, _need(recipe, "pose"), size),
            R.scene_image(scene, _need(recipe, "scene_offset"), size),
        ]

    def render_target(self, recipe, size):
        shape, scene = self.combo_of(recipe)
        return R.object_in_scene(shape, _need(recipe, "pose"), scene, _need(recipe, "scene_offset"), size)


class Instruct(Recipe):
    # Every combination again, each word replaced by a synonym never seen in training.
    extra_splits = {SYNONYM_SPLIT: 3}

    def extra_split(self, split, combos):
        if split != SYNONYM_SPLIT:
            return super().extra_split(split, combos)
        return [k for k in combos if synonyms_of(k[1])]

    def training_only(self, count, rng):
        return procedural_combos(count, self.names["edits"], rng)

    def combos(self):
        return [(s, e) for s in self.names["shapes"] for e in self.names["edits"]]

    def components(self, combo):
        return (f"obj={combo[0]}", f"edit={combo[1]}")

    def class_of(self, combo):
        return f"obj={combo[0]}|edit={combo[1]}"

    def make(self, combo, rng, split):
        word = combo[1]
        if split == SYNONYM_SPLIT:
            word = str(rng.choice(synonyms_of(combo[1])))
        elif split == "train" and rng.random() < 0.5:
            # half the training samples say another word for the edit, half the edit's own (what its test
            # combinations say)
            word = str(rng.choice(training_words_of(combo[1])[1:]))
        pose = random_pose(rng, dxy=0.04, r=(0.28, 0.33))
        return {"operator": self.operator, "object": combo[0], "word": word, "edit": combo[1], "pose": pose}

    def combo_of(self, recipe):
        shape, word, edit = _need(recipe, "object", SHAPES), _need(recipe, "word"), _need(recipe, "edit", EDITS)
        if word != edit and SYNONYMS.get(word) != edit and TRAINING_WORDS.get(word) != edit:
            raise ValueError(f"instruct word {word!r} does not mean edit {edit!r}")
        return (shape, edit)

    def input_classes(self, recipe):
        return [f"obj={recipe['object']}", f"word={recipe['word']}"]

    def render_inputs(self, recipe, size):
        shape, _ = self.combo_of(recipe)
        return [R.plain_object(shape, _need(recipe, "pose"), size), recipe["word"]]

    def render_target(self, recipe, size):
        shape, edit = self.combo_of(recipe)
        return R.edited_object(shape, _need(recipe, "pose"), edit, size)


class Composition(Recipe):
    def __init__(self, operator, config, rng):
        super().__init__(operator, config, rng)
        self.garments = config.garments_per_figure
        self.outfits = make_outfits(config.outfits, config.garments_per_figure, rng("outfits"))

    def combos(self):
        return [_outfit_combo(o) for o in self.outfits]

    def training_only(self, count, rng):
        # More outfits of the same garments, none of them a candidate outfit (held-out ones included).
        lo, hi = self.garments
        outfits = make_outfits(len(self.outfits) + count, (lo, hi), rng, first=self.outfits)
        return [_outfit_combo(o) for o in outfits[len(self.outfits) :]]

    def components(self, combo):
        return tuple(f"{s}={v}" for s, v in combo)

    def class_of(self, combo):
        return outfit_class(dict(combo))

    def make(self, combo, rng, split):
        figure = [_r(0.5 + rng.uniform(-0.04, 0.04)), _r(0.5 + rng.uniform(-0.015, 0.015)), _r(rng.uniform(0.88, 0.96))]
        crops = {
            s: [_r(rng.uniform(0.88, 1.0)), _r(rng.uniform(-0.03, 0.03)), _r(rng.uniform(-0.03, 0.03))]
            for s, _ in combo
        }
        return {"operator": self.operator, "outfit": dict(combo), "figure": figure, "crops": crops}

    def combo_of(self, recipe):
        outfit = _need(recipe, "outfit")
        for slot, variant in outfit.items():
            if slot not in GARMENTS or variant not in GARMENTS[slot]:
                raise ValueError(f"unknown garment {slot}={variant!r} in composition recipe")
        return _outfit_combo(outfit)

    def input_classes(self, recipe):
        outfit = recipe["outfit"]
        return [f"{s}={outfit[s]}" if s in outfit else None for s in COMPOSITION_SLOTS]

    def render_inputs(self, recipe, size):
        outfit = dict(self.combo_of(recipe))
        crops = _need(recipe, "crops")
        return [R.garment_crop(s, outfit[s], tuple(crops[s]), size) if s in outfit else None for s in COMPOSITION_SLOTS]

    def render_target(self, recipe, size):
        return R.dressed_figure(dict(self.combo_of(recipe)), tuple(_need(recipe, "figure")), size)


def _outfit_combo(outfit: dict[str, str]) -> Combo:
    return tuple((s, outfit[s]) for s in COMPOSITION_SLOTS if s in outfit)


def make_outfits(
    count: int, garments: tuple[int, int], rng: np.random.Generator, first: list[dict[str, str]] = ()
) -> list[dict[str, str]]:
    """`count` distinct outfits of garments[0]..garments[1] garments (composition's classes), starting with `first`."""
    lo, hi = garments
    found: dict[str, dict[str, str]] = {outfit_class(o): o for o in first}
    stalled = 0
    while len(found) < count:
        outfit = random_outfit(rng, lo, hi)
        key = outfit_class(outfit)
        if len(outfit) < lo or key in found:
            stalled += 1
            if stalled > 3000:  # the space of lo..hi outfits is (practically) exhausted
                raise ValueError(f"cannot make {count} distinct outfits of {lo}-{hi} garments; lower outfits")
            continue
        found[key], stalled = outfit, 0
    return list(found.values())


# Registry `recipe` name -> recipe class.
WORLD_RECIPES: dict[str, type[Recipe]] = {
    "texturing": Texturing,
    "union": Union,
    "scene": Scene,
    "instruct": Instruct,
    "composition": Composition,
}
