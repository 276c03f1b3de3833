"""The embedded demo: the whole system, offline on a CPU, measured against ground truth (`pops demo`).

    world (pops.world) -> images encoded once through the embedding cache (pops.embeddings.cache) -> training /
    validation / test pairs per operator (pops.demo.world_pairs) -> five small operators trained from scratch, each
    given the guidance scale that does best on its validation classes, evaluated on held-out combinations against the
    paper's averaging baseline (pops.demo.operators, two at a time in worker processes) -> rendered (retrieval and
    decoder) -> report.html (pops.demo.report)

The output folder is a models folder that `pops apply --model/--models`, `pops eval` and the UI read:

    operators/<kind>/        Operator.save_pretrained folders, with encoder configs (so they take images and words)
                             and the operator's own guidance scale
    renderer/retrieval/      nearest neighbour over the class galleries
    renderer/decoder/        the small decoder trained on world images
    data/                    training / validation / test pairs and class galleries as embeddings (`pops eval`)
    assets/                  the pictures of the chained equation in the report
    cache/                   the embedding cache (unless --cache-dir): a rerun encodes nothing
    demo.json, metrics.json, report.html
"""

from pops.demo.operators import train_operator
from pops.demo.plan import DemoConfig, choose_threads, choose_workers, format_seconds, quick_config
from pops.demo.run import DemoResult, run_demo
from pops.demo.world_pairs import build_data, make_pairs, split_validation

__all__ = [
    "DemoConfig",
    "DemoResult",
    "build_data",
    "choose_threads",
    "choose_workers",
    "format_seconds",
    "make_pairs",
    "quick_config",
    "run_demo",
    "split_validation",
    "train_operator",
]
