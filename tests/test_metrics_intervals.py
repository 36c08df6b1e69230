"""Intervals: the scipy bootstrap against a brute-force percentile bootstrap and closed forms; t-intervals over seeds;
the paired comparison with a baseline run that the recipes share."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from hf_kd.metrics import (
    bootstrap_ci,
    bootstrap_difference,
    compare_students,
    compare_to_baseline,
    mean_confidence_interval,
    seed_t_interval,
)


def brute_force_percentile(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates[np.isfinite(replicates)], [alpha, 1 - alpha])
    return low, high


def test_bootstrap_ci_is_a_brute_force_percentile_bootstrap_of_the_ratio():
    """Same generator, same draws: B x N indices with replacement, the ratio of resampled sums, its quantiles."""
    rng = np.random.default_rng(5)
    totals, units = rng.normal(-30, 8, size=57), rng.integers(1, 20, size=57).astype(float)
    est, ci = bootstrap_ci(totals, units, n_boot=500, confidence=0.9, seed=11)
    idx = np.random.default_rng(11).integers(0, 57, size=(500, 57))
    expected = brute_force_percentile(totals[idx].sum(1) / units[idx].sum(1), 0.9)
    assert est == pytest.approx(totals.sum() / units.sum())
    np.testing.assert_allclose(ci, expected, rtol=1e-12)


def test_bootstrap_difference_is_a_brute_force_bootstrap_paired_and_unpaired():
    rng = np.random.default_rng(6)
    ta, tb = rng.normal(-10, 3, size=40), rng.normal(-11, 3, size=40)
    ua, ub = rng.integers(1, 5, size=40).astype(float), rng.integers(1, 5, size=40).astype(float)
    ratio = lambda t, u, i: t[i].sum(1) / u[i].sum(1)  # noqa: E731

    paired = bootstrap_difference(ta, ua, tb, ub, paired=True, n_boot=300, seed=2)
    idx = np.random.default_rng(2).integers(0, 40, size=(300, 40))  # one draw of indices for both sides
    diffs = ratio(ta, ua, idx) - ratio(tb, ub, idx)
    np.testing.assert_allclose(paired["difference_ci"], brute_force_percentile(diffs, 0.95), rtol=1e-12)
    assert paired["prob_a_greater"] == pytest.approx((diffs > 0).mean())

    unpaired = bootstrap_difference(ta, ua, tb[:31], ub[:31], paired=False, n_boot=300, seed=2)
    gen = np.random.default_rng(2)
    idx_a, idx_b = gen.integers(0, 40, size=(300, 40)), gen.integers(0, 31, size=(300, 31))  # independent draws
    diffs = ratio(ta, ua, idx_a) - ratio(tb[:31], ub[:31], idx_b)
    np.testing.assert_allclose(unpaired["difference_ci"], brute_force_percentile(diffs, 0.95), rtol=1e-12)
    assert unpaired["difference"] == pytest.approx(ta.sum() / ua.sum() - tb[:31].sum() / ub[:31].sum())


def test_bootstrap_matches_the_normal_closed_form_for_a_mean():
    """For the mean of N normal values the interval is mean +- z sd / sqrt(N) (to Monte Carlo error)."""
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=4000)
    est, (lo, hi) = bootstrap_ci(x, np.ones_like(x), n_boot=4000, seed=0)
    half = stats.norm.ppf(0.975) * x.std(ddof=1) / math.sqrt(x.size)
    assert lo == pytest.approx(est - half, abs=0.06 * half) and hi == pytest.approx(est + half, abs=0.06 * half)
    # paired difference of two means: the closed form on the per-sample differences
    y = x + rng.normal(0.3, 0.5, size=x.size)
    paired = bootstrap_difference(y, np.ones_like(y), x, np.ones_like(x), paired=True, n_boot=4000, seed=0)
    d = y - x
    half = stats.norm.ppf(0.975) * d.std(ddof=1) / math.sqrt(d.size)
    assert paired["difference_ci"] == pytest.approx([d.mean() - half, d.mean() + half], abs=0.06 * half)


def test_replicates_without_a_scored_unit_are_dropped():
    """Most sequences empty: some replicates resample no unit (0 / 0); the interval is over the others."""
    totals, units = np.array([-4.0, 0.0, 0.0, 0.0]), np.array([2.0, 0.0, 0.0, 0.0])
    est, (lo, hi) = bootstrap_ci(totals, units, n_boot=200, seed=0)
    assert est == lo == hi == -2.0  # every replicate with a unit holds only the one scored sequence


def test_t_interval_matches_scipy():
    values = torch.tensor([1.0, 2.5, -0.5, 3.0, 0.25])
    mean, half = mean_confidence_interval(values)
    lo, hi = stats.t.interval(0.95, 4, loc=values.mean().item(), scale=stats.sem(values.numpy()))
    assert mean == pytest.approx((lo + hi) / 2) and half == pytest.approx((hi - lo) / 2)
    assert math.isnan(mean_confidence_interval(torch.tensor([1.0]))[1])
    one = seed_t_interval([2.0])
    assert one["mean"] == 2.0 and math.isnan(one["low"]) and math.isnan(one["high"])


def _run(group, seed, precision, recall, rng):
    totals = rng.normal(recall * 5, 1.0, size=8)
    return {
        "tau": group,
        "seed": seed,
        "precision": precision,
        "recall": recall,
        "unit": "token",
        "precision_log_likelihood": rng.normal(precision * 5, 1.0, size=8).tolist(),
        "precision_units": [5.0] * 8,
        "recall_log_likelihood": totals.tolist(),
        "recall_units": [5.0] * 8,
    }


def test_compare_to_baseline_pairs_by_seed():
    rng = np.random.default_rng(0)
    scores = {(0.5, 0): (-1.0, -3.0), (1.0, 0): (-2.0, -2.5), (0.5, 1): (-1.2, -3.3), (1.0, 1): (-2.1, -2.4)}
    scores[0.5, 2] = (-1.1, -3.1)  # a seed without a baseline run is left out of the pairs
    runs = [_run(g, s, p, r, rng) for (g, s), (p, r) in scores.items()]
    out = compare_to_baseline(runs, "tau", 1.0)
    for key, i in (("precision", 0), ("recall", 1)):
        diffs = [scores[0.5, s][i] - scores[1.0, s][i] for s in (0, 1)]
        lo, hi = stats.t.interval(0.95, 1, loc=np.mean(diffs), scale=stats.sem(diffs))
        got = out["groups"][0.5][key]
        assert got["per_seed"] == pytest.approx(diffs)
        assert [got["low"], got["mean"], got["high"]] == pytest.approx([lo, np.mean(diffs), hi])
        assert got["excludes_zero"] == (lo > 0 or hi < 0)
        assert out["groups"][1.0][key] == {"mean": 0, "low": 0, "high": 0, "per_seed": [0, 0], "excludes_zero": False}
    assert set(out["bootstrap"]) == {(0.5, 0), (0.5, 1)}
    by_key = {(r["tau"], r["seed"]): r for r in runs}
    expected = compare_students(by_key[0.5, 1], by_key[1.0, 1], seed=1)
    assert out["bootstrap"][0.5, 1]["recall_difference_ci"] == list(expected["recall_difference_ci"])


def test_compare_to_baseline_with_one_seed_has_no_interval():
    rng = np.random.default_rng(0)
    runs = [_run(0.5, 3, -1.0, -3.0, rng), _run(1.0, 3, -2.0, -2.5, rng)]
    got = compare_to_baseline(runs, "tau", 1.0)["groups"]
    assert got[0.5]["precision"]["mean"] == pytest.approx(1.0)
    assert math.isnan(got[0.5]["precision"]["low"]) and math.isnan(got[0.5]["precision"]["high"])
    assert got[0.5]["precision"]["excludes_zero"] is False
    assert got[1.0]["recall"]["low"] == got[1.0]["recall"]["high"] == 0.0
