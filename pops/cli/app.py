"""The typer application shared by every sub-command, and the one-line error convention."""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

import typer
from tqdm.contrib.logging import logging_redirect_tqdm
from typer.core import TyperGroup

# The click typer runs on (typer vendors its own copy since 0.24; the exception types are its).
try:
    from typer._click import exceptions as click_errors
except ImportError:  # an older typer, on the click package
    from click import exceptions as click_errors

from pops.base.errors import reason
from pops.core.sampling import SamplingConfig


class OneLineErrors(TyperGroup):
    """The `pops` group: a command line click cannot parse (an unknown option, `--steps 2.5`, a missing argument) is
    one `error:` line too, as every other bad input (instead of click's usage box)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        call = dict(args=args, prog_name=prog_name, complete_var=complete_var, **extra)
        if not standalone_mode:
            return super().main(standalone_mode=False, **call)
        try:
            code = super().main(standalone_mode=False, **call)
        except click_errors.NoArgsIsHelpError as exc:  # `pops` alone: the help (rich has printed it already)
            if exc.format_message().strip():
                typer.echo(exc.format_message())
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if getattr(exc, "ctx", None) else ""
            typer.echo(f"error: {' '.join(exc.format_message().split())}{where}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
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
    """Call fn (pops's log lines through tqdm); turn the errors bad input raises (ValueError — pops.base.errors.BadValue
    among them —, FileNotFoundError, …) into a one-line CLI error."""
    try:
        # Our log lines (a warning mid-sampling) print above the progress bars, not on a bar's line. Only pops's:
        # libraries that log through their own handlers (transformers: to the root too, when CI is set) keep them.
        with logging_redirect_tqdm([logging.getLogger("pops")]):
            return fn(*args, **kwargs)
    except (ValueError, OSError) as exc:
        fail(reason(exc))
    except MemoryError:
        fail("out of memory: ask for fewer samples or a smaller batch")


# How the commands name the values of a SamplingConfig in their one-line errors.
SAMPLING_FLAGS = {"num_inference_steps": "--steps", "guidance_scale": "--guidance-scale", "draws": "--draws"}


def sampling_options(**values) -> SamplingConfig:
    """A command's sampling options (guidance_scale, num_inference_steps, sampler, draws, layout) as the one
    SamplingConfig it carries, checked once here: a bad value is one `error:` line naming its flag."""
    return run_or_fail(SamplingConfig, **values, names=SAMPLING_FLAGS)


def checked(check, value, name: str, **kwargs):
    """`check(value, name)` from pops.base.checks (the same ranges as the Python API), as a one-line CLI error."""
    return run_or_fail(check, value, name, **kwargs)
