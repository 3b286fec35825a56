"""TAR at FAR: orientation (genuine = same pid), thresholds, and a brute-force check."""

from __future__ import annotations

import numpy as np
import pytest

from occreid.evaluation import verification_rates


def test_perfectly_separable_gives_full_tar():
    # genuine pairs (same pid) are all closer than every impostor pair
    rng = np.random.default_rng(0)
    qp, gp = np.repeat(np.arange(10), 2), np.repeat(np.arange(10), 30)
    same = qp[:, None] == gp[None, :]
    d = np.where(same, rng.uniform(0.0, 0.4, same.shape), rng.uniform(0.6, 1.0, same.shape))
    r = verification_rates(d, qp, gp, fars=(1e-2,))
    assert r["tar"][0] == 1.0
    assert r["achieved_far"][0] <= 1e-2
    # reversed labels (fast-reid's ROC) would make the genuine pairs the far ones: TAR 0
    r_rev = verification_rates(-d, qp, gp, fars=(1e-2,))
    assert r_rev["tar"][0] == 0.0


def test_hand_worked_thresholds():
    d = np.array([[0.1, 0.3, 0.2, 0.4, 0.5, 0.6]])
    qp, gp = [1], [1, 1, 2, 3, 4, 5]
    # impostors 0.2, 0.4, 0.5, 0.6; FAR 0.25 accepts one (0.2), FAR 0.5 accepts two (0.2, 0.4)
    r = verification_rates(d, qp, gp, fars=(0.0, 0.25, 0.5))
    np.testing.assert_allclose(r["tar"], [0.5, 1.0, 1.0])  # genuine 0.3 passes once 0.2 is accepted
    np.testing.assert_allclose(r["achieved_far"], [0.0, 0.25, 0.5])
    assert r["threshold"][0] < 0.2 and r["threshold"][1] < 0.4 and r["threshold"][2] >= 0.4
    assert r["num_genuine"] == 2 and r["num_impostor"] == 4


@pytest.mark.parametrize("exclude", [False, True])
def test_matches_brute_force(exclude):
    rng = np.random.default_rng(3)
    d = rng.integers(0, 20, (12, 40)).astype(float)  # ties included
    qp, gp = rng.integers(0, 5, 12), rng.integers(0, 5, 40)
    qc, gc = rng.integers(0, 3, 12), rng.integers(0, 3, 40)
    fars = (0.01, 0.1, 0.3)
    r = verification_rates(d, qp, gp, fars=fars, exclude_same_camera=exclude, q_camids=qc, g_camids=gc)
    gen, imp = [], []
    for i in range(12):
        for j in range(40):
            if exclude and qc[i] == gc[j]:
                continue
            (gen if qp[i] == gp[j] else imp).append(d[i, j])
    for k, f in enumerate(fars):
        # the best TAR over all thresholds whose FAR stays within f
        best = 0.0
        for t in sorted(set(imp) | set(gen)) + [-1.0]:
            if sum(x <= t for x in imp) / len(imp) <= f:
                best = max(best, sum(x <= t for x in gen) / len(gen))
        assert r["tar"][k] == pytest.approx(best)
        assert r["achieved_far"][k] <= f


def test_exclude_same_camera_needs_camids():
    with pytest.raises(ValueError, match="camids"):
        verification_rates(np.zeros((1, 2)), [1], [1, 2], exclude_same_camera=True)
