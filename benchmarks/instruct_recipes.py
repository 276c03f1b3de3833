"""Instruct's recipes side by side over world seeds: the paper's, the supervised one, both — in the aligned text space
(and, for scale, the supervised one on MiniLM's own token rows, no tower).

    .venv/bin/python -m benchmarks.instruct_recipes --seeds 0 1 2 3 4 [--data DIR] [--quick]

* paper: the target is the input picture's own embedding, plus the text-alignment term towards the aligned
  space's embedding of "a {word} {object}" (no edited pictures: what a real-stack user trains with);
* supervised: the world's edited picture is the target, no alignment term;
* both: the edited target and the alignment term;
* supervised, MiniLM rows: the supervised recipe conditioned on MiniLM's token rows (no text tower).

Per seed, the demo's data (world -> cache -> pairs, `pops.demo.world_pairs.build_data`; `--data DIR` reuses the
caches of `benchmarks.world_seeds`' seed folders DIR/seed<N>), then per recipe: training as the demo trains instruct,
the sampling chosen on validation classes as the demo chooses it, then the held-out test classes and held-out
synonyms scored at the demo's sampling seeds. Each cell: validation top-1 (of the chosen sampling) / held-out gap
closed; synonyms: top-1. The demo keeps as its default the recipe validation prefers (`DemoConfig.instruct_recipe`).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

import torch

from pops.demo.operators import give_sampling, training_settings
from pops.demo.plan import DemoConfig, quick_config
from pops.demo.world_pairs import build_data
from pops.embeddings.cache import EmbeddingCache
from pops.encoders.efficientnet import EfficientNetEncoder
from pops.encoders.minilm import MiniLMEncoder
from pops.evaluation import evaluate_operators
from pops.train import Trainer, config_from_dict
from pops.world import World

RECIPES = ("paper", "supervised", "both", "supervised, MiniLM rows")


def instruct_data(config: DemoConfig):
    """Instruct's data for this config (through the text tower unless the config turns it off)."""
    cache = EmbeddingCache(config.cache_dir, EfficientNetEncoder(config.encoder_resolution))
    data, _ = build_data(config, World(config.world_config()), cache, MiniLMEncoder())
    return data["instruct"]


def score(config: DemoConfig, data) -> dict[str, float]:
    """Train instruct on `data` as the demo does, choose its sampling on validation, score it on the tests."""
    torch.manual_seed(config.seed)
    settings = training_settings(config, "instruct")
    trainer = Trainer(config_from_dict(settings), pairs=data.train)
    trainer.run()
    op = trainer.operator
    choice = give_sampling(op, data, config)
    table, _ = evaluate_operators({"instruct": op}, {"instruct": data}, seeds=config.eval_seeds, extra_seeds=0)
    out = {"validation": choice["candidates"][choice["chosen"]]["top1"]}
    for row in table.operators():
        gap = table.gap_closed(row, "pops")
        out[row] = table.get(row, "pops").top1 if "synonyms" in row else gap
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--data", type=Path, default=None, help="reuse the caches of DIR/seed<N> (world_seeds)")
    parser.add_argument("--out", type=Path, default=Path("outputs/instruct_recipes"))
    parser.add_argument("--quick", action="store_true", help="the quick world (a smoke test, not the result)")
    args = parser.parse_args(argv)
    cells: dict[str, dict[str, list[float]]] = {r: {} for r in RECIPES}
    for seed in args.seeds:
        folder = (args.data or args.out) / f"seed{seed}"
        make = quick_config if args.quick else DemoConfig
        base = make(out=args.out / f"seed{seed}", cache_dir=folder / "cache", seed=seed)
        base = replace(base, progress=False)
        for recipe in RECIPES:
            tower = recipe != "supervised, MiniLM rows"
            config = replace(base, text_tower=tower, instruct_recipe=recipe.split(",")[0])
            for row, value in score(config, instruct_data(config)).items():
                cells[recipe].setdefault(row, []).append(value)
            print(f"seed {seed} {recipe}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in cells[recipe].items()))
    print("\nrecipe (mean / worst over seeds): validation top-1 | held-out gap closed | synonyms top-1")
    for recipe, rows in cells.items():
        print(f"{recipe:<26}" + " | ".join(f"{statistics.fmean(v):.3f} / {min(v):.3f}" for v in rows.values()))


if __name__ == "__main__":
    main()
