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

from pops.base.registry import get_spec
from pops.embeddings.io import load_embeddings, save_embeddings
from pops.embeddings.pairs import Pairs


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
        if not gallery_path.exists():
            raise FileNotFoundError(
                f"no evaluation data for {kind} in {folder}: expected {kind}-test.safetensors (test pairs with class "
                f"ids) and {kind}-gallery.safetensors (class embeddings), as `pops demo` writes them; --operator "
                "scores only some operators"
            )
        gallery, meta = load_embeddings(gallery_path)
        classes = meta.get("classes")
        if not isinstance(classes, list) or len(classes) != gallery.shape[0]:
            raise ValueError(
                f"{gallery_path}: a gallery needs one class name per embedding in its metadata "
                f"({gallery.shape[0]} embeddings, classes {'missing' if classes is None else len(classes)})"
            )
        tests = {}
        for split in ("test", *get_spec(kind).extra_test_splits):
            path = folder / f"{kind}-{split}.safetensors"
            if path.exists():
                tests[split] = Pairs.load(path)
                if tests[split].kind != kind:
                    raise ValueError(f"{path}: pairs of {tests[split].kind!r}, expected {kind!r}")
                if tests[split].class_ids is None or (tests[split].class_ids < 0).any():
                    raise ValueError(f"{path}: test pairs need class_ids (the true class of every sample)")
                if tests[split].target.shape[1] != gallery.shape[1]:
                    raise ValueError(
                        f"{path}: {tests[split].target.shape[1]}-d embeddings, the gallery is {gallery.shape[1]}-d"
                    )
        if "test" not in tests:
            raise FileNotFoundError(f"no {kind}-test.safetensors in {folder}")
        for split, pairs in tests.items():
            names = pairs.info.get("classes") or tests["test"].info.get("classes")
            if not isinstance(names, list) or int(pairs.class_ids.max()) >= len(names) or len(pairs) == 0:
                raise ValueError(
                    f"{folder / f'{kind}-{split}.safetensors'}: its class_ids name no classes in its metadata"
                )
        out[kind] = OperatorData(kind, tests["test"].info.get("classes", []), None, tests, classes, gallery)
    return out
