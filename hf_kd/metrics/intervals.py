"""Confidence intervals: percentile bootstrap over sequences (`scipy.stats.bootstrap`) and t-intervals over seeds.

The per-unit mean of N sequences is the ratio ``sum_i totals_i / sum_i units_i``; the bootstrap resamples whole
sequences, i.e. (total, unit) pairs jointly, so each sample handed to scipy is the `(2, N)` array of the two.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy import stats

__all__ = ["bootstrap_ci", "bootstrap_difference", "mean_confidence_interval", "seed_t_interval"]

_MAX_DRAWS = 4_000_000  # resampled indices held at once by the bootstrap (scipy's `batch`)


def as_numpy(x) -> np.ndarray:
    """`x` (tensor or array-like) as a flat float64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def check_pair(totals, units) -> tuple[np.ndarray, np.ndarray]:
    """Validated per-sequence totals and units as float64 arrays of shape `(N,)`."""
    totals, units = as_numpy(totals), as_numpy(units)
    if totals.shape != units.shape or totals.size == 0:
        raise ValueError(
            f"totals and units must be non-empty and of equal length (got {totals.size} and {units.size})."
        )
    if (units < 0).any() or units.sum() <= 0:
        raise ValueError("units must be >= 0 with a positive sum: there must be at least one scored unit.")
    if not np.isfinite(totals).all():
        raise ValueError("some log-likelihoods are not finite (a sample has zero probability under the model).")
    return totals, units


def _ratio(pairs: np.ndarray, axis: int = -1) -> np.ndarray:
    """``sum(totals) / sum(units)`` of `pairs` of shape `(2, ..., N)`; NaN for a replicate with no scored unit."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return pairs[0].sum(axis) / pairs[1].sum(axis)


def _check_bootstrap_args(n_boot: int, confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1) (got {confidence}); e.g. 0.95 for a 95 % interval.")
    if n_boot < 10:
        raise ValueError(f"n_boot must be at least 10 (got {n_boot}); 1000 is a good default.")


def _percentile_bootstrap(samples, statistic, paired: bool, n_boot: int, confidence: float, seed: int):
    """`scipy.stats.bootstrap` (percentile method) over the last axis; returns (interval, replicates).

    A replicate with no scored unit (possible when most sequences are empty) is NaN; scipy's interval then is NaN,
    and the interval is taken over the finite replicates instead (as the percentile method does on them).
    """
    n = max(s.shape[-1] for s in samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)  # NaN replicates: handled below
        res = stats.bootstrap(
            samples,
            statistic,
            n_resamples=n_boot,
            batch=max(1, _MAX_DRAWS // n),
            vectorized=True,
            paired=paired,
            axis=-1,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    replicates = res.bootstrap_distribution
    low, high = res.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        alpha = (1.0 - confidence) / 2
        low, high = np.quantile(replicates[np.isfinite(replicates)], [alpha, 1 - alpha])
    return (float(low), float(high)), replicates


def bootstrap_ci(
    totals, units, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """Per-unit mean ``sum(totals) / sum(units)`` and its percentile bootstrap interval over sequences.

    `scipy.stats.bootstrap` with ``method="percentile"``, resampling (total, unit) pairs of whole sequences.

    Args:
        totals (array-like of shape `(N,)`): per-sequence total log-likelihoods.
        units (array-like of shape `(N,)`): per-sequence numbers of scored units (tokens, bytes or 1 per point).
        n_boot (`int`): bootstrap replicates.
        confidence (`float`): coverage of the interval, e.g. 0.95.
        seed (`int`): seed of the resampling (`numpy.random.default_rng(seed)`).

    Returns:
        `tuple[float, tuple[float, float]]`: the estimate and its ``(low, high)`` interval.
    """
    _check_bootstrap_args(n_boot, confidence)
    pairs = np.stack(check_pair(totals, units))
    interval, _ = _percentile_bootstrap((pairs,), _ratio, False, n_boot, confidence, seed)
    return float(_ratio(pairs)), interval


def bootstrap_difference(
    totals_a,
    units_a,
    totals_b,
    units_b,
    paired: bool,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Difference ``mean_a - mean_b`` of two per-unit means with a percentile bootstrap interval.

    Paired (`paired=True`, scipy's ``paired=True``) when a and b score the *same* samples (e.g. the recall of two
    students on one set of reference samples): the same resampled indices are used on both sides, which cancels the
    sample-to-sample variance they share. Unpaired otherwise (e.g. precision, where each student scores its own
    samples): a and b are resampled independently.

    Args:
        totals_a, units_a, totals_b, units_b (array-like of shape `(N_a,)` / `(N_b,)`): per-sequence values.
        paired (`bool`): resample a and b jointly (requires ``N_a == N_b``, sample i the same on both sides).
        n_boot, confidence, seed: as in [`bootstrap_ci`].

    Returns:
        `dict`: ``difference``, ``difference_ci`` (low, high), ``prob_a_greater`` (share of finite replicates with
        a > b), ``paired``.
    """
    _check_bootstrap_args(n_boot, confidence)
    a, b = np.stack(check_pair(totals_a, units_a)), np.stack(check_pair(totals_b, units_b))
    if paired and a.shape != b.shape:
        raise ValueError(
            f"a paired bootstrap needs the same samples on both sides (got {a.shape[-1]} and {b.shape[-1]} "
            "sequences); score both models on one set of samples, or use paired=False."
        )

    def difference(x, y, axis=-1):
        return _ratio(x, axis) - _ratio(y, axis)

    interval, replicates = _percentile_bootstrap((a, b), difference, paired, n_boot, confidence, seed)
    finite = replicates[np.isfinite(replicates)]
    return {
        "difference": float(difference(a, b)),
        "difference_ci": interval,
        "prob_a_greater": float((finite > 0).mean()),
        "paired": paired,
    }


def mean_confidence_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Mean and t-interval half-width ``t_{(1+level)/2, S-1} * sd / sqrt(S)`` over seeds (NaN when S < 2).

    Args:
        values (tensor or array-like of shape `(S,)`): one value per seed.
        level (`float`): coverage of the interval.

    Returns:
        `tuple[float, float]`: the mean and the half-width (NaN for one seed: no spread to estimate).
    """
    values = as_numpy(values)
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan
    return mean, float(stats.t.ppf((1 + level) / 2, values.size - 1)) * float(values.std(ddof=1)) / math.sqrt(
        values.size
    )


def seed_t_interval(values, level: float = 0.95) -> dict[str, float]:
    """[`mean_confidence_interval`] as ``{"mean", "low", "high"}``; low and high are NaN for one seed."""
    mean, half = mean_confidence_interval(values, level)
    return {"mean": mean, "low": mean - half, "high": mean + half}
