"""Shared fixtures: tiny random priors and operators built locally (no network), one torch thread. The builders
themselves live in tests/helpers (test files import them from there, never from one another)."""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers.priors import tiny_operator as build_tiny_operator
from tests.helpers.priors import tiny_prior

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def make_tiny_prior():
    return tiny_prior


@pytest.fixture
def tiny_operator():
    """The builder of operators on tiny priors: tiny_operator(kind="texturing", dim=32, text_width=None, seed=0)."""
    return build_tiny_operator


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny models (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`):
    a second intra-op thread buys nothing at that size and, on a busy 2-core machine, every op then waits for it
    (measured 0.7 ms vs 26 ms per conv under load; tiny priors train ~10x faster). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
