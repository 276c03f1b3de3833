"""Option types several commands share word for word (`overwrite: Overwrite = False`); the placement options are in
pops.cli.placement."""

from __future__ import annotations

from typing import Annotated

import typer

OVERWRITE_HELP = "Replace an existing output (without it, an existing output is refused before any work)."

Overwrite = Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)]
Threads = Annotated[int | None, typer.Option(help="Torch threads, at most the cores (default: 1).")]
