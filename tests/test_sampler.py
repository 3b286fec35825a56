"""Identity-balanced, distributed and inference samplers."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from occreid.data.sampler import DistributedIdentitySampler, IdentityBalancedSampler, InferenceSampler
from occreid.errors import ConfigError

# 10 identities with 1..10 images each (55 images); index i belongs to PIDS[i]
PIDS = [pid for pid in range(10) for _ in range(pid + 1)]


def _batches(sampler: IdentityBalancedSampler, size: int) -> list[list]:
    items = list(sampler)
    assert len(items) == len(sampler)
    return [items[i : i + size] for i in range(0, len(items), size)]


def test_every_batch_has_p_distinct_ids_times_k() -> None:
    p, k = 4, 3
    s = IdentityBalancedSampler(PIDS, p, k, seed=1)
    # chunks per id: max(1, n // 3) for n = 1..10 -> 1,1,1,1,1,2,2,2,3,3 = 17 -> 17 // 4 = 4 batches
    assert s.batches_per_epoch == 4
    batches = _batches(s, p * k)
    assert len(batches) == 4 and all(len(b) == p * k for b in batches)
    for batch in batches:
        ids = [PIDS[i] for i in batch]
        for j in range(p):
            block = ids[j * k : (j + 1) * k]
            assert len(set(block)) == 1  # K images of one identity, contiguous
        assert len(set(ids)) == p
        assert Counter(ids) == {pid: k for pid in set(ids)}
    # an identity with fewer than K images repeats them (replacement); the first one has a single image
    assert all(b[j * k : (j + 1) * k] == [0] * k for b in batches for j in range(p) if PIDS[b[j * k]] == 0)


def test_epoch_covers_about_the_dataset() -> None:
    pids = [pid for pid in range(30) for _ in range(8)]  # 240 images, 2 chunks of 4 per id
    s = IdentityBalancedSampler(pids, 6, 4, seed=0)
    assert s.batches_per_epoch == 60 // 6
    flat = list(s)
    assert len(flat) == 240
    # one pass, up to leftovers carried into a fresh round: nearly every image once, none three times
    assert len(set(flat)) >= 0.9 * 240 and max(Counter(flat).values()) <= 2


def test_deterministic_per_seed_and_epoch() -> None:
    a = list(IdentityBalancedSampler(PIDS, 4, 2, seed=3, epoch=2))
    b = list(IdentityBalancedSampler(PIDS, 4, 2, seed=3, epoch=2))
    assert a == b
    s = IdentityBalancedSampler(PIDS, 4, 2, seed=3)
    s.set_epoch(5)
    assert list(s) != a
    assert list(IdentityBalancedSampler(PIDS, 4, 2, seed=4, epoch=2)) != a


def test_state_resume_mid_epoch() -> None:
    s = IdentityBalancedSampler(PIDS, 4, 2, seed=7, item_seeds=True)
    s.set_epoch(3)
    full = list(s)
    state = {**s.state_dict(), "start_batch": 2}
    resumed = IdentityBalancedSampler(PIDS, 4, 2, seed=0, item_seeds=True)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == {"seed": 7, "epoch": 3, "start_batch": 2}
    assert list(resumed) == full[2 * 8 :]
    assert len(resumed) == len(full) - 16
    # item seeds belong to positions: unique within the epoch, same after the restart
    assert len({seed for _, seed in full}) == len(full)


def test_distributed_slices_reassemble_global_batches() -> None:
    p, k, world = 4, 2, 4
    single = _batches(IdentityBalancedSampler(PIDS, p, k, seed=11, epoch=1, item_seeds=True), p * k)
    per_rank = []
    for r in range(world):
        d = DistributedIdentitySampler(
            PIDS, p, k, rank=r, world_size=world, seed=11, epoch=1, item_seeds=True
        )
        assert d.local_batch_size == 2 and d.batches_per_epoch == len(single)
        per_rank.append(_batches(d, d.local_batch_size))
    for b, batch in enumerate(single):
        assert [x for r in range(world) for x in per_rank[r][b]] == batch
    # mid-epoch resume on a rank keeps its slice of the remaining global batches
    d = DistributedIdentitySampler(PIDS, p, k, rank=1, world_size=world, seed=11, epoch=1, item_seeds=True)
    d.set_epoch(1, start_batch=1)
    assert list(d) == [x for batch in per_rank[1][1:] for x in batch]


def test_sampler_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="ids_per_batch"):
        IdentityBalancedSampler([0, 0, 1, 1], 3, 2)
    with pytest.raises(ConfigError, match="divisible"):
        DistributedIdentitySampler(PIDS, 3, 3, rank=0, world_size=2)


@pytest.mark.parametrize("n,world", [(10, 3), (2, 4), (9, 3), (0, 2)])
def test_inference_sampler_padding(n: int, world: int) -> None:
    shards = [InferenceSampler(n, r, world) for r in range(world)]
    lengths = {len(list(s)) for s in shards}
    assert len(lengths) <= 1 and all(len(s) == len(list(s)) for s in shards)
    counts = shards[0].real_counts()
    assert sum(counts) == n
    rebuilt = []
    for s, c in zip(shards, counts):
        items = list(s)
        assert s.padding == len(items) - c
        rebuilt += items[:c]
    assert rebuilt == list(range(n))
    if n == 10 and world == 3:  # shards of 4: 0-3, 4-7, 8-9 + two repeats of 9
        assert list(shards[2]) == [8, 9, 9, 9] and shards[2].padding == 2


def test_item_seed_stream_independent_of_order_stream() -> None:
    s = IdentityBalancedSampler(PIDS, 4, 2, seed=5, item_seeds=True)
    seeds = np.array([seed for _, seed in s])
    assert seeds.dtype.kind == "i" and (seeds >= 0).all()
    assert [i for i, _ in s] == list(IdentityBalancedSampler(PIDS, 4, 2, seed=5))
