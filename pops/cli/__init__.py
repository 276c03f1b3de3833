"""The `pops` command. Each sub-command lives in its own module under pops.cli and registers itself on `app`."""

from __future__ import annotations

import importlib

from pops.cli.app import app

# Sub-command modules, in the order `pops --help` lists them.
COMMANDS = [
    "apply",
    "serve",
    "models",
    "generate",
    "embed",
    "pairs",
    "render",
    "train",
    "distill",
    "demo",
    "eval",
    "protocol",
]


def main() -> None:
    for name in COMMANDS:
        importlib.import_module(f"pops.cli.{name}")
    app()
