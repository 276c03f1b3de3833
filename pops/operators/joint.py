"""One model for all operators (the paper's stated future work): a single prior, a learned operator row.

A `JointOperator` is one `PopsPrior` whose condition rows start with a learned row of the operator being run
(`PopsPrior(…, operators=[…])`), trained on every operator's pairs at once (`pops.train` with `operators: […]`), so
what it learns about objects is shared across operators. Each of its operators is an ordinary `Operator` on that
one shared model, with its own guidance scale, sampler and steps, so `pops apply`, equations, the UI and `pops eval`
use it as any operator:

    joint = JointOperator.from_pretrained("outputs/demo/operators/joint")
    scene = joint["scene"]                      # an Operator; the same as
    scene = Operator.from_pretrained("outputs/demo/operators/joint", kind="scene")

It saves as ONE folder (pops.operators.folder' format: the shared weights and operator rows, and an `operators` entry
with each operator's settings).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pops.base.reference import TRAINING_SCHEDULER_CONFIG, is_joint_config
from pops.core.prior import PopsPrior
from pops.operators.card import joint_card
from pops.operators.folder import load_operator_folder, operator_config, save_operator_folder
from pops.operators.operator import Operator
from pops.operators.vocabulary import VOCABULARY_FILE


class JointOperator:
    """Several operators on one joint prior: `joint[kind]` is the `Operator` of one of them (they share `model`)."""

    def __init__(self, model: PopsPrior, operators: dict[str, Operator], training: dict | None = None):
        if not model.operators:
            raise ValueError("a joint operator needs a prior with operator rows (PopsPrior(..., operators=[...]))")
        if set(operators) != set(model.operators) or any(op.model is not model for op in operators.values()):
            raise ValueError(f"give one operator on this model for each of {', '.join(model.operators)}")
        self.model = model
        self.operators = {kind: operators[kind] for kind in model.operators}  # in the order of the operator rows
        # How the shared prior was trained (pops.train's record), shown in the card and saved with the folder.
        self.training = training

    @classmethod
    def from_model(
        cls,
        model: PopsPrior,
        encoder_configs: dict[str, dict] | None = None,
        training: dict | None = None,
        **settings,
    ) -> JointOperator:
        """Each operator of a joint prior at its registry defaults; `encoder_configs`: kind -> its encoders;
        `settings` (sampler, num_inference_steps, …): `Operator` arguments every one of them gets."""
        encoder_configs = encoder_configs or {}
        operators = {
            kind: Operator(model, kind, encoder_configs=encoder_configs.get(kind), **settings)
            for kind in model.operators
        }
        return cls(model, operators, training)

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, *, load_encoders: bool = True, torch_dtype: torch.dtype | None = None
    ) -> JointOperator:
        """Load a joint folder written by `save_pretrained`: the weights once, every operator on them."""
        model, config = load_operator_folder(Path(folder))
        if not is_joint_config(config):
            raise ValueError(f"{folder} is a single {config.get('kind')} operator, not a joint folder")
        operators = {}
        for kind in config["operators"]:
            op = Operator.from_folder_config(model, operator_config(config, kind, folder), where=folder)
            op.training = None  # the record belongs to the shared prior (`JointOperator.training`)
            if not load_encoders:
                op.encoder_configs = {}
            operators[kind] = op
        if torch_dtype is not None:
            model.to(torch_dtype)
        return cls(model, operators, config.get("training"))

    def save_pretrained(
        self, folder: str | Path, *, extra_json: dict[str, Any] | None = None, dtype: torch.dtype | None = None
    ) -> Path:
        """As `Operator.save_pretrained` (one complete folder or none, NaN weights refused, `extra_json`, `dtype`),
        the shared weights once and each operator's settings under `operators`."""
        config = dict(
            operators={kind: op.settings() for kind, op in self.operators.items()},
            training_scheduler=dict(TRAINING_SCHEDULER_CONFIG),
        )
        if self.training is not None:
            config["training"] = self.training
        vocabularies = {k: v for op in self.operators.values() for k, v in op.vocabulary_tensors().items()}
        save_operator_folder(
            Path(folder),
            self.model,
            config,
            card=joint_card(self),
            extra_json=extra_json,
            dtype=dtype,
            extra_tensors={VOCABULARY_FILE: vocabularies},
        )
        return Path(folder)

    # ----- one operator ------------------------------------------------------------------------------------------
    def __getitem__(self, kind: str) -> Operator:
        try:
            return self.operators[kind]
        except KeyError:
            raise KeyError(f"this joint operator holds {', '.join(self.operators)}, not {kind!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.operators)

    def __len__(self) -> int:
        return len(self.operators)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.operators)

    def to(self, device=None, dtype=None) -> JointOperator:
        self.model.to(device=device, dtype=dtype)
        return self
