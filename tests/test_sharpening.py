import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_kd.sharpening import sharpen_logits, sharpen_weights, solve_selectivity, token_entropy


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
    with pytest.raises(ValueError, match="NaN or infinite"):
        sharpen_logits(torch.tensor([0.0, float("nan")]), 2.0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        solve_selectivity(torch.tensor([[0.0, float("inf"), 1.0]]), 0.5)
