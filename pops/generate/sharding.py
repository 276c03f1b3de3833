"""Splitting sample indices over processes with accelerate.

Each rank takes a contiguous slice of the indices from `PartialState.split_between_processes`; nothing is shared
but the output folder. Sample i depends only on (seed, i), so how indices are split never changes the data.

Launching: on GPUs, `accelerate launch --multi_gpu --num_processes K -m pops generate ...` (one GPU per process).
Without a GPU the same command still starts K processes (torchrun under the hood) and they split the work over
gloo on the CPU; note that `accelerate launch --cpu` starts a single process unless an MPI host file is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shard:
    rank: int
    world_size: int
    indices: list[int]
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def state():
    """accelerate's process state; on a machine without an accelerator (or under `--cpu`) a CPU (gloo) one."""
    # accelerate is imported on first use, so `import pops.generate` (the dataset readers, `pops pairs`) goes without it
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not has_accelerator)


def current_shard(indices: Sequence[int]) -> Shard:
    """This process's share of `indices` (all of them when not launched with accelerate)."""
    state_ = state()
    with state_.split_between_processes(list(indices)) as mine:
        mine = list(mine)
    return Shard(rank=state_.process_index, world_size=state_.num_processes, indices=mine, device=state_.device)


def gather(obj) -> list:
    """One entry per rank (just [obj] in a single process)."""
    from accelerate.utils import gather_object  # on first use, as in `state`

    if state().num_processes == 1:
        return [obj]
    return gather_object([obj])
