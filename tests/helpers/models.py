"""Models folders as `pops eval`, equations and the UI read them: operators/<kind>/ and data/<kind>-test|gallery."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers.pairs import make_pairs


def models_folder(root: Path, op, *, classes=("a", "b"), test=None, gallery=None, gallery_meta=None) -> Path:
    """`op` saved under root/operators/<kind>/, with what `pops eval` scores it on under root/data/: test pairs (by
    default 8 random samples of classes 0, 1 in turn) and a gallery of one random embedding per class."""
    from pops.embeddings.io import save_embeddings

    kind = op.kind
    op.save_pretrained(root / "operators" / kind)
    g = torch.Generator().manual_seed(1)
    if test is None:
        classes_of = {"class_ids": torch.tensor([0, 1] * 4), "info": {"classes": list(classes)}}
        test = make_pairs(kind, 8, op.embedding_dim, learnable=False, **classes_of)
    test.save(root / "data" / f"{kind}-test.safetensors")
    gallery = gallery if gallery is not None else torch.randn(len(classes), test.target.shape[1], generator=g)
    meta = {"operator": kind, "classes": list(classes)} if gallery_meta is None else gallery_meta
    save_embeddings(root / "data" / f"{kind}-gallery.safetensors", gallery, meta)
    return root


def write_union_test_data(folder: Path) -> None:
    """What `pops eval` scores, for union on 32-d embeddings: 6 test pairs of 3 classes and their gallery."""
    from pops.embeddings.io import save_embeddings
    from pops.embeddings.pairs import Pairs

    g = torch.Generator().manual_seed(0)
    classes = ["a", "b", "c"]
    slots = [torch.randn(6, 32, generator=g), torch.randn(6, 32, generator=g)]
    pairs = Pairs("union", slots, torch.ones(6, 2, dtype=torch.bool), torch.randn(6, 32, generator=g))
    pairs.class_ids, pairs.info = torch.tensor([0, 1, 2, 0, 1, 2]), {"classes": classes}
    pairs.save(folder / "union-test.safetensors")
    gallery = torch.randn(3, 32, generator=g)
    save_embeddings(folder / "union-gallery.safetensors", gallery, {"operator": "union", "classes": classes})
