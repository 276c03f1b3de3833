"""The typer application shared by every sub-command, and the one-line error convention."""

from __future__ import annotations

from typing import NoReturn

import typer

from pops.readers import reason

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
    """Call fn; turn the errors bad input raises (ValueError — pops.checks.BadValue among them —, FileNotFoundError,
    …) into a one-line CLI error."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, OSError) as exc:
        fail(reason(exc))
    except MemoryError:
        fail("out of memory: ask for fewer samples or a smaller batch")


def checked(check, value, name: str, **kwargs):
    """`check(value, name)` from pops.checks (the same ranges as the Python API), as a one-line CLI error."""
    return run_or_fail(check, value, name, **kwargs)


OVERWRITE_HELP = "Replace an existing output (without it, an existing output is refused before any work)."
