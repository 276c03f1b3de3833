"""The embedded demo: the whole system, offline on a CPU, measured against ground truth (`pops demo`).

    world (pops.world) -> class galleries first (the decoder starts training on them in a worker process) ->
    images encoded once through the embedding cache (pops.embeddings.cache) -> training /
    validation / test pairs per operator (pops.demo.world_pairs) -> an aligned text space learnt from the training
    captions (pops.demo.text_space) -> five small operators trained from scratch, each keeping the paper's sampling
    unless another beats it on its validation classes beyond the noise (pops.evaluation.choice), evaluated on
    held-out combinations against the paper's averaging baseline and the peers (pops.demo.peers; the operators:
    pops.demo.operators, two at a time in worker processes) -> rendered (retrieval and decoder) -> report.html
    (pops.demo.report)

The output folder is a models folder that `pops apply --model/--models`, `pops eval` and the UI read:

    operators/<kind>/        Operator.save_pretrained folders, with encoder configs (so they take images and words)
                             and the operator's own sampling; a words-reading one keeps a copy of the text tower
    operators/subspace/      the training-free peer (a models folder of its own)
    encoders/text-tower/     the aligned text space (reused while its captions and pictures are the same)
    renderers/retrieval/     nearest neighbour over the class galleries
    renderers/decoder/       the small decoder trained on world images
    data/                    training / validation / test pairs and class galleries as embeddings (`pops eval`)
    assets/                  the pictures of the chained equation in the report
    cache/                   the embedding cache (unless --cache-dir): a rerun encodes nothing
    demo.json, metrics.json, report.html
"""

# Lazy: `pops demo --help` reads pops.demo.training_recipes without torch (every name below loads on first use).
_EXPORTS = {
    "DemoConfig": "plan",
    "choose_threads": "plan",
    "choose_workers": "plan",
    "format_seconds": "plan",
    "quick_config": "plan",
    "build_data": "world_pairs",
    "make_pairs": "world_pairs",
    "split_validation": "world_pairs",
    "train_operator": "operators",
    "DemoResult": "run",
    "run_demo": "run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pops.demo' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"pops.demo.{_EXPORTS[name]}"), name)
