"""Training recipes of the demo's separate operators, compared side by side over world seeds.

    .venv/bin/python -m benchmarks.training_recipes --seeds 0 1 2 3 4 --operators texturing scene \
        --recipe shared model.dropout=0 batch_size=64 \
        --recipe "dropout, batch 128" model.dropout=0.1 batch_size=128 --data outputs/seeds

Per seed, the demo's data (world -> cache -> pairs, `pops.demo.world_pairs.build_data`; `--data DIR` reuses the caches
of `benchmarks.world_seeds`' seed folders DIR/seed<N>), then per operator and recipe: training as the demo trains it
(`training_settings` with the recipe's `key=value` overrides, as `pops train --override` takes them), guidance and
sampler chosen on validation classes exactly as the demo chooses them, and the held-out test scored at that choice.
Printed per recipe: the best validation top-1 (what a choice between recipes may look at) and the held-out gap closed
(what it is judged by), mean and worst over seeds. Synonyms: top-1.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from pops.base.registry import REGISTRY
from pops.demo.operators import give_sampling, training_settings
from pops.demo.plan import DemoConfig
from pops.evaluation import evaluate_operators
from pops.train import Trainer, config_from_dict
from pops.train.config import apply_overrides


def demo_data(seed: int, folder: Path):
    from pops.demo.world_pairs import build_data
    from pops.embeddings.cache import EmbeddingCache
    from pops.encoders.efficientnet import EfficientNetEncoder
    from pops.encoders.minilm import MiniLMEncoder
    from pops.world import World

    config = DemoConfig(out=folder, seed=seed, progress=False)
    cache = EmbeddingCache(config.cache_dir, EfficientNetEncoder(config.encoder_resolution))
    return config, build_data(config, World(config.world_config()), cache, MiniLMEncoder())[0]


def score(config: DemoConfig, kind: str, data, recipe: list[str]) -> dict[str, float]:
    """Validation top-1 and held-out gap closed (synonyms: top-1) of one operator trained with `recipe`."""
    settings = apply_overrides(training_settings(config, kind), recipe)
    with sdpa_kernel(SDPBackend.MATH):  # as the demo trains
        trainer = Trainer(config_from_dict(settings), pairs=data.train)
        trainer.run()
    op = trainer.operator
    out = {"validation": max(give_sampling(op, data, config).values())}
    table, _ = evaluate_operators({kind: op}, {kind: data}, seeds=config.eval_seeds, extra_seeds=0, progress=False)
    for row in table.operators():
        out[row] = table.get(row, "pops").top1 if row.endswith("(synonyms)") else table.gap_closed(row)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--operators", nargs="+", default=list(REGISTRY), choices=list(REGISTRY))
    parser.add_argument(
        "--recipe", action="append", nargs="+", required=True, help="NAME KEY=VALUE ...: one recipe (repeatable)"
    )
    parser.add_argument("--data", type=Path, default=Path("outputs/seeds"), help="folder of seed<N> demo folders")
    args = parser.parse_args(argv)
    recipes = {name: overrides for name, *overrides in args.recipe}
    for name, overrides in recipes.items():  # every recipe's whole training config checked before any work
        for kind in args.operators:
            try:
                config_from_dict(apply_overrides(training_settings(DemoConfig(out=args.data), kind), overrides))
            except ValueError as exc:
                raise SystemExit(f"error: --recipe {name!r}: {exc}") from None
    torch.set_num_threads(1)  # as the demo's workers
    results: dict = {}  # (recipe, row) -> {"validation": [...], "held-out": [...]}
    for seed in args.seeds:
        start = time.perf_counter()
        config, data = demo_data(seed, args.data / f"seed{seed}")
        for kind in args.operators:
            for name, recipe in recipes.items():
                scores = score(config, kind, data[kind], recipe)
                for row, value in scores.items():
                    if row != "validation":
                        cell = results.setdefault((name, row), {"validation": [], "held-out": []})
                        cell["validation"].append(scores["validation"])
                        cell["held-out"].append(value)
        print(f"seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    print(f"{'operator':<22}{'recipe':<28}{'validation top-1':>18}{'held-out mean':>15}{'worst':>8}   per seed")
    for (name, row), cell in sorted(results.items(), key=lambda item: (item[0][1], list(recipes).index(item[0][0]))):
        held = cell["held-out"]
        print(
            f"{row:<22}{name:<28}{statistics.mean(cell['validation']):>18.3f}{statistics.mean(held):>15.3f}"
            f"{min(held):>8.3f}   " + " ".join(f"{v:.3f}" for v in held)
        )
    print("(held-out: gap closed = (pops - averaging) / (oracle - averaging) of top-1; synonyms: top-1)")


if __name__ == "__main__":
    main()
