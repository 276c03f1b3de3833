"""The bad-input harness: run one case (a CLI command in-process, an API call, a UI request) and judge it — a clean
refusal is a non-zero exit (or the documented exception, or the UI's error status) with ONE line naming the
problem, no traceback, and no file under the world new or changed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.helpers.cli import run_cli


@dataclass
class Outcome:
    """What a case did: an exit code (CLI) or None, the text it showed, the exception that escaped (if any)."""

    code: int | None
    text: str
    exception: BaseException | None = None
    refused: bool = False  # API / UI: the documented exception was raised, or the error status was shown


@dataclass
class Verdict:
    clean: bool
    traceback: bool
    changed: list[str]
    why: str


def cli_outcome(*args) -> Outcome:
    """`pops ARGS` in this process; a crash is kept, to be judged."""
    result = run_cli(*args, crash_ok=True)
    exception = result.exception if not isinstance(result.exception, SystemExit) else None
    return Outcome(result.exit_code, result.output, exception)


def api_outcome(call, refusals=(ValueError, TypeError, OSError)) -> Outcome:
    """Call `call()`; the documented refusals are ValueError (pops.base.checks.BadValue is also a TypeError), TypeError
    and OSError (FileNotFoundError, …)."""
    try:
        call()
    except refusals as exc:
        return Outcome(None, str(exc), None, refused=True)
    except Exception as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}", exc)
    return Outcome(None, "(accepted)", None)


def ui_outcome(call) -> Outcome:
    """A UI request: the page shows the error status ('**Error…'), never 'internal error'."""
    try:
        out = call()
    except Exception as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}", exc)
    text = out.status.replace("**Error:** ", "").replace("**Error**", "").replace("```", "").strip()
    refused = not out.ok and out.status.startswith("**Error") and "internal error" not in out.status
    return Outcome(None, text.splitlines()[0] if refused and text else out.status, None, refused=refused)


def no_server(*args, **kwargs):
    """Stands in for `pops.ui.serve` while cases run: a server that would start means the input was accepted."""
    raise AssertionError("the server would have started: the bad input was not refused")


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under root: (size, mtime) — what a case must leave unchanged."""
    state = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        state[str(path.relative_to(root))] = ("dir",) if path.is_dir() else (st.st_size, st.st_mtime_ns)
    return state


def judge(outcome: Outcome, expect: str, before: dict, after: dict, *, api: bool) -> Verdict:
    """Clean: refused (a non-zero exit and an `error:` line, or for an API call / UI request the documented refusal)
    in ONE line holding `expect` (case-insensitive), no traceback, nothing changed between the snapshots."""
    changed = sorted(set(before) ^ set(after) | {k for k in before if k in after and before[k] != after[k]})
    lines = [line for line in outcome.text.splitlines() if line.strip()]
    traceback = outcome.exception is not None or "Traceback" in outcome.text
    if api:
        ok = outcome.refused and len(lines) == 1
    else:
        ok = outcome.code not in (0, None) and len(lines) == 1 and lines[0].startswith("error: ")
    ok = ok and expect.lower() in outcome.text.lower() and not traceback and not changed
    why = "" if ok else f"exit {outcome.code}, {len(lines)} line(s): {outcome.text[-400:]!r}; changed {changed[:5]}"
    return Verdict(ok, traceback, changed, why)


def try_case(case, world) -> Verdict:
    """Run one case of the table in the world and judge it."""
    before = snapshot(world.root)
    outcome = case.run(world)
    return judge(outcome, case.expect, before, snapshot(world.root), api=case.api)
