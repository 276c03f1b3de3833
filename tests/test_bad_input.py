"""The systematic bad-input suite: every case of tests/bad_input_cases.py (entry points x kinds of bad input) must be
a clean refusal — a non-zero exit (or the documented exception, or the UI's error status) with ONE line naming the
problem, no traceback, and no file new or changed. `python tests/bad_input_table.py` prints the table."""

from __future__ import annotations

import os

import pytest
from bad_input_cases import CASES, ENTRIES, KINDS
from bad_input_env import World, build, judge, no_server, snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("bad-input")
    build(root)
    cwd = os.getcwd()
    os.chdir(root)  # the Backend offers "models" relative to the folder the cases run in
    try:
        yield World(root)
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("case", CASES, ids=[f"{i:03d}-{c.id}" for i, c in enumerate(CASES)])
def test_bad_input_is_refused_in_one_line_and_writes_nothing(case, world, monkeypatch):
    monkeypatch.chdir(world.root)
    monkeypatch.setattr("pops.ui.serve", no_server)
    before = snapshot(world.root)
    outcome = case.run(world)
    verdict = judge(outcome, case.expect, before, snapshot(world.root), api=case.api)
    assert verdict.clean, verdict.why


def test_the_table_covers_every_entry_point_with_many_kinds():
    kinds_per_entry = {entry: {c.kind for c in CASES if c.entry == entry} for entry in ENTRIES}
    assert set(kinds_per_entry) == set(ENTRIES) and all(kinds_per_entry.values())
    assert {c.kind for c in CASES} == set(KINDS) and len(KINDS) >= 15
    assert len(CASES) >= 400
    for entry in ENTRIES:  # the bar: at least 15 kinds of bad input for every entry point
        assert len(kinds_per_entry[entry]) >= 15, (entry, sorted(kinds_per_entry[entry]))
