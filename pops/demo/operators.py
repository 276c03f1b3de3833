"""The demo's operators: training (or reuse), the guidance scale chosen on validation classes, and evaluation on
held-out combinations against the baselines (both through pops.evaluation's harness, which `pops eval` shares).

`operator_job` does all three for one operator; it is what a worker process runs (see pops.demo.run).
"""

from __future__ import annotations

import json
import logging
import sys
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from pops.demo.config import choose_threads
from pops.evaluation import choose_sampling, evaluate_operators
from pops.files import tensor_digest
from pops.operator import Operator
from pops.reference import OPERATOR_CONFIG_NAME
from pops.train import Trainer, config_from_dict

log = logging.getLogger(__name__)

# Written next to a trained operator: what it was trained with. A rerun reuses the operator only when this matches.
TRAIN_RECORD = "demo_training.json"
# Bump when the training recipe changes in a way the settings do not show (so older operators are not reused).
RECIPE_VERSION = 5


def training_settings(config, kind: str) -> dict:
    """The pops.train config of one operator: a from-scratch prior whose clip statistics come from the training
    embeddings with one shared std (EfficientNet's sparse features; see ModelConfig.clip_std), trained on recombined
    pairs. The trainer does not write the folder: the demo saves the operator once, with its chosen guidance."""
    return dict(
        operator=kind,
        data="in-memory",
        output_dir=str(config.out / "operators" / kind),
        init="scratch",
        seed=config.seed,
        max_steps=config.steps,
        batch_size=config.batch_size,
        recombine=config.recombine,
        mixed_precision="bf16" if config.bf16 else "no",
        progress=config.progress,
        save_operator=False,
        model=dict(
            embedding_dim=1280,
            num_layers=config.layers,
            num_attention_heads=config.width // 64,
            attention_head_dim=64,
            clip_std="shared",
        ),
        optim=dict(lr=config.lr, warmup_steps=config.warmup_steps, schedule="cosine"),
        checkpoint=dict(every=0, at_end=False),
        logging=dict(every=0),
    )


def train_operator(config, kind: str, data, encoders: dict):
    """Train one operator (or reuse the one a previous run trained with the same settings and data), give it the
    guidance scale that scores best on the validation classes, and save it with its encoder configs (so
    `pops apply` takes images and words) and its training record: the folder is written once.
    Returns (operator, trained_now)."""
    folder = config.out / "operators" / kind
    settings = training_settings(config, kind)
    shown = {k: v for k, v in settings.items() if k != "progress"}  # progress bars do not change the result
    record = {
        "recipe": RECIPE_VERSION,
        "settings": shown,
        "data": pairs_fingerprint(data.train),
        "validation": pairs_fingerprint(data.validation) if data.validation is not None else None,
        "guidance_candidates": list(config.guidance_candidates),
        "sampling_steps": config.sampling_steps,
        "fast_samplers": [list(s) for s in config.fast_samplers],
    }
    record_path = folder / TRAIN_RECORD
    if not config.retrain and record_path.is_file():
        try:
            saved = json.loads(record_path.read_text())
            saved.pop("validation_top1", None)  # a result of the training, not one of its inputs
            if saved == record:
                return Operator.from_pretrained(folder), False
        except (ValueError, OSError) as exc:  # a damaged folder (truncated weights, …): train it again
            print(f"warning: cannot reuse the {kind} operator ({exc}); training it again", file=sys.stderr)
    # The CPU flash-attention kernel's backward is pathologically slow on these 6-16 token sequences with a float
    # mask (measured: instruct 86 -> 39 ms per step with the plain math kernel); sampling keeps the default.
    with sdpa_kernel(SDPBackend.MATH):
        trainer = Trainer(config_from_dict(settings), pairs=data.train)
        trainer.run()
    op = trainer.operator
    op.encoder_configs = encoders
    if data.validation is not None:
        samplers = (("unclip", config.sampling_steps), *config.fast_samplers)
        op.guidance_scale, op.sampler, op.num_inference_steps, scores = choose_sampling(
            op, data, config.guidance_candidates, samplers, config.seed
        )
        record["validation_top1"] = scores
    # The record goes in with the operator, in one complete folder: a folder never holds one without the other.
    op.save_pretrained(folder, extra_json={TRAIN_RECORD: record})
    return op, True


def check_foreign_operators(config) -> None:
    """The demo replaces only operator folders an earlier demo wrote (they hold its TRAIN_RECORD): any other operator
    under OUT/operators/ (one trained by `pops train`, say) is refused unless `config.overwrite`."""
    if config.overwrite:
        return
    for kind in config.operators:
        folder = config.out / "operators" / kind
        if (folder / OPERATOR_CONFIG_NAME).is_file() and not (folder / TRAIN_RECORD).is_file():
            raise FileExistsError(
                f"{folder} holds an operator that no demo trained; the demo would replace it: pass --overwrite, "
                "or another --out"
            )


def pairs_fingerprint(pairs) -> str:
    """A short digest of the training data, so a rerun reuses an operator only if it would see the same pairs."""
    tensors = [pairs.target, pairs.present, pairs.class_ids]
    for slot in pairs.slots:
        tensors.extend(slot if isinstance(slot, tuple) else (slot,))
    return tensor_digest(tensors, length=16)


def operator_job(config, kind: str, data, encoders: dict) -> dict:
    """Train (or reuse), choose the guidance scale and evaluate one operator; what a worker process runs.
    Returns plain data: the table as a dict, the grids' embeddings, the chosen scale, and timings."""
    torch.set_num_threads(choose_threads(config.threads))
    start = time.perf_counter()
    op, fresh = train_operator(config, kind, data, encoders)
    trained = time.perf_counter()
    table, outputs = evaluate_operators(
        {kind: op},
        {kind: data},
        seeds=config.eval_seeds,
        guidance_scales=config.guidance_scales,
        progress=config.progress,
    )
    return dict(
        kind=kind,
        fresh=fresh,
        guidance=op.guidance_scale,
        sampling=f"{op.sampler} {op.num_inference_steps}",
        table=table.to_dict(),
        outputs=outputs,
        seconds={"training": trained - start, "evaluation": time.perf_counter() - trained},
    )
