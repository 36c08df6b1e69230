"""Likelihood precision and recall (Cha & Cho 2025), over the generative-model protocol.

- precision = E_{x ~ student} [log p_reference(x)]: are the student's samples supported by the reference (truth)?
- recall    = E_{x ~ reference} [log p_student(x)]: does the student cover the reference's samples?

Both are reported per unit: ``sum_i total_i / sum_i units_i`` over sequences (per token for language models, per
point for mixtures, or per UTF-8 byte when two language models do not share a tokenizer), with percentile
bootstrap confidence intervals that resample whole sequences. Always report the two together: a collapsed
student has a high precision alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .protocol import check_generative_model

__all__ = [
    "UNITS",
    "bootstrap_ci",
    "bootstrap_difference",
    "compare_students",
    "precision",
    "precision_recall",
    "recall",
    "resolve_unit",
    "score_samples",
]

UNITS = ("auto", "token", "byte")
_MAX_DRAWS = 4_000_000  # resampled indices held at once by the bootstrap


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _check_pair(totals, units) -> tuple[np.ndarray, np.ndarray]:
    totals, units = _as_numpy(totals), _as_numpy(units)
    if totals.shape != units.shape or totals.size == 0:
        raise ValueError(
            f"totals and units must be non-empty and of equal length (got {totals.size} and {units.size})."
        )
    if (units < 0).any() or units.sum() <= 0:
        raise ValueError("units must be >= 0 with a positive sum: there must be at least one scored unit.")
    if not np.isfinite(totals).all():
        raise ValueError("some log-likelihoods are not finite (a sample has zero probability under the model).")
    return totals, units


def _resample(n: int, n_boot: int, rng: np.random.Generator, stat) -> np.ndarray:
    """`n_boot` replicates of ``stat(idx)``, idx of shape `(chunk, n)` drawn with replacement, in bounded chunks."""
    out = np.empty(n_boot)
    step = max(1, _MAX_DRAWS // n)
    for b in range(0, n_boot, step):
        idx = rng.integers(0, n, size=(min(step, n_boot - b), n))
        # a replicate with no scored unit (possible when most sequences are empty) is NaN and dropped later
        with np.errstate(invalid="ignore", divide="ignore"):
            out[b : b + idx.shape[0]] = stat(idx)
    return out


def _ratio(totals: np.ndarray, units: np.ndarray):
    return lambda idx: totals[idx].sum(1) / units[idx].sum(1)


def _interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    replicates = replicates[np.isfinite(replicates)]
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    return float(low), float(high)


def _check_bootstrap_args(n_boot: int, confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1) (got {confidence}); e.g. 0.95 for a 95 % interval.")
    if n_boot < 10:
        raise ValueError(f"n_boot must be at least 10 (got {n_boot}); 1000 is a good default.")


def bootstrap_ci(
    totals, units, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """Per-unit mean ``sum(totals) / sum(units)`` and its percentile bootstrap interval over sequences.

    Args:
        totals (array-like of shape `(N,)`): per-sequence total log-likelihoods.
        units (array-like of shape `(N,)`): per-sequence numbers of scored units (tokens, bytes or 1 per point).
        n_boot (`int`): bootstrap replicates.
        confidence (`float`): coverage of the interval, e.g. 0.95.
        seed (`int`): seed of the resampling.

    Returns:
        `tuple[float, tuple[float, float]]`: the estimate and its ``(low, high)`` interval.
    """
    _check_bootstrap_args(n_boot, confidence)
    totals, units = _check_pair(totals, units)
    replicates = _resample(totals.size, n_boot, np.random.default_rng(seed), _ratio(totals, units))
    return float(totals.sum() / units.sum()), _interval(replicates, confidence)


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
    """Difference ``mean_a - mean_b`` of two per-unit means with a bootstrap interval.

    Paired (`paired=True`) when a and b score the *same* samples (e.g. the recall of two students on one set of
    reference samples): the same resampled indices are used on both sides, which cancels the sample-to-sample
    variance they share. Unpaired otherwise (e.g. precision, where each student scores its own samples).

    Args:
        totals_a, units_a, totals_b, units_b (array-like of shape `(N_a,)` / `(N_b,)`): per-sequence values.
        paired (`bool`): resample a and b jointly (requires ``N_a == N_b``, sample i the same on both sides).
        n_boot, confidence, seed: as in [`bootstrap_ci`].

    Returns:
        `dict`: ``difference``, ``difference_ci`` (low, high), ``prob_a_greater`` (share of replicates with a > b),
        ``paired``.
    """
    _check_bootstrap_args(n_boot, confidence)
    ta, ua = _check_pair(totals_a, units_a)
    tb, ub = _check_pair(totals_b, units_b)
    if paired and ta.size != tb.size:
        raise ValueError(
            f"a paired bootstrap needs the same samples on both sides (got {ta.size} and {tb.size} sequences); "
            "score both models on one set of samples, or use paired=False."
        )
    rng = np.random.default_rng(seed)
    if paired:
        ratio_a, ratio_b = _ratio(ta, ua), _ratio(tb, ub)
        diffs = _resample(ta.size, n_boot, rng, lambda idx: ratio_a(idx) - ratio_b(idx))
    else:
        diffs = _resample(ta.size, n_boot, rng, _ratio(ta, ua)) - _resample(tb.size, n_boot, rng, _ratio(tb, ub))
    finite = diffs[np.isfinite(diffs)]
    return {
        "difference": float(ta.sum() / ua.sum() - tb.sum() / ub.sum()),
        "difference_ci": _interval(diffs, confidence),
        "prob_a_greater": float((finite > 0).mean()),
        "paired": paired,
    }


def _signature(model) -> str | None:
    fn = getattr(model, "tokenizer_signature", None)
    return fn() if callable(fn) else None


def resolve_unit(student, reference, unit: str = "auto") -> str:
    """The unit precision and recall are averaged over: ``"token"`` or ``"byte"``.

    Per-token averages of two language models are only comparable when they share a tokenizer; ``"auto"`` picks
    ``"byte"`` when the tokenizers differ and ``"token"`` otherwise (per point for models without tokens).
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS} (got {unit!r}).")
    sig_s, sig_r = _signature(student), _signature(reference)
    differ = sig_s is not None and sig_r is not None and sig_s != sig_r
    if unit == "token" and differ:
        raise ValueError(
            "the student and the reference use different tokenizers, so per-token averages are not comparable; "
            "pass unit='byte' (or 'auto') to normalise per UTF-8 byte instead."
        )
    if unit == "auto":
        return "byte" if differ else "token"
    return unit


def score_samples(model, samples, unit: str = "token", **score_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample total log-likelihood under `model` and the number of units to average over.

    Args:
        model: any object with ``log_likelihood(samples)`` (and ``num_bytes(samples)`` for `unit="byte"`).
        samples: what the model's ``log_likelihood`` accepts.
        unit (`str`): ``"token"`` (the model's scored units: tokens, or 1 per point) or ``"byte"``.
        score_kwargs: passed to ``log_likelihood`` (and ``num_bytes``), e.g. ``prompt=``.

    Returns:
        `tuple[np.ndarray, np.ndarray]`: totals and units, float64 arrays of shape `(N,)`.
    """
    check_generative_model(model, "model")
    total, units = model.log_likelihood(samples, **score_kwargs)
    if unit == "byte":
        if not hasattr(model, "num_bytes"):
            raise ValueError(
                f"unit='byte' needs a model with num_bytes(samples) (text models); {type(model).__name__} has none."
            )
        units = model.num_bytes(samples, **score_kwargs)
    elif unit != "token":
        raise ValueError(f"unit must be 'token' or 'byte' here (got {unit!r}).")
    return _as_numpy(total), _as_numpy(units)


def _side(name: str, totals, units, unit, n_boot, confidence, seed) -> dict[str, Any]:
    if n_boot == 0:  # the estimate alone, e.g. one seed of many, where the spread over seeds is the interval
        totals, units = _check_pair(totals, units)
        mean, ci = float(totals.sum() / units.sum()), None
    else:
        mean, ci = bootstrap_ci(totals, units, n_boot=n_boot, confidence=confidence, seed=seed)
    return {
        name: mean,
        f"{name}_ci": ci,
        f"{name}_log_likelihood": totals,
        f"{name}_units": units,
        f"{name}_num_samples": int(totals.size),
        f"{name}_num_units": float(units.sum()),
        "unit": unit,
        "confidence": confidence,
    }


def precision(
    student_samples,
    reference,
    unit: str = "token",
    score_kwargs: dict | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Precision: mean log-likelihood under the reference of the student's samples, per unit.

    ``precision = sum_i log p_ref(x_i) / sum_i units_i`` with ``x_i ~ student``.

    Args:
        student_samples: samples drawn from the student.
        reference: the reference (ground-truth) model, implementing the protocol.
        unit (`str`): ``"token"`` or ``"byte"`` (see [`resolve_unit`]).
        score_kwargs (`dict`, *optional*): passed to ``reference.log_likelihood``, e.g. ``{"prompt": "The"}``.
        n_boot, confidence, seed: bootstrap settings (see [`bootstrap_ci`]); ``n_boot=0`` skips the interval
            (``precision_ci`` is `None`).

    Returns:
        `dict`: ``precision``, ``precision_ci`` (low, high), ``precision_log_likelihood`` and ``precision_units``
        (per-sequence arrays), ``precision_num_samples``, ``precision_num_units``, ``unit``, ``confidence``.
    """
    totals, units = score_samples(reference, student_samples, unit, **(score_kwargs or {}))
    return _side("precision", totals, units, unit, n_boot, confidence, seed)


def recall(
    reference_samples,
    student,
    unit: str = "token",
    score_kwargs: dict | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Recall: mean log-likelihood under the student of the reference's samples, per unit.

    ``recall = sum_i log p_student(x_i) / sum_i units_i`` with ``x_i ~ reference``.

    Args:
        reference_samples: samples drawn from the reference (ground truth).
        student: the student model, implementing the protocol.
        unit, score_kwargs, n_boot, confidence, seed: as in [`precision`].

    Returns:
        `dict`: the keys of [`precision`] with ``recall`` in place of ``precision``.
    """
    totals, units = score_samples(student, reference_samples, unit, **(score_kwargs or {}))
    return _side("recall", totals, units, unit, n_boot, confidence, seed)


def precision_recall(
    student,
    reference,
    num_samples: int = 1000,
    student_samples=None,
    reference_samples=None,
    unit: str = "auto",
    prompt=None,
    sample_kwargs: dict | None = None,
    score_kwargs: dict | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Precision and recall of a student against a reference, with bootstrap confidence intervals.

    Samples not given are drawn here (`num_samples` each, at selectivity 1 unless `sample_kwargs` says otherwise,
    seeded by `seed`). Pass the same `reference_samples` to every student you compare: drawing them is the
    expensive part, and [`compare_students`] then pairs the recalls.

    Args:
        student, reference: models implementing the protocol ([`CausalLMAdapter`], the GMM model, ...).
        num_samples (`int`): samples to draw on each side when they are not given.
        student_samples, reference_samples (*optional*): pre-drawn samples.
        unit (`str`): ``"auto"``, ``"token"`` or ``"byte"`` (see [`resolve_unit`]).
        prompt (*optional*, language models only): sample completions of it and score them conditioned on it
            (shorthand for ``prompt`` in both `sample_kwargs` and `score_kwargs`).
        sample_kwargs (`dict`, *optional*): passed to both ``sample`` calls, e.g. ``{"max_new_tokens": 128}``.
        score_kwargs (`dict`, *optional*): passed to both ``log_likelihood`` calls, e.g. ``{"prompt": "The"}``.
        n_boot, confidence, seed: bootstrap settings (``n_boot=0``: no intervals, ``*_ci`` are `None`); `seed`
            also seeds the sampling.

    Returns:
        `dict`: ``precision``, ``recall``, ``precision_ci``, ``recall_ci`` (low, high), per-sequence arrays
        ``precision_log_likelihood``, ``precision_units``, ``recall_log_likelihood``, ``recall_units``, the counts
        ``precision_num_samples``, ``recall_num_samples``, ``precision_num_units``, ``recall_num_units``, and
        ``unit``, ``confidence``.
    """
    check_generative_model(student, "student")
    check_generative_model(reference, "reference")
    unit = resolve_unit(student, reference, unit)
    if num_samples < 1 and (student_samples is None or reference_samples is None):
        raise ValueError(f"num_samples must be >= 1 to draw samples (got {num_samples}).")
    sample_kwargs, score_kwargs = dict(sample_kwargs or {}), dict(score_kwargs or {})
    if prompt is not None:
        sample_kwargs["prompt"] = score_kwargs["prompt"] = prompt
    if student_samples is None:
        student_samples = student.sample(num_samples, generator=torch.Generator().manual_seed(seed), **sample_kwargs)
    if reference_samples is None:
        gen = torch.Generator().manual_seed(seed + 1)
        reference_samples = reference.sample(num_samples, generator=gen, **sample_kwargs)
    boot = {"n_boot": n_boot, "confidence": confidence, "seed": seed}
    result = precision(student_samples, reference, unit=unit, score_kwargs=score_kwargs, **boot)
    result.update(recall(reference_samples, student, unit=unit, score_kwargs=score_kwargs, **boot))
    return result


def compare_students(result_a: dict, result_b: dict, **bootstrap_kwargs) -> dict[str, Any]:
    """Differences ``a - b`` of precision and of recall of two [`precision_recall`] results, with intervals.

    Recall is compared with a paired bootstrap (both students scored the same reference samples, which the caller
    guarantees by passing the same `reference_samples`); precision unpaired (each student scores its own samples).

    Returns:
        `dict`: ``precision_difference``, ``precision_difference_ci``, ``precision_prob_a_greater``, and the same
        three for ``recall``.
    """
    if result_a.get("unit") != result_b.get("unit"):
        raise ValueError(f"results use different units ({result_a.get('unit')} vs {result_b.get('unit')}).")
    out = {}
    for name, paired in (("precision", False), ("recall", True)):
        diff = bootstrap_difference(
            result_a[f"{name}_log_likelihood"],
            result_a[f"{name}_units"],
            result_b[f"{name}_log_likelihood"],
            result_b[f"{name}_units"],
            paired=paired,
            **bootstrap_kwargs,
        )
        out[f"{name}_difference"] = diff["difference"]
        out[f"{name}_difference_ci"] = diff["difference_ci"]
        out[f"{name}_prob_a_greater"] = diff["prob_a_greater"]
    return out
