import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_kd.sharpening import (
    check_selectivity,
    sharpen_logits,
    sharpen_weights,
    solve_mean_selectivity,
    solve_selectivity,
    token_entropy,
)
from hf_kd.target_entropy import solve_head_selectivity


def test_selectivity_one_is_the_teacher():
    z = torch.randn(3, 5, 11)
    torch.testing.assert_close(sharpen_logits(z, 1.0).exp(), torch.softmax(z, -1))


def test_sharpen_logits_matches_closed_form():
    z = torch.tensor([0.0, math.log(2.0), math.log(3.0)])  # p proportional to (1, 2, 3)
    for beta in (0.5, 2.0, 4.0):
        expected = torch.tensor([1.0, 2.0**beta, 3.0**beta])
        torch.testing.assert_close(sharpen_logits(z, beta).exp(), expected / expected.sum())


def test_infinite_selectivity_is_argmax_with_ties_split():
    z = torch.tensor([[1.0, 3.0, 3.0, -2.0], [5.0, 0.0, 1.0, 2.0]])
    p = sharpen_logits(z, float("inf")).exp()
    torch.testing.assert_close(p, torch.tensor([[0.0, 0.5, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]]))


def test_sharpen_weights_closed_form_and_agrees_with_logits():
    a = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    for beta in (0.5, 1.0, 3.0):
        expected = a**beta / (a**beta).sum()
        torch.testing.assert_close(sharpen_weights(a, beta), expected)
        torch.testing.assert_close(sharpen_weights(a, beta), sharpen_logits(a.log(), beta).exp())
    torch.testing.assert_close(sharpen_weights(a, float("inf")), torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=a.dtype))
    ties = sharpen_weights(torch.tensor([0.4, 0.2, 0.4]), float("inf"))
    torch.testing.assert_close(ties, torch.tensor([0.5, 0.0, 0.5]))


def test_sharpen_weights_large_beta_does_not_underflow():
    a = torch.tensor([1e-30, 0.5 - 1e-30, 0.5])
    out = sharpen_weights(a, 1000.0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.sum(), torch.tensor(1.0))
    log_out = sharpen_weights(a.log(), 100.0, log_space=True)
    torch.testing.assert_close(log_out[0], torch.tensor(100.0 * (math.log(1e-30) - math.log(0.5)) - math.log(2.0)))


def test_token_entropy_closed_forms():
    assert token_entropy(torch.zeros(7)).item() == pytest.approx(math.log(7))
    assert token_entropy(torch.tensor([0.0, -1e4, -1e4])).item() == pytest.approx(0.0, abs=1e-6)
    p = 0.2
    two = token_entropy(torch.tensor([math.log(p), math.log(1 - p)]))
    assert two.item() == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)), abs=1e-6)
    z = torch.stack([torch.zeros(4), torch.tensor([0.0, -1e4, -1e4, -1e4])])
    mask = torch.tensor([True, False])
    assert token_entropy(z, mask, reduce=True).item() == pytest.approx(math.log(4))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    b1=st.floats(0.01, 50.0),
    b2=st.floats(0.01, 50.0),
)
def test_entropy_non_increasing_in_selectivity(seed, b1, b2):
    z = torch.randn(6, 13, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
    lo, hi = sorted((b1, b2))
    assert (token_entropy(hi * z) <= token_entropy(lo * z) + 1e-9).all()


def test_solve_selectivity_mean_and_per_token():
    z = torch.randn(2, 9, 40, generator=torch.Generator().manual_seed(0)) * 2
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False
    for target in (0.3, 1.0, 2.5):
        beta = solve_selectivity(z, target, mask=mask)
        assert token_entropy(beta * z, mask, reduce=True).item() == pytest.approx(target, abs=1e-3)
        betas = solve_selectivity(z, target, mask=mask, per_token=True)
        assert betas.shape == (2, 9)
        ent = token_entropy(betas.unsqueeze(-1) * z)
        assert (ent[mask] - target).abs().max().item() < 1e-3
        assert (betas[~mask] == 1.0).all()


def test_solve_selectivity_unreachable_targets_name_the_range():
    z = torch.randn(4, 10)
    with pytest.raises(ValueError, match=r"log V = 2\.3026"):
        solve_selectivity(z, 2.5)
    with pytest.raises(ValueError, match="unreachable"):
        solve_selectivity(z, 0.0)
    flat = torch.zeros(3, 10)  # uniform at every beta: entropy is log(10) whatever beta
    with pytest.raises(ValueError, match=r"ranges over \[2\.30"):
        solve_selectivity(flat, 1.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_bad_selectivity(bad):
    with pytest.raises(ValueError, match="selectivity must be > 0"):
        sharpen_logits(torch.randn(3), bad)
    with pytest.raises(ValueError, match="selectivity must be > 0"):
        sharpen_weights(torch.tensor([0.5, 0.5]), bad)


def test_non_finite_logits_are_refused():
    with pytest.raises(ValueError, match=r"NaN or \+inf"):
        sharpen_logits(torch.tensor([0.0, float("nan")]), 2.0)
    with pytest.raises(ValueError, match=r"NaN or \+inf"):
        solve_selectivity(torch.tensor([[0.0, float("inf"), 1.0]]), 0.5)


def _brute_entropy(z: torch.Tensor, beta) -> torch.Tensor:
    """Float64 entropy of softmax(beta * z) per row, straight from the definition (0 log 0 = 0)."""
    beta = torch.as_tensor(beta, dtype=torch.float64)
    p = torch.softmax(z.double() * (beta.reshape(-1, 1) if beta.dim() else beta), dim=-1)
    return -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(-1)


def _random_logits(seed, rows, vocab, scale, masked):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, vocab, generator=gen, dtype=torch.float64) * scale
    if masked:  # -inf on a random part of the vocabulary, keeping >= 2 ids per row
        drop = torch.rand(rows, vocab, generator=gen) < 0.4
        drop[:, :2] = False
        z = z.masked_fill(drop, float("-inf"))
    return z


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    rows=st.integers(1, 6),
    vocab=st.integers(3, 80),
    scale=st.floats(0.05, 20.0),
    where=st.floats(0.0, 1.0),
    masked=st.booleans(),
    per_token=st.booleans(),
)
def test_solve_selectivity_meets_every_reachable_target(seed, rows, vocab, scale, where, masked, per_token):
    """Any target inside the reachable range (float64 brute force at the search bounds) is met within 1e-4 nats."""
    z = _random_logits(seed, rows, vocab, scale, masked)
    h_top, h_bottom = _brute_entropy(z, 1e-3), _brute_entropy(z, 1e3)  # per row: entropy is non-increasing in beta
    if per_token:
        lo, hi = h_bottom.max().item(), h_top.min().item()  # reachable by every row
    else:
        lo, hi = h_bottom.mean().item(), h_top.mean().item()
    if not hi - lo > 1e-3:
        return  # nothing reachable in common (e.g. a near-uniform row with a near-one-hot one)
    target = lo + 5e-4 + where * (hi - lo - 1e-3)
    beta = solve_selectivity(z, target, per_token=per_token)
    reached = _brute_entropy(z, beta)
    error = (reached - target).abs().max() if per_token else (reached.mean() - target).abs()
    assert error.item() < 1e-4


@pytest.mark.parametrize("per_token", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_teachers_own_entropy_returns_selectivity_one(per_token, masked):
    """The target entropy of the unsharpened teacher gives beta = 1 (the issue's case returned beta = 0.0316)."""
    z = _random_logits(3, 8, 50, 2.0, masked)
    target = _brute_entropy(z, 1.0)
    if per_token:  # one row at a time: each row's own entropy
        betas = torch.stack([solve_selectivity(z[i : i + 1], target[i].item(), per_token=True)[0] for i in range(8)])
        torch.testing.assert_close(betas, torch.ones(8, dtype=z.dtype), atol=1e-6, rtol=0)
    else:
        assert solve_selectivity(z, target.mean().item()).item() == pytest.approx(1.0, abs=1e-6)


def test_per_batch_solve_takes_a_handful_of_passes_over_the_chunks():
    """Newton with dH/dbeta = -beta Var(z): few passes, each over chunks no larger than given."""
    z = torch.randn(40, 300, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    passes = []

    def chunks():
        passes.append(1)
        return (z[i : i + 7] for i in range(0, 40, 7))

    for target in (0.05, 1.0, 3.0, 5.5):
        passes.clear()
        beta = solve_mean_selectivity(chunks, target)
        assert _brute_entropy(z, beta).mean().item() == pytest.approx(target, abs=1e-5)
        assert len(passes) <= 10


@pytest.mark.parametrize("per_token", [False, True])
def test_solve_from_hidden_states_matches_float64_dense_solve(per_token):
    """The trainer's chunked path (hidden states, lm_head, -inf bias) against a float64 bisection on dense logits."""
    gen = torch.Generator().manual_seed(0)
    h, w = torch.randn(13, 8, generator=gen), torch.randn(30, 8, generator=gen)
    bias = torch.zeros(30)
    bias[25:] = float("-inf")  # a padded vocabulary
    beta = solve_head_selectivity(h, w, bias, 1.2, per_token=per_token, chunk_size=4)
    z = h.double() @ w.double().T + bias.double()
    lo, hi = (
        torch.full((13 if per_token else 1,), math.log(1e-3)),
        torch.full((13 if per_token else 1,), math.log(1e3)),
    )
    for _ in range(60):
        mid = (lo + hi) / 2
        ent = _brute_entropy(z, mid.double().exp() if per_token else mid.double().exp()[0])
        high = ent > 1.2 if per_token else (ent.mean() > 1.2).reshape(1)
        lo, hi = torch.where(high, mid, lo), torch.where(high, hi, mid)
    reference = ((lo + hi) / 2).double().exp()
    got = beta.double() if per_token else torch.tensor([beta], dtype=torch.float64)
    torch.testing.assert_close(got, reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("value", [1e39, 1e100, float(torch.finfo(torch.float32).max) * 1.01])
def test_selectivity_beyond_float32_is_refused(value):
    with pytest.raises(ValueError, match="beyond float32's range"):
        check_selectivity(value)
    with pytest.raises(ValueError, match="beyond float32's range"):
        sharpen_logits(torch.randn(4), value)
    check_selectivity(float(torch.finfo(torch.float32).max))  # the largest float32 is fine
    with pytest.raises(ValueError, match="selectivity=inf .* is refused"):
        check_selectivity(float("inf"), allow_inf=False)


def test_masked_ids_are_accepted_but_not_a_fully_masked_row():
    z = torch.tensor([[0.0, 1.0, float("-inf")], [2.0, float("-inf"), 0.5]])
    e = math.exp
    expected = torch.tensor([[1, e(2), 0], [e(4), 0, e(1)]]) / torch.tensor([[1 + e(2)], [e(4) + e(1)]])
    torch.testing.assert_close(sharpen_logits(z, 2.0).exp(), expected)
    with pytest.raises(ValueError, match="-inf at every id"):
        solve_selectivity(torch.full((2, 3), float("-inf")), 0.5)
