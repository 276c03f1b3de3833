"""How pops says what went wrong: one line, naming the value or the file.

`BadValue` is the error of every boundary check (pops.base.checks): both a TypeError and a ValueError, so API callers
get the type error they expect for `steps="10"`, and every `except ValueError` boundary (the CLI's `run_or_fail`, the
UI's status line) turns it into one message. `reason` is the one line of any exception that such a boundary shows.
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BadValue(TypeError, ValueError):
    """A value of the wrong type or out of range (one line naming the argument)."""


def reason(exc: BaseException) -> str:
    """The first line of an exception's message (terminal colour codes removed), or its type name when it is empty."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is None and exc.errno is not None:
        text = str(exc.strerror)  # OSError(errno, message): the message, without "[Errno N]"
    else:
        text = _ANSI.sub("", str(exc)).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
