"""The loop every recipe shares: shard the indices, skip what exists, make the rest, write atomically, count."""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

from tqdm.auto import tqdm

from pops.base.registry import REGISTRY, get_spec
from pops.generate import storage
from pops.generate.models import GenerationModels, UndecodableImage
from pops.generate.recipe import Rejected, SampleContext
from pops.generate.sharding import current_shard, gather

# The generator modules (pops.generate.<name>), as the registry names them.
GENERATOR_RECIPES = tuple(dict.fromkeys(spec.generator for spec in REGISTRY.values() if spec.generator))


def get_recipe(operator: str) -> ModuleType:
    """The generator module of an operator (ValueError for an unknown one, or one without a generator)."""
    spec = get_spec(operator)
    if not spec.generator:
        with_one = ", ".join(s.kind for s in REGISTRY.values() if s.generator)
        raise ValueError(f"operator {operator!r} has no data recipe; recipes exist for: {with_one}")
    return importlib.import_module(f"pops.generate.{spec.generator}")


def _make_one(recipe, cfg, operator, index, seed, models, out_dir, image_format, rank, mine) -> None:
    """Make, write and count sample `index` (made, rejected, or failed and logged)."""
    start = time.perf_counter()
    record = {"operator": operator, "seed": seed}
    try:
        try:
            result = recipe.make_sample(SampleContext(index=index, seed=seed, models=models), cfg)
        except UndecodableImage as exc:
            result = Rejected(str(exc))
        if isinstance(result, Rejected):
            storage.write_rejection(out_dir, index, reason=result.reason, record={**record, "meta": result.meta})
            storage.append_log(out_dir, rank, {"index": index, "status": "rejected", "reason": result.reason})
            mine.rejected += 1
        else:
            storage.write_sample(
                out_dir,
                index,
                images=result.images,
                assets=result.assets,
                image_format=image_format,
                record={**record, "meta": result.meta, "examples": result.examples},
            )
            mine.made += 1
        mine.seconds_making += time.perf_counter() - start
    except Exception as exc:  # one bad sample must not end a days-long run; it is logged and retried next run
        reason = f"{type(exc).__name__}: {exc}"
        trace = traceback.format_exc(limit=5)
        storage.append_log(out_dir, rank, {"index": index, "status": "failed", "reason": reason, "traceback": trace})
        tqdm.write(f"[rank {rank}] sample {index} failed: {reason}", file=sys.stderr)
        mine.failed += 1


@dataclass
class GenerationSummary:
    made: int = 0
    rejected: int = 0
    skipped: int = 0
    failed: int = 0
    seconds_making: float = 0.0  # wall time spent in make_sample + writing, made and rejected samples
    ranks: list[dict] = field(default_factory=list)

    @property
    def seconds_per_sample(self) -> float:
        done = self.made + self.rejected
        return self.seconds_making / done if done else 0.0

    def line(self) -> str:
        return (
            f"made {self.made}, rejected {self.rejected}, skipped {self.skipped} (already there), "
            f"failed {self.failed}; {self.seconds_per_sample:.2f} s per sample"
        )


def generate(
    operator: str,
    out_dir: str | Path,
    *,
    num_samples: int,
    seed: int = 0,
    models: GenerationModels,
    config=None,
    image_format: str = "jpg",
    progress: bool = True,
    info: dict | None = None,
) -> GenerationSummary:
    """Make samples 0 .. num_samples-1 of `operator`'s dataset in `out_dir`; this rank does its slice only.

    Samples already there (a manifest or a rejection) are skipped, so a killed run is resumed by running it again;
    a run with a larger `num_samples` extends the dataset. Returns the totals over all ranks.
    """
    recipe = get_recipe(operator)
    cfg = _checked_config(recipe, config, operator, num_samples, image_format, models)
    out_dir = Path(out_dir)
    storage.init_dataset(
        out_dir,
        {
            "operator": operator,
            "seed": seed,
            "recipe": asdict(cfg),
            "slots": list(get_spec(operator).slot_names),
            **(info or {}),
        },
    )
    shard = current_shard(range(num_samples))
    mine = GenerationSummary()
    bar = tqdm(
        shard.indices,
        desc=f"{operator} [rank {shard.rank}/{shard.world_size}]",
        unit="sample",
        position=shard.rank,
        disable=not progress,
        dynamic_ncols=True,
    )
    for index in bar:
        if storage.sample_status(out_dir, index) is not None:
            mine.skipped += 1
        else:
            _make_one(recipe, cfg, operator, index, seed, models, out_dir, image_format, shard.rank, mine)
        bar.set_postfix(made=mine.made, rejected=mine.rejected, skipped=mine.skipped, refresh=False)
    bar.close()
    return _totals(shard, mine)


def _checked_config(recipe, config, operator: str, num_samples: int, image_format: str, models: GenerationModels):
    """The recipe's Config (its defaults when `config` is None), once the request is checked: the config is the
    recipe's, the counts and the format are valid, and `models` has what the recipe calls."""
    cfg = config if config is not None else recipe.Config()
    if not isinstance(cfg, recipe.Config):
        raise ValueError(f"config for {operator} must be a pops.generate.{recipe.NAME}.Config")
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    if image_format not in storage.IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {', '.join(storage.IMAGE_FORMATS)}, got {image_format!r}")
    models.require(recipe.REQUIRES, operator)
    if hasattr(recipe, "check"):
        recipe.check(models, num_samples, cfg)
    return cfg


def _totals(shard, mine: GenerationSummary) -> GenerationSummary:
    """The totals over all ranks (each rank's own counts in `ranks`)."""
    per_rank = gather(
        {"rank": shard.rank, "indices": len(shard.indices), **{k: v for k, v in asdict(mine).items() if k != "ranks"}}
    )
    total = GenerationSummary(ranks=sorted(per_rank, key=lambda r: r["rank"]))
    for r in total.ranks:
        for key in ("made", "rejected", "skipped", "failed", "seconds_making"):
            setattr(total, key, getattr(total, key) + r[key])
    return total
