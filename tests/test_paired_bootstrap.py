"""Paired bootstrap of B - A: the point difference, intervals against the textbook standard error, the
identity clustering, and the wiring into `occreid compare` (clusters = the report's query_pid column)."""

from __future__ import annotations

import numpy as np
import pytest

from occreid.evaluation.paired_bootstrap import interval_text, paired_bootstrap


def test_identical_runs_and_a_constant_shift():
    rng = np.random.default_rng(0)
    ap = rng.random(300)
    hit = rng.random(300) < 0.4
    same = paired_bootstrap(ap, ap, hit, hit)
    assert same["mAP"] == {"delta": 0.0, "low": 0.0, "high": 0.0, "sure": False}
    shifted = paired_bootstrap(ap, ap + 0.05, hit, np.ones(300, bool))
    assert shifted["mAP"]["delta"] == pytest.approx(0.05)
    assert shifted["mAP"]["low"] == pytest.approx(0.05) and shifted["mAP"]["high"] == pytest.approx(0.05)
    assert shifted["mAP"]["sure"]
    assert shifted["rank1"]["delta"] == pytest.approx(1 - hit.mean())


def test_interval_matches_the_standard_error_of_independent_queries():
    rng = np.random.default_rng(1)
    n = 2000
    ap_a = rng.random(n)
    ap_b = np.clip(ap_a + rng.normal(0.01, 0.2, n), 0, 1)
    r = paired_bootstrap(ap_a, ap_b, ap_a > 0.5, ap_b > 0.5, draws=4000)
    d = ap_b - ap_a
    se = d.std() / np.sqrt(n)
    assert r["mAP"]["delta"] == pytest.approx(d.mean())
    assert r["mAP"]["high"] - r["mAP"]["low"] == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert r["mAP"]["low"] < d.mean() < r["mAP"]["high"]
    assert r["resampled"] == "queries" and r["num_units"] == n


def test_identities_are_resampled_whole_and_widen_the_interval():
    # 50 identities x 20 queries, one difference per identity: the queries are not independent
    rng = np.random.default_rng(2)
    pid = np.repeat(np.arange(50), 20)
    d = rng.normal(0, 0.1, 50)[pid]
    ap_a = np.full(pid.size, 0.5)
    hit = np.zeros(pid.size, bool)
    per_query = paired_bootstrap(ap_a, ap_a + d, hit, hit)
    per_identity = paired_bootstrap(ap_a, ap_a + d, hit, hit, clusters=pid)
    assert per_identity["resampled"] == "query identities" and per_identity["num_units"] == 50
    width = {k: r["mAP"]["high"] - r["mAP"]["low"] for k, r in (("q", per_query), ("i", per_identity))}
    assert width["i"] / width["q"] == pytest.approx(np.sqrt(20), rel=0.2)
    # against the clustered standard error (50 independent identity means)
    se = d[::20].std() / np.sqrt(50)
    assert width["i"] == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_queries_without_a_true_match_are_left_out_and_draws_are_seeded():
    ap_a = np.array([0.2, np.nan, 0.4, 0.6])
    ap_b = np.array([0.3, 0.9, np.nan, 0.8])
    r = paired_bootstrap(ap_a, ap_b, [0, 0, 0, 1], [1, 1, 1, 1], draws=300)
    assert r["num_queries"] == 2 and r["mAP"]["delta"] == pytest.approx(0.15)
    assert r["rank1"]["delta"] == pytest.approx(0.5)
    assert r == paired_bootstrap(ap_a, ap_b, [0, 0, 0, 1], [1, 1, 1, 1], draws=300)
    assert paired_bootstrap([np.nan], [0.5], [0], [1])["mAP"] is None
    assert interval_text(None) == "-"
    assert interval_text({"delta": 0.012, "low": -0.003, "high": 0.027}) == "+1.2 [-0.3, +2.7]"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same queries"):
        paired_bootstrap([0.1, 0.2], [0.1], [0, 1], [0, 1])
    with pytest.raises(ValueError, match="cluster ids"):
        paired_bootstrap([0.1, 0.2], [0.1, 0.3], [0, 1], [0, 1], clusters=[1])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap([0.1], [0.2], [0], [1], level=95)
