"""What every recipe module shares: the per-sample context (seeded from (seed, index) only) and its results.

A recipe module defines NAME, REQUIRES (the GenerationModels fields it calls), a `Config` dataclass and
`make_sample(ctx, cfg) -> GeneratedSample | Rejected`; optionally `check(models, num_samples, cfg)` to validate up
front.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from PIL import Image

from pops.base.schema import from_mapping
from pops.generate.models import GenerationModels


def derive_seed(seed: int, index: int, stream: int = 0) -> int:
    """A 63-bit seed that depends on (seed, index, stream) only, so sample i is the same on any rank."""
    state = np.random.SeedSequence([seed, index, stream]).generate_state(2, np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & (2**63 - 1)


@dataclass
class SampleContext:
    index: int
    seed: int
    models: GenerationModels
    rng: np.random.Generator = field(init=False)  # word choices, paste positions ...

    def __post_init__(self):
        self.rng = np.random.default_rng(derive_seed(self.seed, self.index, 0))

    def generator(self, stream: int) -> torch.Generator:
        """A fresh CPU generator for the `stream`-th diffusion call of this sample (diffusers moves the noise)."""
        return torch.Generator("cpu").manual_seed(derive_seed(self.seed, self.index, 1 + stream))

    def choice(self, words: tuple[str, ...]) -> str:
        return str(words[int(self.rng.integers(len(words)))])


@dataclass
class GeneratedSample:
    images: dict[str, Image.Image]  # RGB images, encoded by `pops embed`
    assets: dict[str, Image.Image] = field(default_factory=dict)  # masks and cut-outs (PNG, not encoded)
    meta: dict[str, Any] = field(default_factory=dict)  # prompts, words, boxes ...
    # Training examples: {"inputs": {slot: role | None | {...}}, "target": role}; see docs/DATA_FORMAT.md.
    examples: list[dict] = field(default_factory=list)


@dataclass
class Rejected:
    reason: str
    meta: dict[str, Any] = field(default_factory=dict)


def prompt_join(*parts: str) -> str:
    return " ".join(p.strip() for p in parts if p and p.strip())


def config_from_options(config_cls, options: dict[str, str]):
    """A recipe Config with KEY=VALUE overrides (strings from the CLI), each coerced to its field's type by
    `pops.base.schema.from_mapping` ("a,b" for a tuple field; true/false, yes/no, 1/0 for a bool)."""
    tuples = {f.name for f in fields(config_cls) if isinstance(f.default, tuple)}
    values = {key: text.split(",") if key in tuples else text for key, text in options.items()}
    return from_mapping(config_cls, values, what="recipe option")
