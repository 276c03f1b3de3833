"""The whole demo run: world + encoding, then operators (train, choose guidance, evaluate) and the decoder side by
side in worker processes — with `joint`, the one model for all operators too — then the retrieval renderer, the
report and the metrics files."""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pops import evaluation as E
from pops.base.files import atomic_write_json, atomic_write_text, check_output, check_writable, write_folder
from pops.base.registry import get_spec
from pops.demo.operators import (
    CHOSEN_METHOD,
    JOINT_METHOD,
    check_foreign_operators,
    choose_models,
    joint_job,
    operator_job,
)
from pops.demo.plan import (
    DemoConfig,
    Stages,
    choose_encoder_threads,
    choose_threads,
    choose_workers,
)
from pops.demo.processes import die_with_parent
from pops.demo.recipes import demo_recipe
from pops.demo.report import chained_equation, example_grids, write_report
from pops.demo.world_pairs import build_data
from pops.embeddings.cache import EmbeddingCache
from pops.encoders import load_encoder
from pops.encoders.efficientnet import EfficientNetEncoder
from pops.evaluation import save_data
from pops.evaluation.factors import operator_errors
from pops.operators.operator import Operator
from pops.renderers import RENDERER_CONFIG_NAME, load_renderer
from pops.renderers.decoder import DecoderConfig, decoder_fidelity, train_decoder
from pops.renderers.retrieval import RetrievalRenderer
from pops.world import World


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


def decoder_job(config: DemoConfig, embeds: torch.Tensor, images: list, encoder_config: dict) -> dict:
    """Train the small decoder on the class galleries (embedding -> picture; its embedding loss goes through the
    same frozen encoder), save it under <out>/renderer/decoder, and measure how recognisable its pictures are:
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
    write_folder(config.out / "renderer" / "decoder", decoder.save_pretrained, commit=RENDERER_CONFIG_NAME)
    probe = torch.arange(0, len(images), max(1, len(images) // 200))
    others = torch.ones(len(images), dtype=torch.bool)
    others[probe] = False
    gallery = torch.cat([embeds[probe], embeds[others]])
    fidelity = decoder_fidelity(decoder, encoder, embeds[probe], gallery)
    return {**fidelity, "steps": float(config.decoder_steps), "seconds": time.perf_counter() - start}


def run_jobs(config: DemoConfig, jobs: list[tuple], workers: int) -> list:
    """Run (function, *args) jobs, in `workers` spawned processes when more than one (each with its own torch
    threads; inner progress bars off, one bar over the jobs instead). Results in job order; an error in a job is
    raised here."""
    if workers <= 1:
        return [fn(*args) for fn, *args in jobs]
    results: list = [None] * len(jobs)
    # Workers die with this process, even when it is killed (SIGKILL runs no clean-up): none keeps training and
    # writing into OUT after it is gone.
    pool = ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=die_with_parent, initargs=(os.getpid(),)
    )
    with pool:
        futures = {pool.submit(fn, *args): i for i, (fn, *args) in enumerate(jobs)}
        bar = tqdm(
            total=len(jobs), desc=f"operators + decoder ({workers} processes)", unit="job", disable=not config.progress
        )
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update(1)
        bar.close()
    return results


# What the demo writes under OUT: these folders, and these files (the report, the metrics).
OUT_FOLDERS = ("operators", "data", "renderer", "cache")
OUT_FILES = ("report.html", "metrics.json", "demo.json")


def check_out_folder(config: DemoConfig) -> None:
    """OUT must be new, or a folder the demo may write into: not another pops product (an operator folder, a
    generated dataset), and nothing of the wrong kind where the demo puts its folders and files — refused before any
    work, not after minutes of training."""
    from pops.base.reference import OPERATOR_CONFIG_NAME
    from pops.generate.storage import DATASET_FILE

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


def run_demo(config: DemoConfig) -> DemoResult:
    """World -> cache -> pairs -> operators (train, guidance, evaluate) + decoder -> report. See pops.demo."""
    check_foreign_operators(config)  # before anything is written
    check_out_folder(config)
    check_output(config.out, overwrite=True, folder=True, what="output folder")
    check_output(config.cache_dir, overwrite=True, folder=True, what="embedding cache folder")
    check_writable(config.out)
    check_writable(config.cache_dir, "embedding cache folder")
    threads = choose_threads(config.threads)
    stages = Stages()
    with stages("world + encoding"):
        torch.set_num_threads(choose_encoder_threads(config.threads))
        world = World(config.world_config())
        encoder = EfficientNetEncoder(config.encoder_resolution)
        cache = EmbeddingCache(config.cache_dir, encoder)
        text_encoder = None
        if any(get_spec(k).text_slots for k in config.operators):
            from pops.encoders.minilm import MiniLMEncoder  # transformers: only when an operator takes words

            text_encoder = MiniLMEncoder()
        gallery_images: dict = {}
        data = build_data(config, world, cache, text_encoder, gallery_images)
        save_data(data, config.out / "data")
    torch.set_num_threads(threads)
    with stages("operators + decoder"):
        # Recorded in each operator folder, so `pops apply` rebuilds the encoders and takes images and words.
        encoders = {
            kind: {
                "image": encoder.to_config(),
                **({"text": text_encoder.to_config()} if get_spec(kind).text_slots else {}),
            }
            for kind in config.operators
        }
        images = [im for kind in data for _, im in gallery_images[kind]]
        embeds = torch.cat([data[kind].gallery for kind in data])
        # The costliest first (the registry's job cost), so two workers finish together. The decoder and the joint
        # model are one job each, as long as all the separate operators together: they start first, on one worker
        # each, and whichever is free next takes the separate operators one by one.
        order = sorted(config.operators, key=lambda kind: -demo_recipe(kind).job_cost)
        workers = choose_workers(config.workers, len(order) + (2 if config.trains_joint else 1))
        job_config = replace(config, progress=config.progress and workers == 1)
        jobs = [(operator_job, job_config, kind, data[kind], encoders[kind]) for kind in order]
        if config.trains_joint:
            jobs.insert(0, (joint_job, job_config, data, encoders))
        jobs.insert(0, (decoder_job, job_config, embeds, images, encoder.to_config()))
        fidelity, *results = run_jobs(config, jobs, workers)
    joint = results.pop(0) if config.trains_joint else None
    results = sorted(results, key=lambda r: config.operators.index(r["kind"]))  # back in the user's order
    with stages("report"):
        table = E.MetricsTable([row for r in results for row in E.MetricsTable.from_dict(r["table"]).rows])
        outputs = {k: v for r in results for k, v in r["outputs"].items()}
        guidance = {r["kind"]: r["guidance"] for r in results}
        sampling = {r["kind"]: r["sampling"] for r in results}
        chosen = None
        if joint is not None:  # the joint model's rows beside each operator's own ("pops joint")
            for row in E.MetricsTable.from_dict(joint["table"]).rows:
                table.add_row(row)
            outputs.update(joint["outputs"])
            chosen = choose_models({r["kind"]: r["validation"] for r in results}, joint["validation"] or {})
            add_chosen_rows(table, data, chosen)
        operators = {}
        for kind in config.operators:
            op = Operator.from_pretrained(config.out / "operators" / kind, load_encoders=False)
            op.image_encoder, op.text_encoder = encoder, text_encoder if get_spec(kind).text_slots else None
            operators[kind] = op
        retrieval = RetrievalRenderer(embeds, images)
        write_folder(config.out / "renderer" / "retrieval", retrieval.save_pretrained, commit=RENDERER_CONFIG_NAME)
        renderers = {"retrieval": retrieval, "decoder": load_renderer(config.out / "renderer" / "decoder")}
        grids = example_grids(world, data, outputs, renderers, config.grid_rows)
        chain = chained_equation(world, operators, renderers, config.out, seed=config.seed)
        every_job = [*results, *([joint] if joint else [])]
        trained = [r["kind"] for r in every_job if r["fresh"]]
        summary = {
            "world": world.summary(),
            "encoder": encoder.encoder_id,
            "threads": threads,
            "workers": workers,
            "trained": trained,
            "guidance": guidance,
            "sampling": sampling,
            **(
                {
                    "joint_guidance": joint["guidance"],
                    "joint_sampling": joint["sampling"],
                    "joint_steps": config.joint_steps(),
                    "chosen": chosen,
                }
                if joint
                else {}
            ),
            "images_encoded": cache.stats.encoded,
            "cache_hits": cache.stats.hits,
            "decoder_fidelity": fidelity,
            "errors": operator_errors(data, outputs),
            "operator_seconds": {r["kind"]: r["seconds"] for r in every_job},
            "config": config.to_dict(),
        }
        report = write_report(
            config.out / "report.html",
            table=table,
            seconds=stages.seconds,
            grids=grids,
            equation=chain,
            summary=summary,
        )
    summary["seconds"] = stages.seconds
    atomic_write_text(config.out / "metrics.json", table.to_json())
    atomic_write_json(config.out / "demo.json", summary, default=str)
    return DemoResult(
        table,
        stages.seconds,
        cache.stats.encoded,
        trained,
        fidelity,
        report,
        threads,
        guidance,
        workers,
        joint_guidance=joint["guidance"] if joint else None,
        chosen=chosen,
    )


def add_chosen_rows(table, data: dict, chosen: dict[str, str]) -> None:
    """The method "pops chosen": each operator's rows (every test split) from the model chosen for it."""
    for kind, model in chosen.items():
        for split in data[kind].tests:
            row = E.row_name(kind, split)
            cell = table.get(row, JOINT_METHOD if model == "joint" else "pops")
            table.add_row(replace(cell, method=CHOSEN_METHOD))
