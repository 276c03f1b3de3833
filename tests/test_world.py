"""The embedded world: determinism, exact re-rendering, held-out splits, vocabulary, galleries, bad configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pops.base.registry import COMPOSITION_SLOTS, REGISTRY
from pops.world import EDITS, SCENE_NAMES, SHAPE_NAMES, TEXTURE_NAMES, World, WorldConfig
from tests.helpers.images import pixels

OPERATORS = list(REGISTRY)
SIZE = 64  # small images keep the suite fast; rendering is resolution-independent


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(seed=0, image_size=SIZE, holdout=0.2))


@pytest.fixture(scope="module")
def small_world() -> World:
    cfg = WorldConfig(
        seed=3,
        image_size=48,
        holdout=0.25,
        shapes=("star", "heart", "house", "moon"),
        textures=("wood", "checks", "dots"),
        scenes=("beach", "night"),
        edits=("red", "big", "blurry"),
        outfits=12,
    )
    return World(cfg)


def same_images(a, b) -> bool:
    if isinstance(a, Image.Image) and isinstance(b, Image.Image):
        return a.size == b.size and a.mode == b.mode and np.array_equal(pixels(a), pixels(b))
    return a == b


def test_world_has_the_promised_variety():
    assert len(SHAPE_NAMES) >= 16 and len(TEXTURE_NAMES) >= 16 and len(SCENE_NAMES) >= 8
    for name in (
        "star",
        "heart",
        "circle",
        "square",
        "triangle",
        "cross",
        "moon",
        "ring",
        "arrow",
        "diamond",
        "hexagon",
        "pentagon",
        "teardrop",
        "cloud",
        "house",
        "tree",
    ):
        assert name in SHAPE_NAMES
    for name in ("stripes", "checks", "dots", "noise", "wood", "marble", "bricks", "zigzag"):
        assert name in TEXTURE_NAMES


@pytest.mark.parametrize("operator", OPERATORS)
def test_samples_have_registry_slots_and_configured_images(world, operator):
    spec = REGISTRY[operator]
    for s in world.samples(operator, "train", 6, seed=1):
        assert s.operator == operator and s.split == "train"
        assert len(s.inputs) == spec.num_slots == len(s.input_classes)
        for slot, x, cls in zip(spec.slots, s.inputs, s.input_classes):
            if slot.kind == "text":
                assert isinstance(x, str) and cls == f"word={x}"
            elif x is None:
                assert cls is None
            else:
                assert isinstance(x, Image.Image) and x.size == (SIZE, SIZE) and x.mode == "RGB"
        assert s.target.size == (SIZE, SIZE) and s.target.mode == "RGB"
        assert s.target_class in world.classes(operator, "all")
        json.dumps(s.recipe)  # JSON-serialisable


@pytest.mark.parametrize("operator", OPERATORS)
def test_recipe_rerenders_pixel_identically(world, operator):
    for s in world.samples(operator, "train", 4, seed=2) + world.samples(operator, "test", 2, seed=2):
        recipe = json.loads(json.dumps(s.recipe))  # through JSON, as a stored recipe would be
        inputs, target = world.render(recipe)
        assert same_images(target, s.target)
        assert len(inputs) == len(s.inputs) and all(same_images(a, b) for a, b in zip(inputs, s.inputs))
        assert world.target_class(recipe) == s.target_class


@pytest.mark.parametrize("operator", OPERATORS)
def test_same_seed_same_pixels_other_seed_other_samples(operator):
    a = World(WorldConfig(seed=5, image_size=48)).samples(operator, "train", 3, seed=7)
    b = World(WorldConfig(seed=5, image_size=48)).samples(operator, "train", 3, seed=7)
    assert [x.recipe for x in a] == [x.recipe for x in b]
    assert all(same_images(x.target, y.target) for x, y in zip(a, b))
    c = World(WorldConfig(seed=5, image_size=48)).samples(operator, "train", 3, seed=8)
    assert [x.recipe for x in a] != [x.recipe for x in c]


def test_longer_sample_lists_extend_shorter_ones(world):
    short = world.sample_recipes("scene", "train", 5, seed=4)
    long = world.sample_recipes("scene", "train", 300, seed=4)
    assert long[:5] == short


def test_samples_cover_the_split_evenly(world):
    classes = world.classes("union", "train")
    got = [world.target_class(r) for r in world.sample_recipes("union", "train", 2 * len(classes), seed=0)]
    assert sorted(got) == sorted(classes * 2)


@pytest.mark.parametrize("operator", OPERATORS)
def test_held_out_combinations_never_train(world, operator):
    train, test, everything = (set(world.classes(operator, s)) for s in ("train", "test", "all"))
    assert train and test and not (train & test) and train | test == everything
    assert len(test) == int(np.floor(0.2 * len(everything) + 0.5))
    train_seen = {world.target_class(r) for r in world.sample_recipes(operator, "train", 3 * len(train), seed=9)}
    test_seen = {world.target_class(r) for r in world.sample_recipes(operator, "test", 2 * len(test), seed=9)}
    assert train_seen == train and test_seen == test


@pytest.mark.parametrize("operator", OPERATORS)
def test_every_component_keeps_training_examples(world, operator):
    # Held-out pairs are unseen *combinations* of seen parts: every object, texture, scene, edit, garment trains.
    parts_all = {p for c in world.classes(operator, "all") for p in c.replace("+", "|obj=").split("|")}
    parts_train = {p for c in world.classes(operator, "train") for p in c.replace("+", "|obj=").split("|")}
    assert parts_all == parts_train


def test_synonyms_never_train(world):
    words = world.instruct_words()
    train_words = {w for w, we in words.items() if we.role == "train"}
    synonyms = {w for w, we in words.items() if we.role == "synonym"}
    edits = {w for w in train_words if words[w].edit == w}
    assert len(edits) >= 12 and len(synonyms) >= len(edits) and len(train_words) > len(edits)
    assert all(words[w].edit in train_words for w in synonyms) and not (train_words & synonyms)
    assert words["crimson"].edit == "red" and words["huge"].edit == "big" and words["tiny"].edit == "small"
    for split, allowed in (("train", train_words), ("test", edits), ("test_synonyms", synonyms)):
        for r in world.sample_recipes("instruct", split, 120, seed=1):
            assert r["word"] in allowed
            assert words[r["word"]].edit == r["edit"]
    assert set(world.classes("instruct", "test_synonyms")) == set(world.classes("instruct", "all"))


def test_synonym_and_training_word_render_the_same_target(world):
    recipe = world.sample_recipes("instruct", "test_synonyms", 1, seed=3)[0]
    as_trained = dict(recipe, word=recipe["edit"])
    assert same_images(world.render_target(recipe), world.render_target(as_trained))


def test_every_instruct_edit_changes_the_picture(world):
    base = world.sample_recipes("instruct", "train", 1)[0]
    plain = pixels(world.render(dict(base, object="house", word="red", edit="red"))[0][0]).astype(int)
    outputs = {}
    for edit in EDITS:
        target = pixels(world.render_target(dict(base, object="house", word=edit, edit=edit))).astype(int)
        assert np.abs(target - plain).mean() > 1.0, edit
        outputs[edit] = target
    # and no two edits give the same picture
    keys = list(outputs)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert np.abs(outputs[a] - outputs[b]).mean() > 0.5, (a, b)


def test_targets_depend_on_the_class_not_only_the_jitter(world):
    r = world.sample_recipes("texturing", "train", 1)[0]
    a = pixels(world.render_target(dict(r, texture="wood"))).astype(int)
    b = pixels(world.render_target(dict(r, texture="checks"))).astype(int)
    assert np.abs(a - b).mean() > 5
    s = world.sample_recipes("scene", "train", 1)[0]
    a = pixels(world.render_target(dict(s, scene="beach"))).astype(int)
    b = pixels(world.render_target(dict(s, scene="night"))).astype(int)
    assert np.abs(a - b).mean() > 20


def test_composition_inputs_follow_the_outfit(world):
    for s in world.samples("composition", "train", 8, seed=4):
        outfit = s.recipe["outfit"]
        lo, hi = world.config.garments_per_figure
        assert lo <= len(outfit) <= hi
        assert not ("dress" in outfit and ({"skirt", "pants", "upper_clothes"} & outfit.keys()))
        assert not ("skirt" in outfit and "pants" in outfit)
        for slot, x in zip(COMPOSITION_SLOTS, s.inputs):
            assert (x is None) == (slot not in outfit)
        # the dressed figure is not the bare figure: garments are drawn
        bare = world.render_target(dict(s.recipe, outfit={}))
        assert np.abs(pixels(bare).astype(int) - pixels(s.target).astype(int)).mean() > 1.0


def test_class_gallery_covers_every_class(small_world):
    for operator in OPERATORS:
        gallery = small_world.class_gallery(operator, n_per_class=2, seed=0)
        classes = small_world.classes(operator, "all")
        assert sorted(c for c, _ in gallery) == sorted(classes * 2)
        assert all(im.size == (48, 48) and im.mode == "RGB" for _, im in gallery)
        first = [im for c, im in gallery if c == classes[0]]
        assert not same_images(first[0], first[1])  # jittered renderings


def test_renders_at_other_sizes():
    for size in (128, 224):
        w = World(
            WorldConfig(image_size=size, shapes=("star", "tree"), textures=("bricks",), scenes=("city",), outfits=30)
        )
        for op in OPERATORS:
            s = w.samples(op, "train", 1)[0]
            assert s.target.size == (size, size)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"holdout": 1.2},
        {"holdout": -0.1},
        {"holdout": 1.0},
        {"shapes": ("star", "unicorn")},
        {"textures": ("velvet",)},
        {"scenes": ("mars",)},
        {"edits": ("sparkly",)},
        {"shapes": ("star",)},
        {"shapes": ("star", "star", "heart")},
        {"image_size": 8},
        {"seed": -1},
        {"garments_per_figure": (0, 3)},
        {"garments_per_figure": (5, 4)},
        {"garments_per_figure": (3, 12)},
        {"outfits": 1},
    ],
)
def test_bad_configs_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        World(WorldConfig(**kwargs))


def test_unsatisfiable_configs_raise_value_error():
    # Holding out 80% of 2 x 2 pairs would leave some object without a training texture.
    with pytest.raises(ValueError, match="holdout"):
        World(
            WorldConfig(
                holdout=0.8, shapes=("star", "heart"), textures=("wood", "dots"), scenes=("beach",), edits=("red",)
            )
        )
    with pytest.raises(ValueError, match="outfits"):
        World(WorldConfig(garments_per_figure=(1, 1), outfits=500))
    with pytest.raises(ValueError, match="world config: unknown key 'holdot'"):
        WorldConfig.from_dict({"holdot": 0.2})
    assert WorldConfig.from_dict({"shapes": ["star", "heart"], "holdout": 0.1}).shapes == ("star", "heart")


def test_bad_queries_raise_value_error(world):
    with pytest.raises(ValueError):
        world.samples("painting", "train", 1)
    with pytest.raises(ValueError):
        world.samples("texturing", "validation", 1)
    with pytest.raises(ValueError):
        world.samples("texturing", "test_synonyms", 1)
    with pytest.raises(ValueError):
        world.samples("texturing", "train", -1)
    with pytest.raises(ValueError):
        world.render({"operator": "texturing", "object": "unicorn", "texture": "wood"})
    with pytest.raises(ValueError):
        world.render(
            {"operator": "instruct", "object": "star", "word": "crimson", "edit": "blue", "pose": [0.5, 0.5, 0.3, 0]}
        )
    with pytest.raises(ValueError):
        world.render({"operator": "scene", "object": "star", "scene": "beach"})
    no_holdout = World(WorldConfig(holdout=0.0, image_size=32))
    assert no_holdout.classes("texturing", "test") == []
    with pytest.raises(ValueError, match="no test"):
        no_holdout.samples("texturing", "test", 1)


def test_training_only_combinations_add_diversity_not_classes():
    plain = World(WorldConfig(seed=2, image_size=64))
    richer = World(WorldConfig(seed=2, image_size=64, training_only={"instruct": 30, "composition": 25}))
    for kind in ("instruct", "composition", "union"):
        assert richer.classes(kind, "all") == plain.classes(kind, "all")
        assert richer.classes(kind, "test") == plain.classes(kind, "test")
    extra = richer.classes("instruct", "train")[len(plain.classes("instruct", "train")) :]
    assert len(extra) == 30 and all(c.startswith("obj=proc-") for c in extra)
    outfits = richer.classes("composition", "train")[len(plain.classes("composition", "train")) :]
    assert len(outfits) == 25 and not set(outfits) & set(plain.classes("composition", "all"))
    sample = richer.samples("instruct", "train", len(richer.classes("instruct", "train")), seed=0)[-1]
    assert sample.target_class.startswith("obj=proc-") and not same_images(sample.inputs[0], sample.target)
    with pytest.raises(ValueError, match="training_only"):
        WorldConfig(training_only={"instruct": -1})
    with pytest.raises(ValueError, match="training_only"):
        WorldConfig(training_only=[("instruct", 3)])


def test_class_samples_draw_fresh_samples_of_given_classes(world):
    classes = world.classes("scene", "train")[:3]
    samples = world.class_samples("scene", classes, 2, seed=0)
    assert [s.target_class for s in samples] == [c for c in classes for _ in range(2)]
    assert not same_images(samples[0].target, samples[1].target)  # own jitter per sample
    with pytest.raises(ValueError, match="not candidate classes"):
        world.class_samples("scene", ["obj=proc-1|scene=beach"], 1)
