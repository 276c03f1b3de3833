"""The demo's data: world samples -> embeddings through the cache -> `Pairs` per operator and split.

Splits: "train" (training classes; a share of these classes is kept aside as "validation", to choose the guidance
scale), "test" (the world's held-out classes) and, for instruct, "test_synonyms" (held-out words).
"""

from __future__ import annotations

from functools import partial

import torch

from pops.base.registry import get_spec
from pops.demo.text_space import text_tower, through_tower
from pops.embeddings.pairs import PairRow, assemble_pairs
from pops.encoders import each_text_once
from pops.evaluation import OperatorData


def make_pairs(world, kind: str, split: str, n: int, seed: int, cache, text_encoder, *, progress: bool = True):
    """n samples of one split as a `Pairs` set (see samples_to_pairs)."""
    samples = world.samples(kind, split, n, seed, progress=progress)
    return samples_to_pairs(world, kind, split, samples, seed, cache, text_encoder, progress=progress)


def samples_to_pairs(world, kind: str, split: str, samples, seed: int, cache, text_encoder, *, progress: bool = True):
    """World samples as a `Pairs` set. Every image goes through the cache in one call (a rerun encodes nothing);
    words become MiniLM token rows. `info` keeps the class names, each sample's input classes and its recipe (which
    re-renders the sample exactly, e.g. for the report's grids)."""
    spec = get_spec(kind)
    images, rows = [], []
    for sample in samples:
        inputs = []
        for value in sample.inputs:
            if value is None or isinstance(value, str):
                inputs.append(value)  # no input, or the word of a text slot
            else:
                inputs.append(len(images))
                images.append(value)
        rows.append(PairRow(tuple(inputs), len(images)))
        images.append(sample.target)
    embeds = cache.encode(images, progress=progress)
    classes = world.classes(kind, "all")
    index = {name: i for i, name in enumerate(classes)}
    # -1: a training-only combination (a procedural object, a further outfit), never a candidate class
    class_ids = torch.tensor([index.get(s.target_class, -1) for s in samples], dtype=torch.long)
    info = {
        "split": split,
        "seed": seed,
        "classes": classes,
        "input_classes": [s.input_classes for s in samples],
        "recipes": [s.recipe for s in samples],
    }
    encode_words = partial(each_text_once, text_encoder.token_rows) if spec.text_slots else None
    return assemble_pairs(spec, rows, embeds, encode_words, class_ids=class_ids, info=info)


def split_validation(pairs, fraction: float, seed: int):
    """(train, validation): the samples of a random `fraction` of the candidate classes in `pairs` (at least one
    class when fraction > 0 and there are two or more) become validation; no class is in both. (pairs, None) for
    fraction 0."""
    classes = pairs.class_ids.unique()
    classes = classes[classes >= 0]  # validation classes are candidates (training-only combinations never are)
    count = min(len(classes) - 1, max(1, round(fraction * len(classes)))) if fraction > 0 else 0
    if count < 1:
        return pairs, None
    generator = torch.Generator().manual_seed(seed)
    held = classes[torch.randperm(len(classes), generator=generator)[:count]]
    is_val = torch.isin(pairs.class_ids, held)
    validation = pairs.subset(is_val.nonzero().squeeze(1))
    validation.info["split"] = "validation"
    return pairs.subset((~is_val).nonzero().squeeze(1)), validation


def class_galleries(config, world, cache) -> dict[str, tuple[list, torch.Tensor]]:
    """Every operator's class gallery: kind -> ([(class, PIL image)], their embeddings through the cache). The
    decoder learns from these alone, so the demo draws them first."""
    galleries = {}
    for kind in config.operators:
        gallery = world.class_gallery(kind, config.gallery_per_class, seed=config.seed, progress=config.progress)
        galleries[kind] = gallery, cache.encode([im for _, im in gallery], progress=config.progress)
    return galleries


def build_data(config, world, cache, text_encoder, galleries: dict | None = None) -> tuple[dict, object]:
    """Every operator's train/validation/test pairs and class gallery (`galleries`, as `class_galleries` gives them,
    drawn here when not given), encoded through the cache, and the text encoder the operators that take words read
    them with: with `config.text_tower`, the aligned text space trained on the training classes' captions of every
    operator (pops.demo.text_space), through which the pairs' words are read; else `text_encoder` itself."""
    galleries = galleries or class_galleries(config, world, cache)
    data = {kind: operator_data(config, world, cache, text_encoder, galleries[kind], kind) for kind in config.operators}
    texts = [kind for kind in config.operators if get_spec(kind).text_slots]
    if not config.text_tower:  # words as the text encoder gives them; no aligned space (and no subspace peer)
        return data, text_encoder
    train = {kind: d.train for kind, d in data.items()}
    tower = text_tower(config.out, train, text_encoder, steps=config.tower_steps, seed=config.seed)
    for kind in texts:
        d = data[kind]
        d.train = through_tower(d.train, tower, config.instruct_recipe, align=True)
        if d.validation is not None:
            d.validation = through_tower(d.validation, tower, config.instruct_recipe, align=False)
        d.tests = {split: through_tower(p, tower, config.instruct_recipe, align=False) for split, p in d.tests.items()}
    return data, tower


def operator_data(config, world, cache, text_encoder, gallery: tuple[list, torch.Tensor], kind: str) -> OperatorData:
    """One operator's pairs (train, validation, test splits), with its class gallery (pictures, embeddings)."""
    splits = {"train": config.train_per_class.get(kind, 1) * len(world.classes(kind, "train"))}
    splits["test"] = config.test_per_class * len(world.classes(kind, "test"))
    for split in get_spec(kind).extra_test_splits:  # e.g. instruct's synonyms, on train and held-out objects
        splits[split] = splits["test"]
    pairs = {
        s: make_pairs(world, kind, s, n, config.seed, cache, text_encoder, progress=config.progress)
        for s, n in splits.items()
    }
    gallery, embeds = gallery
    train, validation = split_validation(pairs.pop("train"), config.validation_fraction, config.seed)
    if validation is not None and config.validation_per_class:
        # The validation classes' training samples are too few to tell the candidates apart: draw fresh ones of those
        # classes, from their own stream.
        names = [validation.info["classes"][i] for i in validation.class_ids.unique().tolist()]
        samples = world.class_samples(kind, names, config.validation_per_class, config.seed, progress=config.progress)
        validation = samples_to_pairs(
            world, kind, "validation", samples, config.seed, cache, text_encoder, progress=config.progress
        )
    return OperatorData(kind, world.classes(kind, "all"), train, pairs, [c for c, _ in gallery], embeds, validation)
