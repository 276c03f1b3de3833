"""The whole demo run: world + encoding, then operators (train, choose guidance, evaluate) and the decoder side by
side in worker processes — with `joint`, the one model for all operators too — then the retrieval renderer, the
report and the metrics files. The decoder learns from the class galleries alone: they are drawn first, and it trains
in a worker while the rest of the world is encoded."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pops import evaluation as E
from pops.base.files import atomic_write_json, atomic_write_text, check_output, check_writable, write_folder
from pops.base.reference import OPERATOR_CONFIG_NAME
from pops.base.registry import get_spec
from pops.demo.operators import (
    CHOSEN_METHOD,
    JOINT_METHOD,
    check_foreign_operators,
    choose_models,
    joint_job,
    operator_job,
)
from pops.demo.peers import build_peers, peer_table
from pops.demo.plan import (
    DemoConfig,
    Stages,
    choose_encoder_threads,
    choose_threads,
    choose_workers,
)
from pops.demo.processes import die_with_parent
from pops.demo.report import chained_equation, example_grids, write_report
from pops.demo.training_recipes import demo_recipe
from pops.demo.world_pairs import build_data, class_galleries
from pops.embeddings.cache import EmbeddingCache
from pops.encoders import load_encoder
from pops.encoders.efficientnet import EfficientNetEncoder
from pops.encoders.minilm import MiniLMEncoder
from pops.encoders.text_tower import TextTowerEncoder, describe
from pops.evaluation import save_data
from pops.evaluation.factors import operator_errors
from pops.generate.storage import DATASET_FILE
from pops.operators.operator import Operator
from pops.renderers import RENDERER_CONFIG_NAME, load_renderer
from pops.renderers.decoder import DecoderConfig, decoder_fidelity, train_decoder
from pops.renderers.retrieval import RetrievalRenderer
from pops.world import World
from pops.world.edits import SYNONYMS, TRAINING_WORDS


@dataclass
class DemoResult:
    table: Any  # pops.evaluation.MetricsTable
    seconds: dict[str, float]
    encoded: int  # images that went through the encoder in this run (0 when the cache had them all)
    trained: list[str]  # operators trained in this run (the others were reused)
    decoder_fidelity: dict
    report: Path
    threads: int
    guidance: dict[str, float]  # operator -> the guidance scale it was given (chosen on validation classes)
    workers: int = 1
    joint_guidance: dict[str, float] | None = None  # the same for the joint model's operators (when trained)
    chosen: dict[str, str] | None = None  # operator -> "separate" or "joint", chosen on validation (when joint)


def run_demo(config: DemoConfig) -> DemoResult:
    """World -> cache -> pairs -> operators (train, guidance, evaluate) + decoder -> report. See pops.demo."""
    check_outputs(config)  # before anything is written
    threads = choose_threads(config.threads)
    stages = Stages()
    workers = choose_workers(config.workers, len(config.operators) + (2 if config.trains_joint else 1))
    with worker_pool(workers) as pool:
        with stages("world + encoding"):
            encoded = encode_world(config, pool)
        torch.set_num_threads(threads)
        with stages("operators + decoder"):
            jobs = train_and_evaluate(config, encoded, pool, workers)
    with stages("report"):
        table, summary, report = write_report_files(config, encoded, jobs, threads, stages)
    summary["seconds"] = stages.seconds
    atomic_write_text(config.out / "metrics.json", table.to_json())
    atomic_write_json(config.out / "demo.json", summary, default=str)
    return DemoResult(
        table,
        stages.seconds,
        encoded.cache.stats.encoded,
        summary["trained"],
        jobs.fidelity,
        report,
        threads,
        summary["guidance"],
        jobs.workers,
        joint_guidance=jobs.joint["guidance"] if jobs.joint else None,
        chosen=summary.get("chosen"),
    )


def check_outputs(config: DemoConfig) -> None:
    """OUT and the embedding cache folder: writable, and nothing there the demo must not replace."""
    check_foreign_operators(config)
    check_out_folder(config)
    check_output(config.out, overwrite=True, folder=True, what="output folder")
    check_output(config.cache_dir, overwrite=True, folder=True, what="embedding cache folder")
    check_writable(config.out)
    check_writable(config.cache_dir, "embedding cache folder")


# What the demo writes under OUT: these folders, and these files (the report, the metrics).
OUT_FOLDERS = ("operators", "data", "renderers", "cache")
OUT_FILES = ("report.html", "metrics.json", "demo.json")


def check_out_folder(config: DemoConfig) -> None:
    """OUT must be new, or a folder the demo may write into: not another pops product (an operator folder, a
    generated dataset), and nothing of the wrong kind where the demo puts its folders and files — refused before any
    work, not after minutes of training."""
    out = config.out
    for name, what in ((OPERATOR_CONFIG_NAME, "an operator folder"), (DATASET_FILE, "a generated dataset")):
        if (out / name).is_file():
            raise FileExistsError(f"output folder {out} is {what}, not a demo's output; give another --out")
    for name in OUT_FOLDERS:
        if (out / name).exists() and not (out / name).is_dir():
            raise NotADirectoryError(f"{out / name} is a file; the demo writes its {name} folder there")
    for name in OUT_FILES:
        if (out / name).is_dir():
            raise IsADirectoryError(f"{out / name} is a folder; the demo writes its {name} there")


def gallery_pictures(galleries: dict) -> tuple[list, torch.Tensor]:
    """Every gallery picture, operator after operator, and their embeddings in the same order: the decoder's and the
    retrieval renderer's pictures."""
    return [im for gallery, _ in galleries.values() for _, im in gallery], torch.cat([e for _, e in galleries.values()])


@dataclass
class EncodedWorld:
    """The first stage's product: the world, its encoders and cache, and every operator's pairs as embeddings."""

    world: World
    encoder: EfficientNetEncoder
    text_encoder: Any  # only when an operator takes words: the aligned text tower (or MiniLM itself)
    cache: EmbeddingCache
    data: dict  # operator -> its pairs and class gallery (pops.demo.world_pairs.build_data)
    galleries: dict  # operator -> its gallery's (class, picture)s and their embeddings (class_galleries)
    peers: dict = field(default_factory=dict)  # operator -> its peers (pops.demo.peers.build_peers)
    decoder: Future | None = None  # the decoder's job (decoder_job), when it was started in a worker during encoding

    @cached_property
    def images(self) -> list:
        return gallery_pictures(self.galleries)[0]

    @cached_property
    def embeds(self) -> torch.Tensor:
        return gallery_pictures(self.galleries)[1]

    def encoder_configs(self, kind: str) -> dict:
        """The encoders an operator takes (recorded in its folder, so `pops apply` rebuilds them and takes images and
        words)."""
        text = {"text": self.text_encoder.to_config()} if get_spec(kind).text_slots else {}
        return {"image": self.encoder.to_config(), **text}


def encode_world(config: DemoConfig, pool: ProcessPoolExecutor | None = None) -> EncodedWorld:
    """Draw the world, encode its pictures once through the cache, and build and save every operator's pairs. With a
    `pool`, the decoder starts training in it as soon as the class galleries are encoded, and the rest is encoded on
    the core left (`EncodedWorld.decoder`)."""
    torch.set_num_threads(choose_encoder_threads(config.threads))
    world = World(config.world_config())
    encoder = EfficientNetEncoder(config.encoder_resolution)
    cache = EmbeddingCache(config.cache_dir, encoder)
    galleries = class_galleries(config, world, cache)
    decoder = None
    if pool is not None:
        images, embeds = gallery_pictures(galleries)
        decoder = pool.submit(decoder_job, replace(config, progress=False), embeds, images, encoder.to_config())
        torch.set_num_threads(choose_threads(config.threads))  # the other core trains the decoder
    # MiniLM reads instruct's words, and the captions the aligned text space learns from
    words = config.text_tower or any(get_spec(k).text_slots for k in config.operators)
    text_encoder = MiniLMEncoder() if words else None
    data, text_encoder = build_data(config, world, cache, text_encoder, galleries)
    save_data(data, config.out / "data")
    encoded = EncodedWorld(world, encoder, text_encoder, cache, data, galleries, decoder=decoder)
    if isinstance(text_encoder, TextTowerEncoder):  # the subspace peer needs the aligned text space
        encoders = {kind: encoded.encoder_configs(kind) for kind in config.operators}
        encoded.peers = build_peers(config, data, text_encoder, encoders)
    return encoded


@dataclass
class JobResults:
    """The second stage's product: what the worker processes' jobs returned."""

    fidelity: dict  # the decoder's (decoder_job)
    results: list[dict]  # each operator's (operator_job), in the user's order
    joint: dict | None  # the joint model's (joint_job), when it was trained
    workers: int


def train_and_evaluate(config: DemoConfig, encoded: EncodedWorld, pool=None, workers: int = 1) -> JobResults:
    """Train (or reuse), choose the sampling of and evaluate every operator — and the joint model — and train the
    decoder (unless `encoded` started it), side by side in the worker processes of `pool`."""
    encoders = {kind: encoded.encoder_configs(kind) for kind in config.operators}
    # The costliest first (the registry's job cost), so two workers finish together. The decoder (already running,
    # or first) and the joint model are one job each, as long as all the separate operators together: whichever
    # worker is free next takes the separate operators one by one.
    order = sorted(config.operators, key=lambda kind: -demo_recipe(kind).job_cost)
    job_config = replace(config, progress=config.progress and workers == 1)
    jobs = [(operator_job, job_config, kind, encoded.data[kind], encoders[kind]) for kind in order]
    if config.trains_joint:
        jobs.insert(0, (joint_job, job_config, encoded.data, encoders))
    if encoded.decoder is None:
        jobs.insert(0, (decoder_job, job_config, encoded.embeds, encoded.images, encoded.encoder.to_config()))
    results = run_jobs(config, jobs, pool, started=[encoded.decoder] if encoded.decoder else [])
    fidelity = results.pop(0)
    joint = results.pop(0) if config.trains_joint else None
    results = sorted(results, key=lambda r: config.operators.index(r["kind"]))  # back in the user's order
    return JobResults(fidelity, results, joint, workers)


def decoder_job(config: DemoConfig, embeds: torch.Tensor, images: list, encoder_config: dict) -> dict:
    """Train the small decoder on the class galleries (embedding -> picture; its embedding loss goes through the
    same frozen encoder), save it under <out>/renderers/decoder, and measure how recognisable its pictures are:
    re-encode a sample of decodings and retrieve their source. The result holds the job's wall time too."""
    start = time.perf_counter()
    torch.set_num_threads(choose_threads(config.threads))
    encoder = load_encoder(encoder_config)
    decoder = train_decoder(
        embeds,
        images,
        steps=config.decoder_steps,
        batch_size=32,
        encoder=encoder,
        embedding_batch=config.decoder_embedding_batch,
        bf16=config.bf16,
        seed=config.seed,
        config=DecoderConfig(embed_dim=embeds.shape[1], image_size=config.decoder_size, stem_size=config.decoder_stem),
        progress=config.progress,
    )
    write_folder(config.out / "renderers" / "decoder", decoder.save_pretrained, commit=RENDERER_CONFIG_NAME)
    probe = torch.arange(0, len(images), max(1, len(images) // 200))
    others = torch.ones(len(images), dtype=torch.bool)
    others[probe] = False
    gallery = torch.cat([embeds[probe], embeds[others]])
    fidelity = decoder_fidelity(decoder, encoder, embeds[probe], gallery)
    return {**fidelity, "steps": float(config.decoder_steps), "seconds": time.perf_counter() - start}


@contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """`workers` spawned processes (each with its own torch threads), or None for one: the demo then runs its jobs
    in this process. Workers die with this process, even when it is killed (SIGKILL runs no clean-up): none keeps
    training and writing into OUT after it is gone."""
    if workers <= 1:
        yield None
        return
    context = get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        # A failed stage stops the jobs still running (the decoder, started early) instead of waiting for them;
        # the executor has no public way to before Python 3.14.
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def run_jobs(config: DemoConfig, jobs: list[tuple], pool, started: list[Future] = ()) -> list:
    """The results of the jobs already `started` in `pool`, then of (function, *args) `jobs`: run in `pool` (inner
    progress bars off, one bar over the jobs instead), or here without one. An error in a job is raised here."""
    if pool is None:
        return [future.result() for future in started] + [fn(*args) for fn, *args in jobs]
    futures = [*started, *(pool.submit(fn, *args) for fn, *args in jobs)]
    index = {future: i for i, future in enumerate(futures)}
    results: list = [None] * len(futures)
    bar = tqdm(total=len(futures), desc="operators + decoder", unit="job", disable=not config.progress)
    for future in as_completed(futures):
        results[index[future]] = future.result()
        bar.update(1)
    bar.close()
    return results


def write_report_files(config: DemoConfig, encoded: EncodedWorld, jobs: JobResults, threads: int, stages: Stages):
    """The metrics table (each operator, the joint model, the model chosen per operator), the renderers' folders,
    the example grids, a chained equation and OUT/report.html. Returns (table, summary, report path)."""
    table, outputs, chosen = merge_tables(config, encoded.data, jobs)
    if encoded.peers:
        peers, peer_outputs = peer_table(encoded.data, encoded.peers)
        for row in peers.rows:
            table.add_row(row)
        outputs.update(peer_outputs)
    operators = {kind: load_operator(config, encoded, kind) for kind in config.operators}
    retrieval = RetrievalRenderer(encoded.embeds, encoded.images)
    write_folder(config.out / "renderers" / "retrieval", retrieval.save_pretrained, commit=RENDERER_CONFIG_NAME)
    renderers = {"retrieval": retrieval, "decoder": load_renderer(config.out / "renderers" / "decoder")}
    grids = example_grids(encoded.world, encoded.data, outputs, renderers, config.grid_rows)
    chain = chained_equation(encoded.world, operators, renderers, config.out, seed=config.seed)
    summary = summarize(config, encoded, jobs, threads, outputs, chosen)
    report = write_report(
        config.out / "report.html",
        table=table,
        seconds=stages.seconds,
        grids=grids,
        equation=chain,
        summary=summary,
    )
    return table, summary, report


def load_operator(config: DemoConfig, encoded: EncodedWorld, kind: str) -> Operator:
    """The operator the demo saved under OUT, with the run's encoders (for the report's chained equation)."""
    op = Operator.from_pretrained(config.out / "operators" / kind, load_encoders=False)
    op.image_encoder, op.text_encoder = encoded.encoder, encoded.text_encoder if get_spec(kind).text_slots else None
    return op


def merge_tables(config: DemoConfig, data: dict, jobs: JobResults):
    """One metrics table from the jobs' (with the joint model: its rows and the chosen model's too), and every
    operator's sampled outputs. Returns (table, outputs, the model choice per operator (pops.demo.operators.
    choose_models), or None without the joint model)."""
    results, joint = jobs.results, jobs.joint
    table = E.MetricsTable([row for r in results for row in E.MetricsTable.from_dict(r["table"]).rows])
    outputs = {k: v for r in results for k, v in r["outputs"].items()}
    chosen = None
    if joint is not None:  # the joint model's rows beside each operator's own ("pops joint")
        for row in E.MetricsTable.from_dict(joint["table"]).rows:
            table.add_row(row)
        outputs.update(joint["outputs"])
        chosen = choose_models({r["kind"]: r["choice"] for r in results}, joint["choice"], config.choice_z)
        add_chosen_rows(table, data, {kind: c["model"] for kind, c in chosen.items()})
    return table, outputs, chosen


def add_chosen_rows(table, data: dict, chosen: dict[str, str]) -> None:
    """The method "pops chosen": each operator's rows (every test split) from the model chosen for it."""
    for kind, model in chosen.items():
        for split in data[kind].tests:
            row = E.row_name(kind, split)
            cell = table.get(row, JOINT_METHOD if model == "joint" else "pops")
            table.add_row(replace(cell, method=CHOSEN_METHOD))


def summarize(config: DemoConfig, encoded: EncodedWorld, jobs: JobResults, threads: int, outputs: dict, chosen) -> dict:
    """What demo.json records of the run (and the report shows)."""
    results, joint = jobs.results, jobs.joint
    every_job = [*results, *([joint] if joint else [])]
    joint_summary = {}
    if joint:
        joint_summary = {
            "joint_guidance": joint["guidance"],
            "joint_sampling": joint["sampling"],
            "joint_steps": config.joint_steps(),
            "chosen": {kind: c["model"] for kind, c in chosen.items()},
            "model_choice": chosen,
        }
    return {
        "world": encoded.world.summary(),
        "encoder": encoded.encoder.encoder_id,
        "threads": threads,
        "workers": jobs.workers,
        "trained": [r["kind"] for r in every_job if r["fresh"]],
        "guidance": {r["kind"]: r["guidance"] for r in results},
        "sampling": {r["kind"]: r["sampling"] for r in results},
        **joint_summary,
        "choices": {r["kind"]: _without_hits(r["choice"]) for r in results},
        "regret": regret_table(results, joint, (chosen and {k: c["model"] for k, c in chosen.items()}) or {}),
        **({"text_tower": tower_summary(encoded)} if isinstance(encoded.text_encoder, TextTowerEncoder) else {}),
        "images_encoded": encoded.cache.stats.encoded,
        "cache_hits": encoded.cache.stats.hits,
        "decoder_fidelity": jobs.fidelity,
        "errors": operator_errors(encoded.data, outputs),
        "operator_seconds": {r["kind"]: r["seconds"] for r in every_job},
        "config": config.to_dict(),
    }


def _without_hits(choice: dict | None) -> dict | None:
    """A choice record without its per-sample hits (demo.json keeps the scores)."""
    return None if choice is None else {k: v for k, v in choice.items() if k != "hits"}


def regret_table(results: list[dict], joint: dict | None, models: dict[str, str]) -> dict[str, dict]:
    """Per operator, after the fact: the test top-1 (one sampling seed) of what the demo shipped — the chosen model
    with its chosen sampling — against the best of every candidate (both models, every sampling), and the regret,
    their difference. Measured on the test classes after the choice, never used in it."""
    table = {}
    for r in results:
        kind = r["kind"]
        candidates = {f"separate {label}": top1 for label, top1 in (r["regret"] or {}).items()}
        joint_regret = ((joint or {}).get("regret") or {}).get(kind) or {}
        candidates.update({f"joint {label}": top1 for label, top1 in joint_regret.items()})
        if not candidates:
            continue
        model = models.get(kind, "separate")
        sampling = r["sampling"] if model == "separate" else joint["sampling"][kind]
        shipped = f"{model} {sampling}"
        best = max(candidates, key=candidates.get)
        table[kind] = {
            "shipped": shipped,
            "shipped_top1": candidates.get(shipped),
            "best": best,
            "best_top1": candidates[best],
            "regret": round(candidates[best] - candidates.get(shipped, candidates[best]), 4),
            "candidates": len(candidates),
        }
    return table


def tower_summary(encoded: EncodedWorld) -> dict:
    """What the report shows of the aligned text space: each held-out synonym's nearest training words through it."""
    known = [*dict.fromkeys([*TRAINING_WORDS.values(), *TRAINING_WORDS])]
    return {"nearest": describe(encoded.text_encoder, list(SYNONYMS), known), "synonym_of": SYNONYMS}
