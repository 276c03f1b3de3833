"""Print the bad-input table: kinds of bad input x entry points, each cell `clean/tried`, then the totals (clean
refusals, tracebacks, cases that left files behind). Run from the repository root:

    OMP_NUM_THREADS=1 python -m tests.helpers.bad_input
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from tests.helpers.bad_input.cases import CASES, ENTRIES, KINDS  # noqa: E402
from tests.helpers.bad_input.harness import no_server, try_case  # noqa: E402
from tests.helpers.bad_input.world import entered  # noqa: E402


def main() -> int:
    torch.set_num_threads(1)
    started = time.perf_counter()
    tried, clean, tracebacks, changed = Counter(), Counter(), 0, 0
    failures = []
    with tempfile.TemporaryDirectory() as tmp, entered(Path(tmp)) as world, mock.patch("pops.ui.serve", no_server):
        for case in CASES:
            verdict = try_case(case, world)
            tried[case.kind, case.entry] += 1
            clean[case.kind, case.entry] += verdict.clean
            tracebacks += verdict.traceback
            changed += bool(verdict.changed)
            if not verdict.clean:
                failures.append(f"{case.entry} / {case.kind} / {case.expect}: {verdict.why}")
    width = max(len(k) for k in KINDS) + 2
    print(f"{'kind':<{width}}" + "".join(f"{e:>10}" for e in ENTRIES) + f"{'all':>10}")
    for kind in KINDS:
        cells = [f"{clean[kind, e]}/{tried[kind, e]}" if tried[kind, e] else "-" for e in ENTRIES]
        row_tried = sum(tried[kind, e] for e in ENTRIES)
        row_clean = sum(clean[kind, e] for e in ENTRIES)
        print(f"{kind:<{width}}" + "".join(f"{c:>10}" for c in cells) + f"{f'{row_clean}/{row_tried}':>10}")
    kinds = [len({k for k in KINDS if tried[k, e]}) for e in ENTRIES]
    print(f"{'kinds tried':<{width}}" + "".join(f"{n:>10}" for n in kinds))
    total = sum(tried.values())
    print(
        f"\n{total} cases, {len(KINDS)} kinds, {len(ENTRIES)} entry points: {sum(clean.values())} clean refusals, "
        f"{tracebacks} tracebacks, {changed} left files new or changed ({time.perf_counter() - started:.0f} s)"
    )
    for line in failures:
        print("NOT CLEAN:", line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
