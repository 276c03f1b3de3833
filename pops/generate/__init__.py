"""The paper's data-generation pipelines, one module per operator (`pops generate OPERATOR ...`).

Each recipe turns (seed, sample index) into one training sample with real models (SDXL-Turbo, OWLv2, RMBG-1.4,
SD2-depth, SDXL inpainting, ATR human parsing), reached through the small callables of `pops.generate.models`
so any of them can be replaced. Output format: docs/DATA_FORMAT.md.
"""

from pops.generate.models import Detection, GenerationModels, ModelSettings, load_models
from pops.generate.runner import GENERATOR_RECIPES, GenerationSummary, generate, get_recipe
from pops.generate.storage import image_paths, iter_rejections, iter_samples, read_dataset_info
from pops.generate.texturing import cut_texture_patch

__all__ = [
    "GENERATOR_RECIPES",
    "Detection",
    "GenerationModels",
    "GenerationSummary",
    "ModelSettings",
    "cut_texture_patch",
    "generate",
    "get_recipe",
    "image_paths",
    "iter_rejections",
    "iter_samples",
    "load_models",
    "read_dataset_info",
]
