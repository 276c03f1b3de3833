"""The training stream over cached embeddings: deterministic order, resumable position, sharding across processes.

The data is a `Pairs` file (a few tensors that fit in memory), so batches are plain tensor indexing — no DataLoader
workers or per-sample collation, which would cost more than a small prior's training step.

Order: an endless stream of epochs, each a permutation of the N samples drawn from `seed + epoch`. The position in the
stream is the number of samples consumed (`samples_seen`), saved in every checkpoint.

Sharding: one optimiser step consumes a *global batch* of `G = micro × processes × accumulation` samples, cut into
`processes × accumulation` *shards* of `micro` samples. Shard `s = micro_step × processes + rank`; its randomness
(condition
dropout, timesteps, noise) comes from a generator seeded by (seed, step, s). So every sample of a step sees the same
data and the same random draws whether the shards run on P processes or one after the other on one — a run on P
processes × A accumulation steps equals a run on 1 process × P·A accumulation steps.
"""

from __future__ import annotations

import numpy as np
import torch

from pops.embeddings.pairs import Batch, Pairs


class PairStream:
    """Deterministically shuffled, resumable, shardable batches over a `Pairs` set."""

    def __init__(self, pairs: Pairs, seed: int = 0, device: torch.device | str = "cpu"):
        if len(pairs) == 0:
            raise ValueError("the training pairs are empty")
        self.pairs = _pairs_to(pairs, torch.device(device))
        self.seed = int(seed)
        self._epoch_cache: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The permutation of sample indices for one epoch (same on every process and every run)."""
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            generator = torch.Generator().manual_seed(_mix(self.seed, epoch, 0x5EED))
            self._epoch_cache = (epoch, torch.randperm(len(self), generator=generator))
        return self._epoch_cache[1]

    def indices(self, start: int, count: int) -> torch.Tensor:
        """Stream positions [start, start + count) as sample indices (crossing epoch boundaries as needed)."""
        n = len(self)
        out, pos = [], start
        while pos < start + count:
            epoch, offset = divmod(pos, n)
            take = min(n - offset, start + count - pos)
            out.append(self.epoch_order(epoch)[offset : offset + take])
            pos += take
        return torch.cat(out)

    def shard(self, samples_seen: int, micro: int, shard: int) -> Batch:
        """Shard `shard` (of `micro` samples) of the global batch that starts at stream position `samples_seen`."""
        index = self.indices(samples_seen + shard * micro, micro).to(self.pairs.target.device)
        return self.pairs.batch(index)


def shard_generator(seed: int, step: int, shard: int) -> torch.Generator:
    """The generator of one shard's random draws (dropout, timesteps, noise): a function of (seed, step, shard) only."""
    return torch.Generator().manual_seed(_mix(seed, step, shard))


def _mix(*values: int) -> int:
    # SeedSequence hashes the tuple into well-spread state; nearby (step, shard) pairs get unrelated streams.
    return int(np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _pairs_to(pairs: Pairs, device: torch.device) -> Pairs:
    """The pairs with every tensor on `device` (once, so batches are indexed where the model runs)."""
    if device.type == "cpu":
        return pairs

    def move(x):
        return None if x is None else x.to(device)

    slots = [(move(s[0]), move(s[1])) if isinstance(s, tuple) else move(s) for s in pairs.slots]
    return Pairs(
        kind=pairs.kind,
        slots=slots,
        present=move(pairs.present),
        target=move(pairs.target),
        align_text=move(pairs.align_text),
        class_ids=pairs.class_ids,
        info=pairs.info,
    )
