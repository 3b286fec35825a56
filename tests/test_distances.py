"""Global and part distances against explicit loops; the no-common-part rule; flip averaging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from occreid.evaluation import NO_COMMON_PART_DISTANCE, flip_average, global_distance, part_distance


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v] if n > 0 else list(v)


def pair(a, b, metric):
    if metric == "cosine":
        a, b = unit(a), unit(b)
        return 1.0 - sum(x * y for x, y in zip(a, b))
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def loop_part_distance(q, g, vq, vg, mode, metric, normalize):
    nq, p, _ = q.shape
    out = np.zeros((nq, g.shape[0]))
    empty = np.zeros_like(out, dtype=bool)
    for i in range(nq):
        for j in range(g.shape[0]):
            num = den = 0.0
            for k in range(p):
                a, b = q[i, k].tolist(), g[j, k].tolist()
                if normalize:
                    a, b = unit(a), unit(b)
                if mode == "binary":
                    w = 1.0 if (vq[i, k] > 0.5 and vg[j, k] > 0.5) else 0.0
                else:
                    w = math.sqrt(vq[i, k] * vg[j, k])
                num += w * pair(a, b, metric)
                den += w
            if den > 0:
                out[i, j] = num / den
            else:
                empty[i, j] = True
    return out, empty


@pytest.mark.parametrize("mode", ["binary", "continuous"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_part_distance_matches_loops(mode, metric):
    g_ = torch.Generator().manual_seed(0)
    q, g = torch.randn(5, 4, 6, generator=g_), torch.randn(7, 4, 6, generator=g_)
    vq, vg = torch.rand(5, 4, generator=g_), torch.rand(7, 4, generator=g_)
    vq[0] = 0.0  # query 0 sees nothing: no common part with anyone
    ours = part_distance(q, g, vq, vg, mode=mode, metric=metric, chunk=3)
    ref, empty = loop_part_distance(q.numpy(), g.numpy(), vq.numpy(), vg.numpy(), mode, metric, True)
    assert empty[0].all()
    np.testing.assert_allclose(ours.numpy()[~empty], ref[~empty], atol=1e-5)
    assert torch.all(ours[0] == NO_COMMON_PART_DISTANCE)


def test_binary_with_bool_visibility_and_hand_case():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    g = torch.tensor([[[0.0, 3.0], [0.0, 2.0], [5.0, 5.0]]])
    vis_q = torch.tensor([[True, True, False]])
    vis_g = torch.tensor([[True, True, True]])
    # part 0: unit (1,0) vs (0,1) -> sqrt(2); part 1: identical -> 0; part 2 hidden in the query
    d = part_distance(q, g, vis_q, vis_g)
    assert d.item() == pytest.approx(math.sqrt(2) / 2, abs=1e-6)
    # continuous: weights sqrt(1*1), sqrt(1*1), sqrt(0.25*1) on distances sqrt2, 0, |(1,0)-(.71,.71)|
    dc = part_distance(q, g, torch.tensor([[1.0, 1.0, 0.25]]), torch.ones(1, 3), mode="continuous")
    d2 = math.sqrt((1 - 1 / math.sqrt(2)) ** 2 + 0.5)
    assert dc.item() == pytest.approx((math.sqrt(2) + 0.5 * d2) / 2.5, abs=1e-6)


def test_binary_thresholds_float_visibility_and_differs_from_continuous():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    g = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    vq = torch.tensor([[0.9, 0.4]])  # part 1 counts as hidden in binary mode
    b = part_distance(q, g, vq, torch.ones(1, 2), mode="binary")
    c = part_distance(q, g, vq, torch.ones(1, 2), mode="continuous")
    assert b.item() == pytest.approx(math.sqrt(2), abs=1e-6)
    w0, w1 = math.sqrt(0.9), math.sqrt(0.4)
    assert c.item() == pytest.approx(w0 * math.sqrt(2) / (w0 + w1), abs=1e-6)


def test_no_common_part_unnormalised_uses_max_plus_one():
    q = torch.tensor([[[3.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]])
    g = torch.tensor([[[0.0, 4.0], [0.0, 0.0]]])
    vq = torch.tensor([[True, False], [False, True]])
    vg = torch.tensor([[True, False]])
    d = part_distance(q, g, vq, vg, normalize=False)
    assert d[0, 0].item() == pytest.approx(5.0)  # |(3,0) - (0,4)|
    assert d[1, 0].item() == pytest.approx(6.0)  # no common part: largest finite (5) + 1


def test_no_visibility_means_all_visible_and_shapes_checked():
    g_ = torch.Generator().manual_seed(1)
    q, g = torch.randn(3, 2, 4, generator=g_), torch.randn(4, 2, 4, generator=g_)
    ref, _ = loop_part_distance(q.numpy(), g.numpy(), np.ones((3, 2)), np.ones((4, 2)),
                                "binary", "euclidean", True)
    np.testing.assert_allclose(part_distance(q, g).numpy(), ref, atol=1e-5)
    with pytest.raises(ValueError):
        part_distance(q, torch.randn(4, 3, 4))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("normalize", [True, False])
def test_global_distance_matches_loops(metric, normalize):
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(4, 5)), rng.normal(size=(9, 5))
    ours = global_distance(q, g, metric=metric, normalize=normalize, chunk=4).numpy()
    for i in range(4):
        for j in range(9):
            a, b = (unit(q[i].tolist()), unit(g[j].tolist())) if normalize else (q[i].tolist(), g[j].tolist())
            assert ours[i, j] == pytest.approx(pair(a, b, metric), abs=1e-5)


def test_global_euclidean_identical_vectors_is_zero_not_nan():
    x = torch.randn(3, 8)
    d = global_distance(x, x)
    assert not torch.isnan(d).any()
    assert torch.all(torch.diagonal(d) < 1e-3)


def test_flip_average_normalises_once():
    a = torch.tensor([[3.0, 0.0]])
    b = torch.tensor([[0.0, 1.0]])
    out = flip_average(a, b)  # (1.5, 0.5) / |.| ; normalising each first would give (0.707, 0.707)
    np.testing.assert_allclose(out.numpy(), [[3 / math.sqrt(10), 1 / math.sqrt(10)]], atol=1e-6)
    parts = flip_average(torch.randn(4, 3, 5), torch.randn(4, 3, 5))
    np.testing.assert_allclose(parts.norm(dim=-1).numpy(), np.ones((4, 3)), atol=1e-6)
