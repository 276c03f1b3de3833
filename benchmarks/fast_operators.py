"""The fast operators that benchmarks/fast_sampling.py sets beside the teacher's samplers, built from a demo models
folder: students distilled from its operators (`pops distill`, pops.train.distill) and operators trained with the
one-pass objective (ECLIPSE, pops.core.objective) on the same data with the same recipe as the demo's.

Each is saved under `save/<variant>/operators/<kind>/` when a folder is given, and loaded from there on a later run
(`pops eval --models SAVE/<variant> --data MODELS/data` then scores it too); otherwise built in memory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from torch.nn.attention import SDPBackend, sdpa_kernel

from pops.base.reference import OPERATOR_CONFIG_NAME
from pops.demo.operators import TRAIN_RECORD
from pops.embeddings.io import load_embeddings
from pops.embeddings.pairs import Pairs
from pops.evaluation import OperatorData, choose_sampling
from pops.models.layout import find_operator_dir
from pops.operators.operator import Operator
from pops.train import Trainer, config_from_dict
from pops.train.distill import DistillConfig, distill


def _saved(save: Path | None, variant: str, kind: str) -> tuple[Path | None, Operator | None]:
    folder = None if save is None else save / variant / "operators" / kind
    if folder is not None and (folder / OPERATOR_CONFIG_NAME).is_file():
        return folder, Operator.from_pretrained(folder, load_encoders=False)
    return folder, None


def _keep(op: Operator, folder: Path | None, started: float, log) -> Operator:
    if folder is not None:
        op.save_pretrained(folder)
    log(f"    built in {time.perf_counter() - started:.0f} s" + (f", saved to {folder}" if folder else ""))
    return op


def student(models: Path, kind: str, config: DistillConfig, *, save: Path | None, variant: str, log=print):
    """A student distilled from the models folder's `kind` operator on its training pairs (MODELS/data)."""
    folder, op = _saved(save, variant, kind)
    if op is not None:
        return op
    started = time.perf_counter()
    teacher_dir = find_operator_dir(models, kind)
    teacher = Operator.from_pretrained(teacher_dir, load_encoders=False)
    pairs = Pairs.load(models / "data" / f"{kind}-train.safetensors")
    op = distill(teacher, pairs, config, teacher_name=f"operators/{kind}")
    return _keep(op, folder, started, log)


def one_pass_operator(
    models: Path, kind: str, *, save: Path | None, variant: str = "one-pass", max_steps: int | None = None, log=print
):
    """An operator trained with `objective: one-pass` on the demo's training pairs, with the demo's recipe for
    `kind` (its demo_training.json; `max_steps` optimiser steps instead of its own when given), its guidance scale
    chosen on the validation classes among the demo's candidates (one pass each), as the demo chooses its own."""
    folder, op = _saved(save, variant, kind)
    if op is not None:
        return op
    started = time.perf_counter()
    record = json.loads((find_operator_dir(models, kind) / TRAIN_RECORD).read_text())
    data = models / "data"
    train_pairs = Pairs.load(data / f"{kind}-train.safetensors")
    settings = dict(record["settings"], objective="one-pass", output_dir=str(folder or data), progress=False)
    if max_steps is not None:
        settings["max_steps"] = max_steps
    # As the demo trains (pops.demo.operators): the plain attention kernel is the fast one for these short sequences.
    with sdpa_kernel(SDPBackend.MATH):
        trainer = Trainer(config_from_dict(settings), pairs=train_pairs)
        trainer.run()
    op = trainer.operator
    validation = data / f"{kind}-validation.safetensors"
    if validation.is_file():
        gallery, meta = load_embeddings(data / f"{kind}-gallery.safetensors")
        operator_data = OperatorData(kind, [], None, {}, meta["classes"], gallery, validation=Pairs.load(validation))
        chosen = choose_sampling(op, operator_data, record["guidance_candidates"])
        op.guidance_scale, scores = chosen.sampling.guidance_scale, chosen.scores
        log(f"    {kind} one-pass guidance {op.guidance_scale:g} (validation top-1 {scores})")
    return _keep(op, folder, started, log)
