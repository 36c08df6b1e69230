"""Likelihood precision and recall (Cha & Cho 2025), over the generative-model protocol.

- precision = E_{x ~ student} [log p_reference(x)]: are the student's samples supported by the reference (truth)?
- recall    = E_{x ~ reference} [log p_student(x)]: does the student cover the reference's samples?

Both are reported per unit: ``sum_i total_i / sum_i units_i`` over sequences (per token for language models, per
point for mixtures, or per UTF-8 byte when two language models do not share a tokenizer), with percentile
bootstrap confidence intervals that resample whole sequences (`hf_kd.metrics.intervals`). Always report the two
together: a collapsed student has a high precision alone.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .intervals import as_numpy, bootstrap_ci, bootstrap_difference, check_pair, mean_confidence_interval
from .protocol import check_generative_model

__all__ = [
    "UNITS",
    "bootstrap_ci",
    "bootstrap_difference",
    "compare_students",
    "compare_to_baseline",
    "precision",
    "precision_recall",
    "recall",
    "resolve_unit",
    "score_samples",
]

UNITS = ("auto", "token", "byte")


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
    return as_numpy(total), as_numpy(units)


def _side(name: str, totals, units, unit, n_boot, confidence, seed) -> dict[str, Any]:
    if n_boot == 0:  # the estimate alone, e.g. one seed of many, where the spread over seeds is the interval
        totals, units = check_pair(totals, units)
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


def compare_to_baseline(
    runs: list[dict], group_key: str, baseline, keys: tuple[str, ...] = ("precision", "recall"), level: float = 0.95
) -> dict[str, dict]:
    """Paired comparison of every run with the baseline run of its seed (e.g. distilled students vs the direct one).

    Each run is a dict with ``seed``, `group_key` (e.g. ``"tau"``) and the `keys` of a [`precision_recall`] result.
    Runs of one seed share what the seed fixes (initial weights, reference samples), so differences within a seed
    are paired:

    - over seeds, per group g: ``d_s = run(g, s)[key] - run(baseline, s)[key]`` for every seed s that has a baseline
      run, their mean and t-interval ([`mean_confidence_interval`]). With one seed the t-interval is undefined:
      ``low`` and ``high`` are NaN (and ``excludes_zero`` is False), never a zero-width interval. The baseline group's
      difference from itself is exactly 0 with a zero-width interval, by definition.
    - over sequences, per run of another group that kept its per-sequence arrays (``*_log_likelihood``,
      ``*_units``), as its baseline did: [`compare_students`] (run minus baseline; recall paired on the shared
      reference samples), the bootstrap seeded with the run's seed.

    Args:
        runs (`list[dict]`): the runs, e.g. loaded from their ``scores.json``.
        group_key (`str`): the key that names a run's group.
        baseline: the value of `group_key` of the baseline runs.
        keys (`tuple[str, ...]`): the scores to compare.
        level (`float`): coverage of the t-intervals over seeds.

    Returns:
        `dict`: ``groups``: ``{g: {key: {"mean", "low", "high", "per_seed", "excludes_zero"}}}`` in the order groups
        first appear, ``per_seed`` the list of d_s in run order; ``bootstrap``: ``{(g, seed): compare_students
        result}`` with its intervals as lists.
    """
    base = {r["seed"]: r for r in runs if r[group_key] == baseline}
    groups, boot = {}, {}
    for group in dict.fromkeys(r[group_key] for r in runs):
        paired = [(r, base[r["seed"]]) for r in runs if r[group_key] == group and r["seed"] in base]
        groups[group] = {}
        for key in keys:
            diffs = [r[key] - b[key] for r, b in paired]
            if group == baseline:
                mean, half = 0.0, 0.0
            else:
                mean, half = mean_confidence_interval(diffs, level) if diffs else (math.nan, math.nan)
            low, high = mean - half, mean + half
            groups[group][key] = {"mean": mean, "low": low, "high": high, "per_seed": diffs}
            groups[group][key]["excludes_zero"] = bool(low > 0 or high < 0)
        for r, b in paired:
            if group != baseline and all(f"{key}_log_likelihood" in x for x in (r, b) for key in keys):
                diff = compare_students(r, b, seed=r["seed"])
                boot[group, r["seed"]] = {k: list(v) if isinstance(v, tuple) else v for k, v in diff.items()}
    return {"groups": groups, "bootstrap": boot}
