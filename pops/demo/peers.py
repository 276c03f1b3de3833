"""The peers a user would pick instead of a trained operator, built from the demo's training data and scored beside
it on the same held-out pairs: the subspace operator (IP-Composer's concept subspaces through the aligned text space,
training-free; pops.operators.subspace) and a ridge regression (pops.evaluation.peers).

Both see the training classes only: the subspaces come from the captions of the training classes (their rank is
chosen on validation classes), the ridge map is fitted on the training pairs (its strength chosen on validation). The
subspace operators are saved as `OUT/operators/subspace/`, a models folder of their own (`pops apply --models
OUT/operators/subspace`).
"""

from __future__ import annotations

import torch

from pops.encoders import each_text_once
from pops.evaluation import MetricsTable, evaluate_embeddings, row_name
from pops.evaluation.harness import hits, true_classes
from pops.evaluation.metrics import class_prototypes
from pops.evaluation.peers import Ridge, fit_ridge
from pops.operators.subspace import SubspaceOperator, SubspaceOperators, build_subspace_operator
from pops.world.captions import SLOT_FACTORS, caption, factors

SUBSPACE_FOLDER = "subspace"
SUBSPACE_METHOD, RIDGE_METHOD = "subspace", "ridge"
RANKS = (1, 2, 4, 8, 16)


def concept_captions(kind: str, train) -> list[list[tuple[str, tuple]] | None]:
    """Per slot, the captions of the training classes that vary its factor, each keyed by every other factor (None
    for the base slot, the first, of the operators that have one: composition has none)."""
    names = SLOT_FACTORS[kind]
    classes = train.info["classes"]
    said = {}
    for i, class_id in enumerate(train.class_ids.tolist()):
        if class_id >= 0:
            said.setdefault((classes[class_id], train.info["recipes"][i].get("word")), None)
    out = []
    for slot, name in enumerate(names):
        if slot == 0 and kind != "composition":
            out.append(None)
            continue
        entries = []
        for key, word in said:
            f = factors(key)
            if name in f:
                entries.append((caption(key, word), tuple(sorted((k, v) for k, v in f.items() if k != name))))
        out.append(entries)
    return out


def subspace_operator(kind: str, data, tower, encoders: dict) -> SubspaceOperator:
    """The subspace operator of `kind` whose rank scores the best validation top-1 (the smallest of equals)."""
    captions = concept_captions(kind, data.train)
    settings = dict(radius=float(tower.tower.image_radius), encoder_configs=encoders, text_width=tower.width)
    if kind == "composition":  # no base picture: every garment on the training outfits' mean
        settings["base_embedding"] = data.train.target.float().mean(0)
    texts = [text for slot in captions if slot for text, _ in slot]
    known = dict(zip(texts, each_text_once(tower.encode, texts)))  # each caption through the tower once

    def embed(texts: list[str]) -> torch.Tensor:
        return torch.stack([known[t] for t in texts])

    best, best_score = None, -1.0
    for rank in RANKS:
        op = build_subspace_operator(kind, captions, embed, tower.tower.image_mean, rank, **settings)
        if data.validation is None:
            return op
        score = float(hits(op.sample_batch(data.validation), data.validation, data).mean())
        if score > best_score:
            best, best_score = op, score
    return best


def build_peers(config, data: dict, tower, encoders: dict) -> dict[str, dict]:
    """Per operator, its peers: {"subspace": SubspaceOperator, "ridge": Ridge} (an operator whose inputs' factors
    the world's captions cannot name, such as a registry entry added for one's own data, gets ridge alone); the
    subspace operators saved under OUT/operators/subspace."""
    peers = {}
    for kind, d in data.items():
        peers[kind] = {RIDGE_METHOD: fit_ridge(d.train, d.validation, d.gallery, d.gallery_classes)}
        if kind in SLOT_FACTORS:
            peers[kind][SUBSPACE_METHOD] = subspace_operator(kind, d, tower, encoders[kind])
    subspace = {k: p[SUBSPACE_METHOD] for k, p in peers.items() if SUBSPACE_METHOD in p}
    if subspace:
        SubspaceOperators(subspace).save_pretrained(config.out / "operators" / SUBSPACE_FOLDER)
    return peers


def peer_table(data: dict, peers: dict[str, dict]) -> tuple[MetricsTable, dict]:
    """The peers scored on every operator's test splits (deterministic: one run each), and their outputs."""
    table, outputs = MetricsTable(), {}
    for kind, methods in peers.items():
        d = data[kind]
        names, protos = class_prototypes(d.gallery, d.gallery_classes)
        for split, pairs in d.tests.items():
            row = row_name(kind, split)
            for method, peer in methods.items():
                out = peer.predict(pairs) if isinstance(peer, Ridge) else peer.sample_batch(pairs)
                scores = evaluate_embeddings(out, pairs.target, true_classes(pairs, d), names, protos)
                table.add(row, method, **scores, n=len(pairs))
                outputs[f"{row}/{method}"] = out
    return table, outputs
