"""The embedded world: procedural images with exact ground truth for every pOps operator.

    from pops.world import World, WorldConfig
    world = World(WorldConfig(seed=0, image_size=224, holdout=0.2))
    train = world.samples("texturing", "train", n=256)      # WorldSample(inputs, target, target_class, recipe, …)
    inputs, target = world.render(train[0].recipe)          # pixel-identical re-rendering
    gallery = world.class_gallery("texturing", n_per_class=2, seed=0)

Objects (pops.world.shapes), textures (textures), scenes (scenes), the dressed figure (figure) and instruct's words
(edits) are small modules; recipes.py turns them into (inputs, target) pairs, one recipe per operator.
"""

from pops.world.edits import EDITS, SYNONYMS, WordEdit
from pops.world.figure import GARMENTS
from pops.world.scenes import SCENE_NAMES
from pops.world.shapes import SHAPE_NAMES
from pops.world.textures import TEXTURE_NAMES
from pops.world.world import SPLITS, World, WorldConfig, WorldSample

__all__ = [
    "World",
    "WorldConfig",
    "WorldSample",
    "SPLITS",
    "WordEdit",
    "SHAPE_NAMES",
    "TEXTURE_NAMES",
    "SCENE_NAMES",
    "EDITS",
    "SYNONYMS",
    "GARMENTS",
]
