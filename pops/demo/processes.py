"""Worker processes that never outlive their parent: `die_with_parent` is the initializer of the demo's process pool.

A parent killed with SIGKILL runs no clean-up, so its pool cannot stop its workers; they would be reparented to init
and keep training and writing into the output folder. On Linux the kernel ends them (PR_SET_PDEATHSIG: SIGKILL to
the worker when its parent dies); elsewhere a daemon thread polls the parent's pid and exits the worker. This module
imports only the standard library, so a spawned worker arms the signal at once, before it imports torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_SECONDS = 1.0


def die_with_parent(parent_pid: int) -> None:
    """Make this process end when `parent_pid` (the process that started it) ends."""
    if not (sys.platform.startswith("linux") and _set_parent_death_signal()):
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="die-with-parent").start()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def _set_parent_death_signal() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os._exit(1)
