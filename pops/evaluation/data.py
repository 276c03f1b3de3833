"""The evaluation data: each operator's test pairs per split and its class gallery, as a demo writes them to a
models folder's data/ and `pops eval` reads them back.

    <kind>-train.safetensors, <kind>-validation.safetensors   training and validation Pairs (the demo's)
    <kind>-<split>.safetensors                                 test Pairs: "test" and the registry's extra test splits
    <kind>-gallery.safetensors                                 class gallery embeddings, {"classes": [...]}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pops.embeddings_io import load_embeddings, save_embeddings
from pops.pairs import Pairs
from pops.registry import get_spec


@dataclass
class OperatorData:
    """One operator's embeddings: training and validation pairs, test pairs per split, and the class gallery."""

    kind: str
    classes: list[str]
    train: Pairs | None  # None when loaded for `pops eval`
    tests: dict[str, Pairs]  # split -> Pairs ("test", then the registry's extra test splits)
    gallery_classes: list[str]
    gallery: torch.Tensor  # (M, D)
    validation: Pairs | None = None  # training classes kept out of training (None: no validation)


def save_data(data: dict[str, OperatorData], folder: Path) -> None:
    for kind, d in data.items():
        d.train.save(folder / f"{kind}-train.safetensors")
        if d.validation is not None:
            d.validation.save(folder / f"{kind}-validation.safetensors")
        for split, pairs in d.tests.items():
            pairs.save(folder / f"{kind}-{split}.safetensors")
        save_embeddings(
            folder / f"{kind}-gallery.safetensors", d.gallery, {"operator": kind, "classes": d.gallery_classes}
        )


def load_test_data(folder: Path, kinds) -> dict[str, OperatorData]:
    """The test pairs and galleries a demo saved (what `pops eval` scores), for the operators present: "test" and
    each of the registry's extra test splits that the folder holds."""
    folder = Path(folder)
    out = {}
    for kind in kinds:
        gallery_path = folder / f"{kind}-gallery.safetensors"
        if not gallery_path.is_file():
            raise FileNotFoundError(f"no evaluation data for {kind} in {folder} (run `pops demo` to write it)")
        gallery, meta = load_embeddings(gallery_path)
        tests = {}
        for split in ("test", *get_spec(kind).extra_test_splits):
            path = folder / f"{kind}-{split}.safetensors"
            if path.is_file():
                tests[split] = Pairs.load(path)
        if "test" not in tests:
            raise FileNotFoundError(f"no {kind}-test.safetensors in {folder}")
        out[kind] = OperatorData(kind, tests["test"].info.get("classes", []), None, tests, meta["classes"], gallery)
    return out
