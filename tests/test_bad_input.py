"""The systematic bad-input suite: every case of THE table, tests/helpers/bad_input/cases.py (entry points x kinds of
bad input), must be a clean refusal — a non-zero exit (or the documented exception, or the UI's error status) with
ONE line naming the problem, no traceback, and no file new or changed. `python -m tests.helpers.bad_input` prints
the table."""

from __future__ import annotations

import pytest

from tests.helpers.bad_input.cases import CASES, ENTRIES, KINDS
from tests.helpers.bad_input.harness import no_server, try_case
from tests.helpers.bad_input.world import World, entered

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    with entered(tmp_path_factory.mktemp("bad-input")) as world:
        yield world


@pytest.mark.parametrize("case", CASES, ids=[f"{i:03d}-{c.id}" for i, c in enumerate(CASES)])
def test_bad_input_is_refused_in_one_line_and_writes_nothing(case, world, monkeypatch):
    monkeypatch.chdir(world.root)
    monkeypatch.setattr("pops.ui.serve", no_server)
    verdict = try_case(case, world)
    assert verdict.clean, verdict.why


def test_the_table_covers_every_entry_point_with_many_kinds():
    kinds_per_entry = {entry: {c.kind for c in CASES if c.entry == entry} for entry in ENTRIES}
    assert set(kinds_per_entry) == set(ENTRIES) and all(kinds_per_entry.values())
    assert {c.kind for c in CASES} == set(KINDS) and len(KINDS) >= 15
    assert len(CASES) >= 400
    for entry in ENTRIES:  # the bar: at least 15 kinds of bad input for every entry point
        assert len(kinds_per_entry[entry]) >= 15, (entry, sorted(kinds_per_entry[entry]))
