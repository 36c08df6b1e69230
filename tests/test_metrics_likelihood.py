"""Likelihood precision/recall: closed forms on Gaussians, Monte Carlo on a mixture, LM adapters, bootstrap."""

import math

import numpy as np
import pytest
import torch
from conftest import SPECIALS, WORDS, make_llama
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hf_kd.metrics import (
    CausalLMAdapter,
    bootstrap_ci,
    bootstrap_difference,
    compare_students,
    precision,
    precision_recall,
    recall,
)
from hf_kd.models.gmm import GMMConfig, GMMModel


def gaussian_1d(mean: float, var: float) -> GMMModel:
    model = GMMModel(GMMConfig(num_components=1, dim=1, covariance_type="full")).double()
    cov = torch.tensor([[[var]]])
    return model.set_parameters(weights=torch.ones(1), means=torch.tensor([[mean]]), covariances=cov)


def cross_entropy_1d(m_p, v_p, m_q, v_q):
    """E_{x ~ N(m_p, v_p)} log N(x; m_q, v_q) in closed form."""
    return -0.5 * math.log(2 * math.pi * v_q) - (v_p + (m_p - m_q) ** 2) / (2 * v_q)


def test_gaussians_match_closed_form_within_ci():
    student, reference = gaussian_1d(0.5, 0.3), gaussian_1d(0.0, 1.0)
    res = precision_recall(student, reference, num_samples=4000, seed=0)
    want_p = cross_entropy_1d(0.5, 0.3, 0.0, 1.0)  # student samples under the reference
    want_r = cross_entropy_1d(0.0, 1.0, 0.5, 0.3)  # reference samples under the student
    assert res["precision_ci"][0] <= want_p <= res["precision_ci"][1]
    assert res["recall_ci"][0] <= want_r <= res["recall_ci"][1]
    assert res["precision_num_samples"] == res["recall_num_samples"] == 4000
    assert res["precision_num_units"] == 4000 and res["unit"] == "token"
    assert res["precision"] == pytest.approx(res["precision_log_likelihood"].mean())
    assert 0.0 < res["recall_ci"][1] - res["recall_ci"][0] < 0.3


def test_mixture_matches_monte_carlo_within_ci():
    """8-mode truth (the paper's grid) vs a collapsed 1-mode student: Monte Carlo with 400k samples as the truth."""
    grid = torch.tensor([[x, y] for x in (-1.0, 0.0, 1.0) for y in (-1.0, 0.0, 1.0) if (x, y) != (0.0, 0.0)])
    truth = GMMModel(GMMConfig(num_components=8, dim=2, covariance_type="full")).double()
    truth.set_parameters(weights=torch.ones(8), means=grid, covariances=0.025 * torch.eye(2).expand(8, 2, 2))
    student = GMMModel(GMMConfig(num_components=1, dim=2, covariance_type="full")).double()
    student.set_parameters(weights=torch.ones(1), means=grid[:1] + 0.02, covariances=0.01 * torch.eye(2)[None])
    gen = torch.Generator().manual_seed(123)
    mc_p = truth.log_likelihood(student.sample(400_000, generator=gen))[0].mean().item()
    mc_r = student.log_likelihood(truth.sample(400_000, generator=gen))[0].mean().item()
    res = precision_recall(student, truth, num_samples=3000, seed=1)
    assert res["precision_ci"][0] <= mc_p <= res["precision_ci"][1]
    assert res["recall_ci"][0] <= mc_r <= res["recall_ci"][1]
    # collapsed on one mode: more precise than the truth itself (whose precision is minus its entropy), far less recall
    itself = precision_recall(truth, truth, num_samples=3000, seed=1)
    assert res["precision_ci"][0] > itself["precision_ci"][1]
    assert res["recall"] < itself["recall"] - 10.0


def test_bootstrap_ci_coverage_is_nominal():
    """Over 300 independent data sets, the 90 % interval holds the true mean about 90 % of the time."""
    rng = np.random.default_rng(0)
    hits = 0
    for rep in range(300):
        x = rng.normal(2.0, 1.0, size=200)
        _, (lo, hi) = bootstrap_ci(x, np.ones_like(x), n_boot=400, confidence=0.9, seed=rep)
        hits += lo <= 2.0 <= hi
    assert 0.84 <= hits / 300 <= 0.95


def test_bootstrap_ci_is_ratio_of_sums_and_validates():
    totals, units = np.array([-10.0, -3.0, -6.0]), np.array([5, 1, 3])
    est, (lo, hi) = bootstrap_ci(totals, units, n_boot=200)
    assert est == pytest.approx(-19.0 / 9.0)
    assert -3.0 <= lo <= est <= hi <= -2.0  # replicates are ratios of resampled sums: bounded by the per-row ratios
    with pytest.raises(ValueError, match="positive sum"):
        bootstrap_ci([0.0, 0.0], [0, 0])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(totals, units, confidence=95)
    with pytest.raises(ValueError, match="not finite"):
        bootstrap_ci([-np.inf, 1.0], [1, 1])


def test_no_bootstrap_gives_the_estimate_alone():
    student, reference = gaussian_1d(0.0, 1.0), gaussian_1d(0.5, 2.0)
    with_ci = precision_recall(student, reference, num_samples=500, n_boot=100, seed=3)
    alone = precision_recall(student, reference, num_samples=500, n_boot=0, seed=3)
    assert alone["precision_ci"] is None and alone["recall_ci"] is None
    assert alone["precision"] == with_ci["precision"] and alone["recall"] == with_ci["recall"]


def test_paired_bootstrap_is_tighter_on_shared_samples():
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 3.0, size=500)  # per-sample difficulty both models share
    a = shared + rng.normal(0.2, 0.3, size=500)
    b = shared + rng.normal(0.0, 0.3, size=500)
    ones = np.ones(500)
    paired = bootstrap_difference(a, ones, b, ones, paired=True, seed=0)
    unpaired = bootstrap_difference(a, ones, b, ones, paired=False, seed=0)
    assert paired["difference"] == pytest.approx((a - b).mean())
    assert paired["difference_ci"][0] > 0.1 and paired["prob_a_greater"] == 1.0
    width = lambda r: r["difference_ci"][1] - r["difference_ci"][0]  # noqa: E731
    assert width(paired) < width(unpaired) / 5
    with pytest.raises(ValueError, match="same samples"):
        bootstrap_difference(a, ones, b[:10], ones[:10], paired=True)


def test_compare_students_pairs_recall():
    truth, near, far = gaussian_1d(0.0, 1.0), gaussian_1d(0.0, 1.1), gaussian_1d(1.0, 0.5)
    ref_samples = truth.sample(2000, generator=torch.Generator().manual_seed(0))
    ra = precision_recall(near, truth, num_samples=2000, reference_samples=ref_samples, seed=2)
    rb = precision_recall(far, truth, num_samples=2000, reference_samples=ref_samples, seed=3)
    cmp = compare_students(ra, rb)
    assert cmp["recall_difference"] == pytest.approx(ra["recall"] - rb["recall"])
    want = cross_entropy_1d(0, 1, 0, 1.1) - cross_entropy_1d(0, 1, 1, 0.5)
    assert cmp["recall_difference_ci"][0] <= want <= cmp["recall_difference_ci"][1]
    assert cmp["recall_prob_a_greater"] == 1.0


def test_language_models_precision_recall_equals_direct_scoring(tokenizer, teacher_model, student_model):
    ref = CausalLMAdapter(teacher_model, tokenizer, progress=False)
    stu = CausalLMAdapter(student_model, tokenizer, progress=False)
    res = precision_recall(stu, ref, num_samples=40, seed=5, prompt="the", sample_kwargs={"max_new_tokens": 8})
    s_samples = stu.sample(40, prompt="the", max_new_tokens=8, generator=torch.Generator().manual_seed(5))
    total, units = ref.log_likelihood(s_samples, prompt="the")
    assert res["unit"] == "token"
    assert res["precision"] == pytest.approx((total.sum() / units.sum()).item(), abs=1e-9)
    np.testing.assert_allclose(res["precision_log_likelihood"], total.numpy())
    assert res["precision_ci"][0] <= res["precision"] <= res["precision_ci"][1]
    # recall alone gives the same numbers as inside precision_recall
    r_samples = ref.sample(40, prompt="the", max_new_tokens=8, generator=torch.Generator().manual_seed(6))
    alone = recall(r_samples, stu, score_kwargs={"prompt": "the"}, seed=5)
    assert alone["recall"] == pytest.approx(res["recall"], abs=1e-9)
    assert alone["recall_ci"] == pytest.approx(res["recall_ci"])


def _shuffled_tokenizer():
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS[::-1])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def test_cross_tokenizer_needs_bytes(tokenizer, teacher_model):
    other_tok = _shuffled_tokenizer()
    ref = CausalLMAdapter(teacher_model, tokenizer, progress=False)
    stu = CausalLMAdapter(make_llama(len(other_tok), seed=3), other_tok, progress=False)
    samples = ["cat sat on the mat", "dog ran"]
    with pytest.raises(ValueError, match="unit='byte'"):
        precision_recall(stu, ref, student_samples=samples, reference_samples=samples, unit="token")
    res = precision_recall(
        stu, ref, student_samples=samples, reference_samples=samples, score_kwargs={"prompt": "the"}, n_boot=50
    )
    assert res["unit"] == "byte"
    np.testing.assert_array_equal(res["precision_units"], [18, 7])  # UTF-8 bytes of the completions
    total, _ = ref.log_likelihood(samples, prompt="the")
    assert res["precision"] == pytest.approx(total.sum().item() / 25)
    with pytest.raises(ValueError, match="num_bytes"):
        precision([[0.0]], gaussian_1d(0, 1), unit="byte")


def test_protocol_errors_are_clear(teacher_model):
    with pytest.raises(ValueError, match="CausalLMAdapter"):
        precision_recall(teacher_model, gaussian_1d(0, 1))
