"""`run_protocol`: the paper's instruct evaluation (Table 1) in one call.

1. Check everything that can be checked before a model loads: the options, the word lists, the input pictures, the
   output folder, the device, and where every model comes from (a model that cannot be had is one line, at once).
2. Load the metric models (CLIP ViT-bigG/14 or ViT-L/14, CLIP ViT-L/14, BLIP-2, the sentence model; see
   pops.evaluation.protocol.loading) and describe the input pictures once (drawing them with SDXL-Turbo first when
   asked).
3. For each method in turn: load it, edit every (object, adjective, seed), score each edit as it comes, free it.
4. Write OUT/protocol.json (the means beside the paper's numbers) and return it.

Scores go to OUT/scores.jsonl as they are made; a rerun with the same settings skips what is there (a crash or a
kill costs only the batch in progress).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from pops.base.files import atomic_write_json
from pops.evaluation.protocol import paper
from pops.evaluation.protocol.inputs import picture_digest
from pops.evaluation.protocol.lists import lists_label, slug
from pops.evaluation.protocol.loading import Models, free, input_pictures
from pops.evaluation.protocol.plan import Plan, ProtocolConfig, clear_out, prepare
from pops.evaluation.protocol.results import LOG_NAME, SUMMARY_NAME, ScoreLog, format_table, summarize


def run_protocol(config: ProtocolConfig | None = None, /, **options) -> dict:
    """Run the paper's instruct protocol (a ProtocolConfig, or its fields as keywords); returns the summary that
    OUT/protocol.json holds, with `table` (the printed table) added. Bad input raises ValueError /
    FileNotFoundError / FileExistsError with one line, before any model loads and before anything is written."""
    started = time.monotonic()
    if config is None:
        config = ProtocolConfig(**options)
    elif options:
        raise TypeError("give a ProtocolConfig or keywords, not both")
    plan = prepare(config)
    out, methods = plan.out, list(config.methods)
    if config.overwrite and out.is_dir():
        clear_out(out)

    # Models: the metrics first (kept for the whole run), then the inputs, then one method at a time.
    out.mkdir(parents=True, exist_ok=True)
    log = ScoreLog(out / LOG_NAME, plan.header)
    models = Models(plan)
    pictures = input_pictures(plan)
    grid = Grid(plan.objects.words, plan.adjectives.words, plan.seeds, [picture_digest(p) for p in pictures])
    scorer = models.scorer(config.image_model)
    features = scorer.describe_inputs(pictures)

    results: dict[str, tuple[list[dict], dict]] = {}
    runnable = [m for m in paper.METHODS if m in methods and m not in plan.skipped]  # Table 1's order
    for i, method in enumerate(runnable):
        results[method] = _run_method(method, models, scorer, features, pictures, grid, log, config, out)
        if method in paper.IP_ADAPTER_SCALES and not set(runnable[i + 1 :]) & set(paper.IP_ADAPTER_SCALES):
            models.release_sdxl()  # both scales share one SDXL; after the last, it goes

    summary = _summary(plan, results)
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    atomic_write_json(out / SUMMARY_NAME, summary)
    return {**summary, "table": format_table(summary)}


@dataclass
class Grid:
    """The edits of one method: every (seed, adjective, object), objects by index; `digests` names each object's
    input picture."""

    objects: Sequence[str]
    adjectives: Sequence[str]
    seeds: Sequence[int]
    digests: Sequence[str]

    def key(self, method: str, i: int, adjective: str, seed: int) -> tuple:
        return (method, self.objects[i], adjective, seed, self.digests[i])

    def cells(self):
        for seed in self.seeds:
            for adjective in self.adjectives:
                yield seed, adjective, range(len(self.objects))

    def __len__(self) -> int:
        return len(self.objects) * len(self.adjectives) * len(self.seeds)


def _run_method(method, models, scorer, features, pictures, grid: Grid, log: ScoreLog, config, out: Path):
    """Edit and score every cell of the grid not in the log yet; returns (the grid's score rows, the method's
    settings)."""
    todo = [
        (seed, adjective, [i for i in objects if log.done(grid.key(method, i, adjective, seed)) is None])
        for seed, adjective, objects in grid.cells()
    ]
    left = sum(len(which) for _, _, which in todo)
    bar = tqdm(total=len(grid), initial=len(grid) - left, desc=method, unit="edit", disable=not config.progress)
    if left:
        editor = models.editor(method, config.operator)
        editor.prepare(pictures)
        log.set_method_settings(method, editor.settings())
        for seed, adjective, which in todo:
            for start in range(0, len(which), config.batch_size):
                chunk = which[start : start + config.batch_size]
                images = editor.edit(chunk, adjective, seed)
                rows = []
                for i, image, score in zip(chunk, images, scorer.score(images, features, chunk, adjective)):
                    obj = grid.objects[i]
                    rows.append(
                        {
                            "method": method,
                            "object": obj,
                            "adjective": adjective,
                            "seed": seed,
                            "input": grid.digests[i],
                        }
                        | score
                    )
                    if config.save_images:
                        _save(out / "images" / method / f"{slug(obj)}__{slug(adjective)}__s{seed}.jpg", image)
                log.add(rows)
                bar.update(len(chunk))
        del editor
        free(models.device)
    bar.close()
    rows = [log.done(grid.key(method, i, a, s)) for s, a, objects in grid.cells() for i in objects]
    return rows, log.method_settings.get(method, {})


def _save(path: Path, image) -> None:
    from pops.base.files import atomic_write

    atomic_write(path, lambda tmp: image.save(tmp, format="JPEG", quality=95))


def _summary(plan: Plan, results: dict) -> dict:
    from pops.base.devices import dtype_name

    config, objects, adjectives, seeds = plan.config, plan.objects, plan.adjectives, plan.seeds
    settings, sources, skipped = plan.settings, plan.sources, plan.skipped

    full = (
        objects.shipped
        and adjectives.shipped
        and (len(objects.words), len(adjectives.words), len(seeds))
        == (paper.NUM_OBJECTS, paper.NUM_ADJECTIVES, paper.NUM_SEEDS)
    )
    methods: dict[str, dict] = {}
    for method in [m for m in paper.METHODS if m in config.methods]:
        if method in skipped:
            methods[method] = {"skipped": skipped[method], "paper": paper.PAPER_TABLE[method]}
            continue
        rows, method_settings = results[method]
        methods[method] = summarize(rows, seeds) | {"paper": paper.PAPER_TABLE[method], "settings": method_settings}
    return {
        "protocol": paper.NAME,
        "paper": paper.SOURCE,
        "lists": lists_label(objects, adjectives),
        "objects_source": objects.source,
        "adjectives_source": adjectives.source,
        "objects": list(objects.words),
        "adjectives": list(adjectives.words),
        "seeds": seeds,
        "full_protocol": bool(full),
        "inputs": _inputs_record(config, settings, sources),
        "metrics": _metrics_record(config, settings, sources),
        "methods": methods,
        "models": dict(sorted(sources.items())),
        "device": str(plan.device),
        "dtype": dtype_name(plan.dtype),
        "generator_device": str(config.generator_device),
    }


def _inputs_record(config: ProtocolConfig, settings: dict, sources: dict) -> dict:
    """Where the input pictures came from: a folder, or SDXL-Turbo with its prompt, seed and steps."""
    if config.inputs is not None:
        return {"folder": str(config.inputs), "size": settings["input_size"]}
    return {
        "generated_by": str(sources.get("sdxl_turbo", paper.MODELS["sdxl_turbo"])),
        "prompt": settings["input_prompt"],
        "seed": config.input_seed,
        "steps": settings["turbo_steps"],
        "size": settings["input_size"],
    }


def _metrics_record(config: ProtocolConfig, settings: dict, sources: dict) -> dict:
    """Which models and templates the three metrics used."""
    similarity = "base" if config.image_model == "bigG" else "clip_l14"
    sentence = str(config.models["sentence"]) if "sentence" in config.models else "all-MiniLM-L6-v2"
    return {
        "image_similarity": {"model": paper.IMAGE_MODELS[config.image_model], "source": sources.get(similarity)},
        "text_similarity": {
            "model": "CLIP ViT-L/14",
            "source": sources.get("clip_l14"),
            "template": settings["text_template"],
        },
        "caption_similarity": {
            "captioner": "BLIP-2",
            "captioner_source": sources.get("blip2"),
            "sentence_model": sentence,
            "template": settings["caption_template"],
            "max_caption_tokens": settings["caption_tokens"],
        },
    }
