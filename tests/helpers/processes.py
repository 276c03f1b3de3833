"""What a specification needs to run pops in another process: the checkout's root, its environment, a free port."""

from __future__ import annotations

import os
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout under test


def pops_env(**extra: str) -> dict:
    """The environment of a pops subprocess: this one's, with this checkout first on PYTHONPATH (not whichever pops
    is installed) and the hub offline; `extra` adds or overrides variables (OMP_NUM_THREADS="1", …)."""
    return dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", **extra)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
