"""The typer application shared by every sub-command, and the one-line error convention."""

from __future__ import annotations

from typing import NoReturn

import typer

app = typer.Typer(
    name="pops",
    help="pOps: diffusion operators over image embeddings — apply, chain, train, evaluate and render them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error to stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run_or_fail(fn, *args, **kwargs):
    """Call fn; turn the errors bad input raises (ValueError, FileNotFoundError, …) into a one-line CLI error."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, FileNotFoundError, IsADirectoryError, PermissionError, OSError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
