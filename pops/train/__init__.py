"""Training operators on cached embeddings with `accelerate` (`pops train CONFIG.yaml`).

from pops.train import load_config, train
model = train(load_config("configs/train/texturing.yaml", ["max_steps=100"]))
"""

from __future__ import annotations

__all__ = ["TrainConfig", "load_config", "config_from_dict", "train", "Trainer", "TrainingInterrupted"]


def __getattr__(name):
    # Lazy: the config can be read (and the CLI's --help shown) without importing torch/diffusers/accelerate.
    if name in ("TrainConfig", "load_config", "config_from_dict"):
        from pops.train import config

        return getattr(config, name)
    if name in ("train", "Trainer", "TrainingInterrupted"):
        from pops.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'pops.train' has no attribute {name!r}")
