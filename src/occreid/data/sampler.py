"""Samplers: identity-balanced P x K training batches (single process and DDP) and inference shards.

An epoch's batch order is a pure function of (seed, epoch), so a resumed run replays the same batches,
and the distributed sampler hands each rank a contiguous slice of exactly those global batches: N
processes x (P x K / N) images see the same global batches as one process with P x K.

With `item_seeds=True` the samplers yield `(index, item_seed)` pairs instead of plain indices. The
item seed is a function of (seed, epoch, position of the item in the epoch's global order), so a
`ReidImageDataset` draws the same augmentation for the same batch position after a restart, in any
DataLoader worker and on any rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from occreid.errors import ConfigError

# Stream tags mixed into the seed so the batch order and the item seeds are independent draws.
_ORDER_STREAM = 0
_ITEM_SEED_STREAM = 1


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), stream]))


def epoch_item_seeds(seed: int, epoch: int, count: int) -> np.ndarray:
    """The per-position augmentation seeds of one epoch (int64, [count]), a function of (seed, epoch)."""
    return _rng(seed, epoch, _ITEM_SEED_STREAM).integers(0, 2**62, size=count, dtype=np.int64)


class IdentityBalancedSampler(Sampler):
    """Batches of P identities x K images, flattened into one index stream (use batch_size = P * K).

    Per epoch, like torchreid's RandomIdentitySampler: each identity's images are shuffled and cut into
    chunks of K (the remainder is dropped; an identity with fewer than K images is drawn with
    replacement up to K); each batch takes one chunk from P distinct identities. Decision: the P
    identities are drawn with probability proportional to their remaining chunks (torchreid draws them
    uniformly), so identities tend to run out together; when fewer than P identities have chunks left,
    a fresh round of chunks is queued behind the leftovers (torchreid drops them). Every epoch thus has
    exactly `batches_per_epoch` = (images in chunks) // (P * K) batches, about one pass over the data.
    """

    def __init__(
        self,
        pids: Sequence[int],
        ids_per_batch: int,
        instances_per_id: int,
        seed: int = 0,
        epoch: int = 0,
        item_seeds: bool = False,
    ) -> None:
        if ids_per_batch < 1 or instances_per_id < 1:
            raise ConfigError(
                f"data.ids_per_batch ({ids_per_batch}) and data.instances_per_id ({instances_per_id}) "
                "must both be >= 1"
            )
        pids_arr = np.asarray(list(pids), dtype=np.int64)
        unique, inverse = np.unique(pids_arr, return_inverse=True)
        if len(unique) < ids_per_batch:
            raise ConfigError(
                f"data.ids_per_batch is {ids_per_batch} but the training split has only {len(unique)} "
                "identities; lower data.ids_per_batch"
            )
        self.ids_per_batch = ids_per_batch
        self.instances_per_id = instances_per_id
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.start_batch = 0
        self.item_seeds = item_seeds
        order = np.argsort(inverse, kind="stable")
        counts = np.bincount(inverse, minlength=len(unique))
        self._members = np.split(order, np.cumsum(counts)[:-1])
        self._chunks_per_id = np.maximum(counts // instances_per_id, 1)
        self.batches_per_epoch = max(1, int(self._chunks_per_id.sum()) // ids_per_batch)

    @property
    def batch_size(self) -> int:
        """The global batch P * K."""
        return self.ids_per_batch * self.instances_per_id

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch; `start_batch` skips that many global batches (mid-epoch resume)."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch {start_batch} outside 0..{self.batches_per_epoch}")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "start_batch": self.start_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.set_epoch(int(state["epoch"]), int(state.get("start_batch", 0)))

    def _round_chunks(self, rng: np.random.Generator) -> list[list[np.ndarray]]:
        """One round: per identity, a list of index chunks of length K."""
        k = self.instances_per_id
        chunks = []
        for members in self._members:
            if len(members) < k:
                picked = rng.choice(members, size=k, replace=True)
            else:
                picked = rng.permutation(members)[: len(members) - len(members) % k]
            chunks.append(list(picked.reshape(-1, k)))
        return chunks

    def global_batches(self) -> np.ndarray:
        """All batches of the current epoch as an int64 array [batches_per_epoch, P * K]."""
        rng = _rng(self.seed, self.epoch, _ORDER_STREAM)
        p = self.ids_per_batch
        batches: list[np.ndarray] = []
        chunks = self._round_chunks(rng)
        remaining = np.array([len(c) for c in chunks], dtype=np.int64)
        while len(batches) < self.batches_per_epoch:
            if np.count_nonzero(remaining) < p:
                # Too few identities left: queue a fresh round behind the leftover chunks.
                chunks = [fresh + left for fresh, left in zip(self._round_chunks(rng), chunks)]
                remaining = np.array([len(c) for c in chunks], dtype=np.int64)
            ids = rng.choice(len(chunks), size=p, replace=False, p=remaining / remaining.sum())
            batches.append(np.concatenate([chunks[i].pop() for i in ids]))
            remaining[ids] -= 1
        return np.stack(batches)

    def _positions(self) -> np.ndarray:
        """Positions (in the epoch's flattened global order) this sampler yields, from start_batch on."""
        b = self.batch_size
        return np.arange(self.start_batch * b, self.batches_per_epoch * b, dtype=np.int64)

    def __iter__(self) -> Iterator[Any]:
        flat = self.global_batches().reshape(-1)
        positions = self._positions()
        indices = flat[positions].tolist()
        if not self.item_seeds:
            return iter(indices)
        seeds = epoch_item_seeds(self.seed, self.epoch, flat.size)[positions].tolist()
        return iter(zip(indices, seeds))

    def __len__(self) -> int:
        return len(self._positions())


class DistributedIdentitySampler(IdentityBalancedSampler):
    """The single-process batch order, each global batch cut into `world_size` contiguous slices.

    Rank r yields items [r * B / W, (r + 1) * B / W) of every global batch B = P * K; use a per-rank
    DataLoader batch size of B / W. Concatenating the ranks' local batches in rank order gives back the
    global batch exactly.
    """

    def __init__(
        self,
        pids: Sequence[int],
        ids_per_batch: int,
        instances_per_id: int,
        rank: int,
        world_size: int,
        seed: int = 0,
        epoch: int = 0,
        item_seeds: bool = False,
    ) -> None:
        super().__init__(pids, ids_per_batch, instances_per_id, seed, epoch, item_seeds)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
        if self.batch_size % world_size:
            raise ConfigError(
                f"the global batch data.ids_per_batch x data.instances_per_id = {self.batch_size} is not "
                f"divisible by the {world_size} processes; change one of them"
            )
        self.rank = rank
        self.world_size = world_size

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.world_size

    def _positions(self) -> np.ndarray:
        b, lb = self.batch_size, self.local_batch_size
        starts = np.arange(self.start_batch, self.batches_per_epoch, dtype=np.int64) * b + self.rank * lb
        return (starts[:, None] + np.arange(lb, dtype=np.int64)[None, :]).reshape(-1)


class InferenceSampler(Sampler):
    """Contiguous shards of range(n), one per rank, padded to equal length by repeating the last index.

    Every rank yields `shard_size` indices (so all-gathers line up); the last `padding` of them are
    repeats to drop. `real_counts()` gives every rank's number of real rows, in rank order: keeping that
    many leading rows of each rank's gathered block reassembles 0..n-1 in order.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        if n < 0 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid inference shard: n={n}, rank={rank}, world_size={world_size}")
        self.n = n
        self.rank = rank
        self.world_size = world_size
        self.shard_size = math.ceil(n / world_size)
        self.start = min(rank * self.shard_size, n)
        self.stop = min(self.start + self.shard_size, n)
        self.padding = self.shard_size - (self.stop - self.start)

    def real_counts(self) -> list[int]:
        return [min(self.shard_size, max(0, self.n - r * self.shard_size)) for r in range(self.world_size)]

    def __iter__(self) -> Iterator[int]:
        indices = list(range(self.start, self.stop))
        return iter(indices + [max(self.n - 1, 0)] * self.padding if self.n else [])

    def __len__(self) -> int:
        return self.shard_size
