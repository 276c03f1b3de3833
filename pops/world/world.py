"""The embedded world: configuration, held-out splits, samples with exact ground truth, galleries of every class."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from pops.base.registry import REGISTRY, get_spec
from pops.base.schema import from_mapping
from pops.world import render as R
from pops.world.edits import EDITS, WordEdit, instruct_words
from pops.world.figure import GARMENTS, max_garments
from pops.world.recipes import WORLD_RECIPES, Recipe, random_pose
from pops.world.scenes import SCENE_NAMES
from pops.world.shapes import SHAPE_NAMES
from pops.world.splits import choose_holdout
from pops.world.textures import TEXTURE_NAMES

# The splits samples are drawn from: every operator's "train" and "test", and the extra test splits of the registry.
SPLITS = ("train", "test", *dict.fromkeys(s for spec in REGISTRY.values() for s in spec.extra_test_splits))
# Stable integers that namespace the random streams of an operator (never reorder: they fix every sample's jitter).
# An operator's stream is `spec.stream_id`; a recipe's extra test splits bring their own ids (Recipe.extra_splits).
_STREAM_IDS = {
    "train": 1,
    "test": 2,
    "gallery": 4,
    "holdout": 5,
    "outfits": 6,
    "order": 7,
    "training_only": 8,
    "validation": 9,
}


def _operator_stream_ids() -> dict[str, int]:
    """Operator name -> its registry stream id; two entries sharing an id would draw the same samples."""
    ids: dict[int, str] = {}
    for spec in REGISTRY.values():
        if spec.stream_id in ids:
            raise ValueError(
                f"operators {ids[spec.stream_id]!r} and {spec.kind!r} share the world stream id {spec.stream_id}"
            )
        ids[spec.stream_id] = spec.kind
    return {name: stream_id for stream_id, name in ids.items()}


def _names(given, known: tuple[str, ...], what: str, minimum: int) -> tuple[str, ...]:
    if given is None:
        return known
    names = tuple(given)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate {what} names in {list(names)}")
    if len(names) < minimum:
        raise ValueError(f"the world needs at least {minimum} {what}, got {len(names)}")
    return names


@dataclass(frozen=True)
class WorldConfig:
    """What the world contains. None for a name list means "all of them"; names are validated on construction."""

    seed: int = 0
    image_size: int = 224
    holdout: float = 0.2  # share of each operator's combinations that never appears as a training target
    shapes: tuple[str, ...] | None = None
    textures: tuple[str, ...] | None = None
    scenes: tuple[str, ...] | None = None
    edits: tuple[str, ...] | None = None  # instruct's training words (each an edit); synonyms follow them
    outfits: int = 120  # distinct garment combinations (composition's classes)
    garments_per_figure: tuple[int, int] = (3, 7)
    # operator -> extra training combinations that are never candidate classes: procedural objects (texturing,
    # scene, instruct) and further outfits (composition). They add diversity, not classes: the candidates and the
    # held-out combinations are the same with or without them.
    training_only: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.image_size, (int, np.integer)) or not 32 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be an integer in [32, 1024], got {self.image_size!r}")
        if not 0.0 <= float(self.holdout) < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        object.__setattr__(self, "shapes", _names(self.shapes, SHAPE_NAMES, "shapes", 2))
        object.__setattr__(self, "textures", _names(self.textures, TEXTURE_NAMES, "textures", 1))
        object.__setattr__(self, "scenes", _names(self.scenes, SCENE_NAMES, "scenes", 1))
        object.__setattr__(self, "edits", _names(self.edits, tuple(EDITS), "edits", 1))
        lo, hi = (int(v) for v in self.garments_per_figure)
        if not 1 <= lo <= hi <= max_garments():
            raise ValueError(f"garments_per_figure must satisfy 1 <= min <= max <= {max_garments()}, got {(lo, hi)}")
        object.__setattr__(self, "garments_per_figure", (lo, hi))
        if not isinstance(self.training_only, dict):
            raise ValueError(f"training_only must map operators to counts, got {self.training_only!r}")
        for operator, count in self.training_only.items():
            get_spec(operator)
            if not isinstance(count, (int, np.integer)) or count < 0:
                raise ValueError(f"training_only[{operator!r}] must be a non-negative integer, got {count!r}")
        if int(self.outfits) < 2:
            raise ValueError(f"outfits must be at least 2, got {self.outfits}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldConfig:
        """From a YAML/JSON mapping; unknown keys are an error (a typo must not silently change the world)."""
        return from_mapping(cls, data, what="world config")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass
class WorldSample:
    """One (inputs, target) pair with its ground truth. `recipe` re-renders it exactly with World.render."""

    operator: str
    inputs: list[Image.Image | str | None]
    target: Image.Image
    target_class: str
    input_classes: list[str | None]
    recipe: dict
    split: str = "train"


class World:
    """Procedural images with exact ground truth for every operator in the registry."""

    def __init__(self, config: WorldConfig | None = None):
        self.config = config if config is not None else WorldConfig()
        c = self.config
        self._stream_ids = _operator_stream_ids()
        self._recipes: dict[str, Recipe] = {}
        self._splits: dict[str, dict[str, list]] = {}
        for spec in REGISTRY.values():
            if spec.recipe not in WORLD_RECIPES:  # a new registry entry needs a world recipe too
                raise ValueError(
                    f"operator {spec.kind!r}: the world has no recipe {spec.recipe!r}; "
                    f"known: {', '.join(WORLD_RECIPES)}"
                )
            recipe = WORLD_RECIPES[spec.recipe](spec.kind, c, partial(self._rng, spec.kind))
            combos = recipe.combos()
            held = choose_holdout(
                combos, [recipe.components(k) for k in combos], c.holdout, self._rng(spec.kind, "holdout"), spec.kind
            )
            splits = {
                "all": combos,
                "train": [k for k in combos if k not in held]
                + recipe.training_only(c.training_only.get(spec.kind, 0), self._rng(spec.kind, "training_only")),
                "test": [k for k in combos if k in held],
            }
            for split in spec.extra_test_splits:
                splits[split] = recipe.extra_split(split, combos)
            self._recipes[spec.kind], self._splits[spec.kind] = recipe, splits

    # ----------------------------------------------------------------------------------------------- randomness
    def _rng(self, operator: str, stream: str, *more: int) -> np.random.Generator:
        return np.random.default_rng(
            [self.config.seed, self._stream_ids[operator], self._stream_id(operator, stream), *more]
        )

    def _stream_id(self, operator: str, stream: str) -> int:
        """The id of a split's or a purpose's stream; an extra test split's id comes from the operator's recipe."""
        if stream in _STREAM_IDS:
            return _STREAM_IDS[stream]
        return self._recipes[operator].extra_splits[stream]

    # ----------------------------------------------------------------------------------------------- queries
    def _recipe(self, operator: str) -> Recipe:
        get_spec(operator)  # a ValueError naming the known operators
        return self._recipes[operator]

    def _combos(self, operator: str, split: str) -> list:
        splits = self._splits[self._recipe(operator).operator]
        if split not in splits:
            valid = ", ".join(splits)
            raise ValueError(f"unknown split {split!r} for {operator}; valid: {valid}")
        return splits[split]

    def classes(self, operator: str, split: str = "all") -> list[str]:
        """The target classes of a split ("train", "test", an extra test split of the operator, or "all" candidates)."""
        recipe = self._recipe(operator)
        return [recipe.class_of(k) for k in self._combos(operator, split)]

    def instruct_words(self) -> dict[str, WordEdit]:
        """word -> (canonical edit, "train" | "synonym") for this world's edits."""
        return instruct_words(self.config.edits)

    def garments(self) -> dict[str, tuple[str, ...]]:
        """slot -> its garment variants."""
        return {slot: tuple(variants) for slot, variants in GARMENTS.items()}

    def summary(self) -> dict[str, Any]:
        """Counts for reports: names per kind and classes per operator and split."""
        c = self.config
        out: dict[str, Any] = {
            "shapes": len(c.shapes),
            "textures": len(c.textures),
            "scenes": len(c.scenes),
            "edits": len(c.edits),
        }
        out["classes"] = {op: {s: len(v) for s, v in splits.items()} for op, splits in self._splits.items()}
        return out

    # ----------------------------------------------------------------------------------------------- rendering
    def sample_recipes(self, operator: str, split: str, n: int, seed: int = 0) -> list[dict]:
        """The recipes of `samples(...)` without rendering them (cheap)."""
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if split == "all":
            raise ValueError(
                "samples are drawn from a split: "
                f"{', '.join(s for s in self._splits[self._recipe(operator).operator] if s != 'all')}"
            )
        combos = self._combos(operator, split)
        if n and not combos:
            raise ValueError(f"{operator} has no {split} combinations (holdout={self.config.holdout})")
        recipe = self._recipe(operator)
        out, order = [], None
        for i in range(n):
            # Classes are visited in shuffled rounds, so any n covers the split evenly; sample i depends only on
            # (world seed, operator, split, seed, i), so a longer list starts with the shorter one.
            block, k = divmod(i, len(combos))
            if k == 0:
                order = self._rng(operator, "order", self._stream_id(operator, split), seed, block).permutation(
                    len(combos)
                )
            out.append(recipe.make(combos[order[k]], self._rng(operator, split, seed, i), split))
        return out

    def samples(self, operator: str, split: str, n: int, seed: int = 0, *, progress: bool = False) -> list[WorldSample]:
        """n rendered samples of a split; deterministic in (world seed, operator, split, n, seed)."""
        recipes = self.sample_recipes(operator, split, n, seed)
        return [self._sample(r, split) for r in tqdm(recipes, desc=f"render {operator} {split}", disable=not progress)]

    def class_samples(
        self, operator: str, classes: list[str], n_per_class: int, seed: int = 0, *, progress: bool = False
    ) -> list[WorldSample]:
        """n_per_class fresh samples of each of the given candidate classes, from their own random stream (split
        "validation"): e.g. more samples of the training classes a demo keeps aside to choose guidance on."""
        recipe = self._recipe(operator)
        by_class = {recipe.class_of(k): (i, k) for i, k in enumerate(self._combos(operator, "all"))}
        unknown = [c for c in classes if c not in by_class]
        if unknown:
            raise ValueError(f"not candidate classes of {operator}: {', '.join(unknown[:3])}")
        recipes = [
            recipe.make(by_class[c][1], self._rng(operator, "validation", seed, by_class[c][0], j), "validation")
            for c in classes
            for j in range(n_per_class)
        ]
        return [
            self._sample(r, "validation")
            for r in tqdm(recipes, desc=f"render {operator} validation", disable=not progress)
        ]

    def _sample(self, recipe: dict, split: str) -> WorldSample:
        inputs, target = self.render(recipe)
        rec = self._recipes[recipe["operator"]]
        return WorldSample(
            recipe["operator"], inputs, target, self.target_class(recipe), rec.input_classes(recipe), recipe, split
        )

    def _checked(self, recipe: dict, fn):
        """Run fn(recipe handler, image size); a malformed recipe becomes a one-line ValueError."""
        if not isinstance(recipe, dict) or "operator" not in recipe:
            raise ValueError("a recipe is a dict with an 'operator' field")
        rec = self._recipe(recipe["operator"])
        try:
            return fn(rec, self.config.image_size)
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"malformed {recipe['operator']} recipe: {exc!r}") from None

    def render(self, recipe: dict) -> tuple[list[Image.Image | str | None], Image.Image]:
        """(inputs, target) re-rendered from a recipe: pixel-identical to the sample it came from."""
        return self._checked(
            recipe, lambda rec, size: (rec.render_inputs(recipe, size), rec.render_target(recipe, size))
        )

    def render_target(self, recipe: dict) -> Image.Image:
        """Only the target of a recipe (cheaper than render when the inputs are not needed)."""
        return self._checked(recipe, lambda rec, size: rec.render_target(recipe, size))

    def target_class(self, recipe: dict) -> str:
        """The ground-truth class key of a recipe (jitter-independent)."""
        return self._checked(recipe, lambda rec, size: rec.class_of(rec.combo_of(recipe)))

    def class_gallery(
        self, operator: str, n_per_class: int, seed: int = 0, *, progress: bool = False
    ) -> list[tuple[str, Image.Image]]:
        """n_per_class jittered renderings of the target of EVERY candidate class (train and held-out)."""
        if not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
            raise ValueError(f"n_per_class must be a positive integer, got {n_per_class!r}")
        recipe = self._recipe(operator)
        out = []
        combos = self._combos(operator, "all")
        for ci, combo in enumerate(tqdm(combos, desc=f"render {operator} gallery", disable=not progress)):
            cls = recipe.class_of(combo)
            for j in range(n_per_class):
                r = recipe.make(combo, self._rng(operator, "gallery", seed, ci, j), "gallery")
                out.append((cls, recipe.render_target(r, self.config.image_size)))
        return out

    # ----------------------------------------------------------------------------------------------- single inputs
    def object_image(self, shape: str, seed: int = 0) -> Image.Image:
        """A plain object on white, as operators take it (for equations and demos)."""
        _names((shape,), SHAPE_NAMES, "shapes", 1)
        rng = np.random.default_rng([self.config.seed, 100, seed])
        return R.plain_object(shape, random_pose(rng), self.config.image_size)

    def texture_image(self, texture: str, seed: int = 0) -> Image.Image:
        _names((texture,), TEXTURE_NAMES, "textures", 1)
        rng = np.random.default_rng([self.config.seed, 101, seed])
        return R.texture_patch(texture, (float(rng.uniform(0, 1)), float(rng.uniform(0, 1))), self.config.image_size)

    def scene_image(self, scene: str, seed: int = 0) -> Image.Image:
        _names((scene,), SCENE_NAMES, "scenes", 1)
        rng = np.random.default_rng([self.config.seed, 102, seed])
        return R.scene_image(scene, float(rng.uniform(0, 0.5)), self.config.image_size)

    def garment_image(self, slot: str, variant: str, seed: int = 0) -> Image.Image:
        if slot not in GARMENTS or variant not in GARMENTS[slot]:
            raise ValueError(f"unknown garment {slot}={variant!r}")
        rng = np.random.default_rng([self.config.seed, 103, seed])
        jitter = (float(rng.uniform(0.88, 1.0)), float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03)))
        return R.garment_crop(slot, variant, jitter, self.config.image_size)
