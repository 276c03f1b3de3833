"""The demo's operators: training (or reuse), the sampling chosen on validation classes, and evaluation on
held-out combinations against the baselines (both through pops.evaluation's harness, which `pops eval` shares).

`operator_job` does all three for one operator; it is what a worker process runs (see pops.demo.run). `joint_job` does
them for the joint model (pops.operators.joint; trained with `pops demo --joint`, and by `--quick`): one prior with a
learned operator row, trained on every operator's pairs in turn for `joint_budget` of the separate operators' steps
together, saved as ONE folder `<out>/operators/joint`, its guidance chosen per operator on that operator's validation
classes and scored on the same test pairs, as the method "pops joint". `choose_models` then picks, per operator, the
separate operator unless the joint one beats it on validation beyond the noise (pops.evaluation.choice) ("pops chosen").
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from pops.base.files import tensor_digest
from pops.base.reference import OPERATOR_CONFIG_NAME
from pops.core.sampling import SamplingConfig
from pops.demo.plan import choose_threads
from pops.demo.training_recipes import DemoRecipe, demo_recipe
from pops.evaluation import MetricsTable, candidate_samplings, choose_sampling, evaluate_operators, test_top1
from pops.evaluation.choice import keep_unless_better, paired_scores
from pops.operators.joint import JointOperator
from pops.operators.operator import Operator
from pops.train import Trainer, config_from_dict

log = logging.getLogger(__name__)

# Written next to a trained operator: what it was trained with. A rerun reuses the operator only when this matches.
TRAIN_RECORD = "demo_training.json"
# Bump when the training recipe changes in a way the settings do not show (so older operators are not reused).
RECIPE_VERSION = 7
# The joint model's folder under <out>/operators/ and its method name in the metrics.
JOINT_FOLDER = "joint"
JOINT_METHOD = "pops joint"
# Per operator, the separate operator or the joint model's, whichever scored higher on validation classes.
CHOSEN_METHOD = "pops chosen"


def training_settings(config, kind: str, *, own_recipe: bool = True) -> dict:
    """The pops.train config of one operator: a from-scratch prior whose clip statistics come from the training
    embeddings with one shared std (EfficientNet's sparse features; see ModelConfig.clip_std), trained on recombined
    pairs, with the registry entry's dropout and batch factor (`own_recipe`; else the shared recipe's). The trainer
    does not write the folder: the demo saves the operator once, with its chosen guidance."""
    recipe = demo_recipe(kind) if own_recipe else DemoRecipe()
    batch_factor, dropout = recipe.batch_factor, recipe.dropout
    return dict(
        operator=kind,
        data="in-memory",
        output_dir=str(config.out / "operators" / kind),
        init="scratch",
        seed=config.seed,
        max_steps=config.steps,
        batch_size=config.batch_size * batch_factor,
        recombine=config.recombine,
        vocabulary=config.vocabulary,
        alignment=config.alignment,
        mixed_precision="bf16" if config.bf16 else "no",
        progress=config.progress,
        save_operator=False,
        model=dict(
            embedding_dim=1280,
            num_layers=config.layers,
            num_attention_heads=config.width // 64,
            attention_head_dim=64,
            clip_std="shared",
            dropout=dropout,
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
    record = training_inputs(config, settings, data.train, data.validation)
    reused = reuse(config, folder, record, Operator.from_pretrained, f"the {kind} operator")
    if reused is not None:
        return reused, False
    # The CPU flash-attention kernel's backward is pathologically slow on these 6-16 token sequences with a float
    # mask (docs/EXPERIMENTS.md, "Threads, workers and kernels"); sampling keeps the default.
    with sdpa_kernel(SDPBackend.MATH):
        trainer = Trainer(config_from_dict(settings), pairs=data.train)
        trainer.run()
    op = trainer.operator
    op.encoder_configs = encoders
    if data.validation is not None:
        record["choice"] = give_sampling(op, data, config)
    # The record goes in with the operator, in one complete folder: a folder never holds one without the other.
    op.save_pretrained(folder, extra_json={TRAIN_RECORD: record})
    return op, True


def training_inputs(config, settings: dict, train, validation) -> dict:
    """What decides a trained operator (its training record without results): settings, data, guidance choice."""
    return {
        "recipe": RECIPE_VERSION,
        "settings": {k: v for k, v in settings.items() if k != "progress"},  # progress bars do not change the result
        "data": _fingerprints(train),
        "validation": _fingerprints(validation),
        "guidance_candidates": list(config.guidance_candidates),
        "fast_samplers": [list(s) for s in config.fast_samplers],
        "validation_seeds": config.validation_seeds,
        "choice_z": config.choice_z,
    }


def give_sampling(op, data, config) -> dict:
    """Give `op` its sampling chosen on validation classes: the reference's call at the registry's guidance scale,
    unless a candidate (one of `config.fast_samplers` at a scale of `config.guidance_candidates` or the registry's)
    beats it by more than the noise (pops.evaluation.choice). Returns the record of the
    choice: every candidate's validation score, the default, the chosen one and its per-sample hits (with which
    the joint model's choice is compared)."""
    default = SamplingConfig.reference(op.spec.guidance_scale)  # the paper's own call
    choice = choose_sampling(
        op,
        data,
        config.guidance_candidates,
        config.sampling_candidates(),
        default=default,
        seeds=config.validation_seeds,
        seed=config.seed,
        z=config.choice_z,
    )
    op.sampling = choice.sampling
    return {
        "candidates": {label: score.to_dict() for label, score in choice.scores.items()},
        "default": choice.default,
        "chosen": choice.sampling.label,
        "hits": [round(h, 4) for h in choice.chosen.tolist()],
    }


def _fingerprints(pairs):
    if isinstance(pairs, dict):  # the joint model's: one per operator
        return {kind: _fingerprints(p) for kind, p in pairs.items()}
    return pairs_fingerprint(pairs) if pairs is not None else None


def reuse(config, folder, record: dict, load, name: str):
    """What `folder` holds (read by `load`) when a previous run trained it with these training inputs, else None.
    A damaged folder (truncated weights, …) is trained again, with a warning."""
    record_path = folder / TRAIN_RECORD
    if config.retrain or not record_path.is_file():
        return None
    try:
        saved = json.loads(record_path.read_text())
        saved.pop("choice", None)  # a result of the training, not one of its inputs
        if saved == record:
            return load(folder)
    except (ValueError, OSError) as exc:  # a damaged folder (truncated weights, …): train it again
        print(f"warning: cannot reuse {name} ({exc}); training it again", file=sys.stderr)
    return None


def check_foreign_operators(config) -> None:
    """The demo replaces only operator folders an earlier demo wrote (they hold its TRAIN_RECORD): any other operator
    under OUT/operators/ (one trained by `pops train`, say) is refused unless `config.overwrite`."""
    if config.overwrite:
        return
    for name in (*config.operators, *([JOINT_FOLDER] if config.trains_joint else [])):
        folder = config.out / "operators" / name
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
    choice = saved_choice(config.out / "operators" / kind)
    return dict(
        kind=kind,
        fresh=fresh,
        choice=choice,
        regret=candidates_on_test(config, op, data, choice) if config.regret else None,
        guidance=op.guidance_scale,
        sampling=op.sampling.label,
        table=table.to_dict(),
        outputs=outputs,
        seconds={"training": trained - start, "evaluation": time.perf_counter() - trained},
    )


def candidates_on_test(config, op, data, choice: dict | None) -> dict[str, float] | None:
    """Every candidate of the choice scored on the test classes (one sampling seed), after the fact: the choice's
    regret is the best of these minus the one shipped. Never used to choose."""
    if choice is None or "test" not in data.tests:
        return None
    default = SamplingConfig.reference(op.spec.guidance_scale)
    configs = candidate_samplings(op, config.guidance_candidates, config.sampling_candidates(), default)
    chosen = [c for label, c in configs.items() if label in choice["candidates"]]
    return {label: round(top1, 4) for label, top1 in test_top1(op, data, chosen, seed=config.seed).items()}


# ----- the joint model ----------------------------------------------------------------------------------------------
def joint_settings(config, kinds) -> dict:
    """The pops.train config of the joint model: the separate operators' recipe and model size, one operator row
    each, and `config.joint_budget` of their steps together (each optimiser step one operator's batch, in turn)."""
    settings = training_settings(config, kinds[0], own_recipe=False)  # no one operator's dropout or batch factor
    settings.update(
        data=None,  # the pairs are given in memory, one set per operator
        operators=list(kinds),
        max_steps=config.joint_steps(),
        output_dir=str(config.out / "operators" / JOINT_FOLDER),
    )
    return settings


def train_joint(config, data: dict, encoders: dict):
    """Train the joint model on every operator's training pairs (or reuse the one a previous run trained with the same
    settings and data), choose each operator's guidance on its own validation classes, save the one folder.
    Returns (JointOperator, trained_now)."""
    kinds = list(data)
    folder = config.out / "operators" / JOINT_FOLDER
    settings = joint_settings(config, kinds)
    validation = {k: d.validation for k, d in data.items()}
    record = training_inputs(config, settings, {k: d.train for k, d in data.items()}, validation)
    reused = reuse(config, folder, record, JointOperator.from_pretrained, "the joint model")
    if reused is not None:
        return reused, False
    with sdpa_kernel(SDPBackend.MATH):  # as in train_operator
        trainer = Trainer(config_from_dict(settings), pairs={k: d.train for k, d in data.items()})
        trainer.run()
    joint = trainer.operator
    choices = {}
    for kind, op in joint.operators.items():
        op.encoder_configs = encoders[kind]
        if data[kind].validation is not None:
            choices[kind] = give_sampling(op, data[kind], config)
    record["choice"] = choices
    joint.save_pretrained(folder, extra_json={TRAIN_RECORD: record})  # as train_operator: one complete folder
    return joint, True


def joint_job(config, data: dict, encoders: dict) -> dict:
    """`operator_job` for the joint model: train (or reuse) it, choose each operator's guidance, evaluate each of its
    operators at its own scale on the same test pairs as the separate ones. Its rows are the method "pops joint";
    its outputs are keyed "<row>/joint"."""
    torch.set_num_threads(choose_threads(config.threads))
    start = time.perf_counter()
    joint, fresh = train_joint(config, data, encoders)
    trained = time.perf_counter()
    table, outputs = evaluate_operators(
        dict(joint.operators),
        data,
        seeds=config.eval_seeds,
        extra_seeds=0,  # its own scale only: the separate operators show the registry's
        progress=config.progress,
    )
    rows = [replace(r, method=JOINT_METHOD) for r in table.rows if r.method == "pops"]
    choices = saved_choice(config.out / "operators" / JOINT_FOLDER) or {}
    return dict(
        kind=JOINT_FOLDER,
        fresh=fresh,
        choice=choices,
        regret={
            kind: candidates_on_test(config, op, data[kind], choices.get(kind)) if config.regret else None
            for kind, op in joint.operators.items()
        },
        guidance={kind: op.guidance_scale for kind, op in joint.operators.items()},
        sampling={kind: op.sampling.label for kind, op in joint.operators.items()},
        table=MetricsTable(rows).to_dict(),
        outputs={f"{row}/joint": out for row, out in outputs.items() if "/" not in row},
        seconds={"training": trained - start, "evaluation": time.perf_counter() - trained},
    )


def saved_choice(folder) -> dict | None:
    """The record of the sampling choice a demo-trained folder holds (the joint model's: one per operator); None
    without validation classes."""
    return json.loads((folder / TRAIN_RECORD).read_text()).get("choice") or None


def choose_models(separate: dict[str, dict | None], joint: dict[str, dict], z: float) -> dict[str, dict]:
    """Per operator, which model ships: the separate operator (the default) unless the joint model's chosen sampling
    beats the separate one's on the same validation samples by more than `z` standard errors of the paired
    difference (pops.evaluation.choice). Returns operator -> {"model": "separate" | "joint", each model's Score}."""
    models = {}
    for kind, choice in separate.items():
        if choice is None or joint.get(kind) is None:
            models[kind] = {"model": "separate"}
            continue
        hits = {"separate": torch.tensor(choice["hits"]), "joint": torch.tensor(joint[kind]["hits"])}
        scores = paired_scores(hits, "separate")
        winner = keep_unless_better(scores, "separate", z)
        models[kind] = {"model": winner, **{name: score.to_dict() for name, score in scores.items()}}
    return models
