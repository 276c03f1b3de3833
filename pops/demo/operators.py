"""The demo's operators: training (or reuse), the guidance scale chosen on validation classes, and evaluation on
held-out combinations against the baselines (`evaluate_operators` is shared with `pops eval`).

`operator_job` does all three for one operator; it is what a worker process runs (see pops.demo.run).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from pops.demo.data import recombine

log = logging.getLogger(__name__)

# Written next to a trained operator: what it was trained with. A rerun reuses the operator only when this matches.
TRAIN_RECORD = "demo_training.json"
# Bump when the training recipe changes in a way the settings do not show (so older operators are not reused).
RECIPE_VERSION = 4


def training_settings(config, kind: str) -> dict:
    """The pops.train config of one operator (a from-scratch prior; clip statistics from the training data)."""
    return dict(
        operator=kind, data="in-memory", output_dir=str(config.out / "operators" / kind), init="scratch",
        seed=config.seed, max_steps=config.steps, batch_size=config.batch_size,
        mixed_precision="bf16" if config.bf16 else "no", progress=config.progress,
        model=dict(embedding_dim=1280, num_layers=config.layers, num_attention_heads=config.width // 64, attention_head_dim=64),
        optim=dict(lr=config.lr, warmup_steps=config.warmup_steps, schedule="cosine"),
        checkpoint=dict(every=0, at_end=False), logging=dict(every=0),
    )  # fmt: skip


def train_operator(config, kind: str, data, encoders: dict):
    """Train one operator (or reuse the one a previous run trained with the same settings and data), give it the
    guidance scale that scores best on the validation classes, and save it with its encoder configs (so
    `pops apply` takes images and words). Returns (operator, trained_now)."""
    from pops.embeddings_io import atomic_write
    from pops.operator import Operator
    from pops.train import config_from_dict, train

    folder = config.out / "operators" / kind
    settings = training_settings(config, kind)
    shown = {k: v for k, v in settings.items() if k != "progress"}  # progress bars do not change the result
    record = {
        "recipe": RECIPE_VERSION, "settings": shown, "recombine": config.recombine, "data": pairs_fingerprint(data.train),
        "validation": pairs_fingerprint(data.validation) if data.validation is not None else None,
        "guidance_candidates": list(config.guidance_candidates), "sampling_steps": config.sampling_steps,
    }  # fmt: skip
    record_path = folder / TRAIN_RECORD
    if not config.retrain and record_path.is_file():
        try:
            saved = json.loads(record_path.read_text())
            saved.pop("validation_top1", None)  # a result of the training, not one of its inputs
            if saved == record:
                return Operator.from_pretrained(folder), False
        except (ValueError, OSError) as exc:
            log.warning("cannot reuse %s (%s); training again", folder, exc)
    record_path.unlink(missing_ok=True)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # The CPU flash-attention kernel's backward is pathologically slow on these 6-16 token sequences with a float
    # mask (measured: instruct 86 -> 39 ms per step with the plain math kernel); sampling keeps the default.
    with sdpa_kernel(SDPBackend.MATH):
        pairs = recombine(data.train, config.recombine, seed=config.seed)
        model = train(config_from_dict(settings), pairs=pairs, model=initial_model(config, data.train))
    op = Operator(model, kind, encoder_configs=encoders)
    if data.validation is not None:
        op.guidance_scale, scores = choose_guidance(op, data, config.guidance_candidates, config.sampling_steps, config.seed)
        record["validation_top1"] = scores
    op.save_pretrained(folder)
    atomic_write(record_path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))
    return op, True


def choose_guidance(op, data, candidates, steps: int, seed: int) -> tuple[float, dict]:
    """The candidate scale whose samples score the best top-1 on the validation classes (ties: the better mean
    reciprocal rank, then the smaller scale). Validation classes are training classes kept out of training, so this never
    sees a test class. Returns (scale, {scale: top-1})."""
    from pops import evaluation as E

    pairs = data.validation
    names, protos = E.class_prototypes(data.gallery, data.gallery_classes)
    truth = [pairs.info["classes"][i] for i in pairs.class_ids.tolist()]
    scores = {}
    for scale in sorted(candidates):
        out = sample_pairs(op, pairs, guidance_scale=scale, seed=seed, steps=steps)
        scores[scale] = dict(top1=E.top1_accuracy(out, truth, names, protos), mrr=E.mean_reciprocal_rank(out, truth, names, protos))
    best = max(scores, key=lambda s: (scores[s]["top1"], scores[s]["mrr"], -s))
    return float(best), {f"{s:g}": round(r["top1"], 4) for s, r in scores.items()}


def initial_model(config, pairs):
    """A fresh prior of the demo's size whose clip statistics come from the training embeddings: the per-dimension
    mean, and ONE standard deviation for every dimension (the root mean square of the per-dimension ones).

    Why one: EfficientNet's pooled features are sparse ReLU6 activations whose per-dimension spread ranges over three
    orders of magnitude. Dividing by each dimension's own std makes the MSE objective spend its capacity on the
    rarely active, low-variance dimensions, while cosine (what retrieval and the evaluation measure) is decided by
    the strong ones. A shared std keeps the normalised space a shifted, uniformly scaled copy of the raw space, so the
    objective and the metric agree (measured: texturing held-out top-1 0.71 -> 0.81 at guidance 3)."""
    from pops.prior import PopsPrior, make_prior
    from pops.train.model import embedding_stats, text_width_of

    with torch.random.fork_rng(devices=[]):  # the same initial weights on every run, whatever ran before
        torch.manual_seed(config.seed)
        prior = make_prior(pairs.target.shape[1], config.layers, config.width // 64, 64)
        model = PopsPrior(prior, text_width=text_width_of(pairs))
    mean, std = embedding_stats(pairs)
    model.set_clip_stats(mean, torch.full_like(std, float(std.pow(2).mean().sqrt())))
    return model


def pairs_fingerprint(pairs) -> str:
    """A short digest of the training data, so a rerun reuses an operator only if it would see the same pairs."""
    import hashlib

    h = hashlib.sha256()
    tensors = [pairs.target, pairs.present, pairs.class_ids]
    for slot in pairs.slots:
        tensors.extend(slot if isinstance(slot, tuple) else (slot,))
    for tensor in tensors:
        h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def sample_pairs(op, pairs, *, guidance_scale: float, seed: int, steps: int = 25, chunk: int = 512) -> torch.Tensor:
    """The operator's outputs for every sample of `pairs` (absent slots are the null condition), one generator."""
    from pops.sampler import make_sampling_scheduler, sample_unclip

    generator = torch.Generator().manual_seed(seed)
    outs = []
    for start in range(0, len(pairs), chunk):
        index = torch.arange(start, min(start + chunk, len(pairs)))
        batch = pairs.batch(index)
        cond = op.model.condition(op.spec, batch.slots, drop=~batch.present)
        outs.append(
            sample_unclip(
                op.model, cond, guidance_scale=guidance_scale, num_inference_steps=steps, generator=generator,
                scheduler=make_sampling_scheduler(op.scheduler_config),
            )  # fmt: skip
        )
    return torch.cat(outs)


def image_inputs(pairs) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The image slots of `pairs` and their presence (what the baselines average)."""
    idx = list(pairs.spec.image_slots)
    return [pairs.slots[i] for i in idx], pairs.present[:, idx]


def evaluate_operators(operators: dict, data: dict, *, seeds: int = 3, guidance_scales=(), steps: int = 25,
                       extra_seeds: int = 1, progress: bool = True):  # fmt: skip
    """A MetricsTable: per operator (and instruct's held-out synonyms) the trained operator at its own guidance
    scale over `seeds` seeds ("pops"), at the registry's scale and each of `guidance_scales` over `extra_seeds`
    ("pops g=s"), the averaging baseline, input A only, and the oracle.
    Returns (table, outputs): outputs[row] holds the first seed's embeddings at the operator's own scale,
    outputs["row/g=s"] at the other scales and outputs["row/averaging"] the baseline, for the report's grids."""
    from tqdm.auto import tqdm

    from pops import evaluation as E

    table, outputs = E.MetricsTable(), {}
    jobs = [(kind, split) for kind in operators for split in data[kind].tests]
    for kind, split in tqdm(jobs, desc="evaluating", unit="set", disable=not progress):
        op, d, pairs = operators[kind], data[kind], data[kind].tests[split]
        row = kind if split == "test" else f"{kind} ({split.removeprefix('test_')})"
        names, protos = E.class_prototypes(d.gallery, d.gallery_classes)
        classes = pairs.info.get("classes") or d.classes
        truth = [classes[i] for i in pairs.class_ids.tolist()]
        score = lambda x: E.evaluate_embeddings(x, pairs.target, truth, names, protos)  # noqa: E731
        own = op.guidance_scale
        for scale in dict.fromkeys([own, op.spec.guidance_scale, *guidance_scales]):
            runs = []
            for s in range(seeds if scale == own else extra_seeds):
                out = sample_pairs(op, pairs, guidance_scale=scale, seed=s, steps=steps)
                runs.append(score(out))
                if s == 0:  # the first seed's outputs, for the report's pictures
                    outputs[row if scale == own else f"{row}/g={scale:g}"] = out
            table.add_runs(row, "pops" if scale == own else f"pops g={scale:g}", runs, n=len(pairs))
        images, present = image_inputs(pairs)
        averaging = E.averaging_baseline(images, present)
        outputs[f"{row}/averaging"] = averaging
        for method, x in (("averaging", averaging), ("input_a", E.input_a_baseline(images, present)), ("oracle", pairs.target)):
            table.add(row, method, **score(x), n=len(pairs))
    return table, outputs


def operator_job(config, kind: str, data, encoders: dict) -> dict:
    """Train (or reuse), choose the guidance scale and evaluate one operator; what a worker process runs.
    Returns plain data: the table as a dict, the grids' embeddings, the chosen scale, and timings."""
    from pops.demo.config import choose_threads

    torch.set_num_threads(choose_threads(config.threads))
    start = time.perf_counter()
    op, fresh = train_operator(config, kind, data, encoders)
    trained = time.perf_counter()
    table, outputs = evaluate_operators(
        {kind: op}, {kind: data}, seeds=config.eval_seeds, guidance_scales=config.guidance_scales,
        steps=config.sampling_steps, progress=config.progress,
    )  # fmt: skip
    return dict(kind=kind, fresh=fresh, guidance=op.guidance_scale, table=table.to_dict(), outputs=outputs,
                seconds={"training": trained - start, "evaluation": time.perf_counter() - trained})  # fmt: skip
