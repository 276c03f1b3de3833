"""`pops ARGS` in this process, as the installed `pops` command runs them."""

from __future__ import annotations

import importlib

_APP = None


def cli_app():
    """The full `pops` app: every sub-command module imported, so each registers itself (what `pops.cli.main`
    does)."""
    global _APP
    if _APP is None:
        from pops.cli import COMMANDS
        from pops.cli.app import app

        for name in COMMANDS:
            importlib.import_module(f"pops.cli.{name}")
        _APP = app
    return _APP


def run_cli(*args, crash_ok: bool = False):
    """Run `pops ARGS` with click's CliRunner; arguments may be paths or numbers. Returns click's Result: exit_code,
    output (stdout and stderr), stderr.

    A command ends with its exit code (a refusal is exit 1 and an `error:` line); an exception other than that exit
    is a crash and is raised here, so no test mistakes it for a refusal. `crash_ok=True` leaves it in
    `result.exception` instead (the bad-input harness judges crashes itself)."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli_app(), [str(a) for a in args])
    if not crash_ok and result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result
