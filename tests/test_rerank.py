"""k-reciprocal re-ranking against a plain per-row implementation of Zhong et al. 2017 written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occreid.evaluation import k_reciprocal_rerank


def reciprocal_set(rank, i, k):
    forward = rank[i, :k + 1]
    return [int(c) for c in forward if i in rank[c, :k + 1]]


def loop_rerank(q_g, q_q, g_g, k1, k2, lam):
    """Per-row reference: squared, column-max normalised distances, as the authors' code."""
    nq = q_g.shape[0]
    full = np.block([[q_q, q_g], [q_g.T, g_g]])
    dist = (full.astype(np.float64) ** 2).astype(np.float32)
    dist = (dist / dist.max(axis=0)).T  # orig[i, j] = D^2[j, i] / max_k D^2[k, i]
    n = dist.shape[0]
    rank = np.argsort(dist, axis=1, kind="stable")
    half = int(np.around(k1 / 2.0))
    v = np.zeros((n, n))
    for i in range(n):
        r_i = reciprocal_set(rank, i, k1)
        expanded = set(r_i)
        for c in r_i:
            r_c = reciprocal_set(rank, c, half)
            if len(set(r_c) & set(r_i)) > 2.0 / 3 * len(r_c):
                expanded |= set(r_c)
        idx = sorted(expanded)
        w = np.exp(-dist[i, idx].astype(np.float64))
        v[i, idx] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    final = np.zeros((nq, n - nq))
    for i in range(nq):
        for j in range(nq, n):
            inter = np.minimum(v[i], v[j]).sum()
            union = np.maximum(v[i], v[j]).sum()
            final[i, j - nq] = (1 - inter / union) * (1 - lam) + dist[i, j] * lam
    return final


def problem(seed, nq, ng, dim):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(nq + ng, dim, generator=g, dtype=torch.float64)
    x[nq:nq + ng // 2] += x[: min(nq, ng // 2)].repeat(ng // 2 // nq + 1, 1)[: ng // 2] * 0.5  # clusters
    d = torch.cdist(x, x).numpy()
    return d[:nq, nq:], d[:nq, :nq], d[nq:, nq:]


@pytest.mark.parametrize(("seed", "k1", "k2", "lam"), [(0, 20, 6, 0.3), (1, 6, 3, 0.5), (2, 5, 1, 0.2),
                                                        (3, 9, 4, 0.0)])
def test_matches_loop_reference(seed, k1, k2, lam):
    qg, qq, gg = problem(seed, 12, 45, 5)
    ours = k_reciprocal_rerank(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    ref = loop_rerank(qg, qq, gg, k1, k2, lam)
    assert ours.shape == (12, 45)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_small_chunks_and_pair_budget_give_the_same_result():
    qg, qq, gg = problem(4, 10, 30, 4)
    a = k_reciprocal_rerank(qg, qq, gg, k1=8, k2=3)
    b = k_reciprocal_rerank(torch.from_numpy(qg), torch.from_numpy(qq), torch.from_numpy(gg), k1=8, k2=3,
                            chunk=7, max_pairs=50)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_lambda_one_is_the_normalised_squared_distance():
    # hand check of the input convention: inputs are squared, then divided by the column maximum
    qg = np.array([[1.0, 2.0]])
    qq = np.array([[0.0]])
    gg = np.array([[0.0, 3.0], [3.0, 0.0]])
    out = k_reciprocal_rerank(qg, qq, gg, k1=1, k2=1, lambda_value=1.0)
    # the query row of D^2 is [0, 1, 4]: its maximum (column 0 of the symmetric matrix) is 4
    np.testing.assert_allclose(out, [[1 / 4, 4 / 4]], atol=1e-7)


def test_asymmetric_float32_inputs_follow_the_reference_transpose():
    # the reference normalises columns of D^2 and transposes: with q_q / g_g not symmetric (e.g. a learnt
    # distance) every row of the result reads a column of the input
    rng = np.random.default_rng(5)
    qg, qq, gg = (x + rng.random(x.shape) * 0.3 for x in problem(6, 9, 31, 4))
    qg, qq, gg = (x.astype(np.float32) for x in (qg, qq, gg))
    ours = k_reciprocal_rerank(qg, qq, gg, k1=7, k2=3, lambda_value=0.3, chunk=4)
    np.testing.assert_allclose(ours, loop_rerank(qg, qq, gg, 7, 3, 0.3), atol=1e-4)


def test_gathered_entries_have_the_bits_of_the_streamed_rows():
    from occreid.evaluation.rerank import _original_distance, _original_entries

    qg, qq, gg = (torch.from_numpy(x) for x in problem(7, 6, 20, 3))
    n = 26
    row_max, rank, q_block = _original_distance(qg, qq, gg, 5, chunk=4)
    rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    dense = _original_entries(qg, qq, gg, row_max, rows.reshape(-1), cols.reshape(-1)).view(n, n)
    full = torch.from_numpy(np.block([[qq.numpy(), qg.numpy()], [qg.numpy().T, gg.numpy()]]))
    expected = full.t().pow(2).float()
    expected = expected / expected.amax(dim=1, keepdim=True)
    assert torch.equal(dense, expected)
    assert torch.equal(q_block, dense[:6, 6:])
    assert torch.equal(rank, torch.topk(expected, 5, dim=1, largest=False, sorted=True).indices)
