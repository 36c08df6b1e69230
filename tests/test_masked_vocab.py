"""Masked vocabularies (-inf logits), float16 overflow, selectivity refusals: all seven losses, dense and chunked.

The anchor is a float64 reference written from the definitions in probability space (hf_kd.losses's docstring):
restricted to the unmasked support when both models mask the same ids, and on the full vocabulary (teacher mass
zero off its support) when the student keeps mass there.
"""

import pytest
import torch

from hf_kd.losses import LOSS_TYPES, chunked_distillation_loss, distillation_loss
from hf_kd.topk import topk_distillation_loss

BETA, TEMPERATURE, JSD, SKEW = 1.5, 1.2, 0.3, 0.1
V, H, N = 12, 6, 9
SUPPORT = torch.tensor([True] * 8 + [False] * 4)  # the last 4 ids are masked (a padded vocabulary)
VARIANTS = [(t, {}) for t in LOSS_TYPES] + [
    ("generalized_jsd", {"jsd_beta": 1.0}),
    ("skew_reverse_kl", {"skew_alpha": 0.0}),
]


def _xlogx_over_y(x, y):
    """``x log(x / y)`` with 0 where x = 0, and gradients free of 0 * inf."""
    pos = x > 0
    one = torch.ones_like(x)
    xs, ys = torch.where(pos, x, one), torch.where(pos, y, one)
    return torch.where(pos, xs * (xs / ys).log(), torch.zeros_like(x))


def _kl(x, y):
    return _xlogx_over_y(x, y).sum(-1)


def reference(zs, zt, loss_type, labels=None, jsd_beta=JSD, skew_alpha=SKEW):
    """Per-token loss in float64 from the definitions; q = softmax(zs / T), p = softmax(beta * zt / T)."""
    q = torch.softmax(zs.double() / TEMPERATURE, -1)
    if loss_type == "nll":
        return -q.gather(-1, labels[:, None]).squeeze(-1).log()
    p = torch.softmax(zt.double() * BETA / TEMPERATURE, -1)
    reverse = loss_type == "reverse_kl" or (loss_type, jsd_beta) == ("generalized_jsd", 1.0)
    if reverse or (loss_type, skew_alpha) == ("skew_reverse_kl", 0.0):
        on_support = q * (p > 0)
        mass = on_support.sum(-1)
        return _kl(on_support / mass[:, None], p) - mass.log()
    if loss_type == "forward_kl":
        return _kl(p, q)
    if loss_type == "generalized_jsd":
        m = jsd_beta * p + (1 - jsd_beta) * q
        return jsd_beta * _kl(p, m) + (1 - jsd_beta) * _kl(q, m)
    if loss_type == "skew_forward_kl":
        return _kl(p, skew_alpha * p + (1 - skew_alpha) * q)
    if loss_type == "skew_reverse_kl":
        return _kl(q, (1 - skew_alpha) * p + skew_alpha * q)
    return 0.5 * (p - q).abs().sum(-1)  # tvd


def _kwargs(loss_type, extra, labels):
    kw = dict(loss_type=loss_type, selectivity=BETA, temperature=TEMPERATURE, jsd_beta=JSD, skew_alpha=SKEW)
    kw.update(extra)
    if loss_type == "nll":
        kw["labels"] = labels
    return kw


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    hs, ws, bs = torch.randn(N, H, generator=gen), torch.randn(V, H, generator=gen), torch.randn(V, generator=gen)
    ht, wt, bt = torch.randn(N, 5, generator=gen), torch.randn(V, 5, generator=gen), torch.randn(V, generator=gen)
    labels = torch.randint(0, int(SUPPORT.sum()), (N,), generator=gen)  # labels inside the support
    return hs, ws, bs, ht, wt, bt, labels


def _masked(bias):
    return bias.masked_fill(~SUPPORT, float("-inf"))


@pytest.mark.parametrize(("loss_type", "extra"), VARIANTS)
def test_both_masked_equals_float64_reference_on_the_support_dense_and_chunked(loss_type, extra):
    """Teacher and student mask the same ids (e.g. an lm_head bias of -inf): loss and gradients equal the float64
    loss computed on the unmasked ids only; masked ids get zero gradient."""
    hs, ws, bs, ht, wt, bt, labels = _inputs()
    kw = _kwargs(loss_type, extra, labels)

    # Reference: the support's columns only, float64.
    hs64, ws64 = hs.double().requires_grad_(), ws.double().requires_grad_()
    zs_sup = hs64 @ ws64[SUPPORT].T + bs.double()[SUPPORT]
    zt_sup = ht.double() @ wt.double()[SUPPORT].T + bt.double()[SUPPORT]
    ref = reference(zs_sup, zt_sup, loss_type, labels, **extra).mean()
    ref.backward()

    # Dense: full (N, V) logits with -inf on the masked ids.
    zs = (hs @ ws.T + _masked(bs)).requires_grad_()
    zt = ht @ wt.T + _masked(bt)
    dense = distillation_loss(zs, zt, **kw)
    dense.backward()
    assert torch.isfinite(dense) and torch.isfinite(zs.grad).all()
    torch.testing.assert_close(dense.double(), ref, atol=1e-5, rtol=1e-5)
    assert (zs.grad[:, ~SUPPORT] == 0).all()

    # Chunked: hidden states, weights and -inf biases, as the trainer passes them.
    h, w = hs.clone().requires_grad_(), ws.clone().requires_grad_()
    chunked = chunked_distillation_loss(
        h, w, ht, wt, student_bias=_masked(bs), teacher_bias=_masked(bt), chunk_size=4, **kw
    )
    chunked.backward()
    torch.testing.assert_close(chunked.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h.grad.double(), hs64.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w.grad.double(), ws64.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("loss_type", "extra"), VARIANTS)
def test_student_mass_off_the_teacher_support_has_a_finite_correct_penalty(loss_type, extra):
    """Teacher masked, student not: finite loss and gradients equal to the float64 definitions on the full vocabulary
    (reverse KL: KL(q_S || p) - log Q_S), dense (a different mask per position) and chunked (a -inf teacher bias);
    and more student mass off the support costs more, for every loss."""
    gen = torch.Generator().manual_seed(1)
    zs = torch.randn(N, V, generator=gen)
    masked = torch.rand(N, V, generator=gen) < 0.4
    masked[:, :2] = False  # labels (id 0) and at least two ids stay unmasked
    zt = torch.randn(N, V, generator=gen).masked_fill(masked, float("-inf"))
    labels = torch.zeros(N, dtype=torch.long)
    kw = _kwargs(loss_type, extra, labels)

    zs_ref = zs.double().requires_grad_()
    ref = reference(zs_ref, zt.double(), loss_type, labels, **extra).mean()
    ref.backward()
    z = zs.clone().requires_grad_()
    loss = distillation_loss(z, zt, **kw)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    torch.testing.assert_close(loss.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z.grad.double(), zs_ref.grad, atol=1e-5, rtol=1e-4)

    hs, ws, bs, ht, wt, bt, labels = _inputs()
    hs64, ws64 = hs.double().requires_grad_(), ws.double().requires_grad_()
    teacher = ht.double() @ wt.double().T + _masked(bt).double()
    ref = reference(hs64 @ ws64.T + bs.double(), teacher, loss_type, labels, **extra).mean()
    ref.backward()
    h, w = hs.clone().requires_grad_(), ws.clone().requires_grad_()
    kw = _kwargs(loss_type, extra, labels)
    loss = chunked_distillation_loss(h, w, ht, wt, student_bias=bs, teacher_bias=_masked(bt), chunk_size=4, **kw)
    loss.backward()
    torch.testing.assert_close(loss.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h.grad.double(), hs64.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w.grad.double(), ws64.grad, atol=1e-5, rtol=1e-4)

    # The penalty: raising the student's logits on the teacher's masked ids raises every loss.
    kw = _kwargs(loss_type, extra, torch.zeros(N, dtype=torch.long))
    leak = zs + 3.0 * masked.float()
    assert distillation_loss(leak, zt, **kw) > distillation_loss(zs, zt, **kw)


@pytest.mark.parametrize("loss_type", ["nll", "forward_kl", "tvd"])
def test_student_masked_where_the_teacher_has_mass_is_an_error_or_exact(loss_type):
    """A student -inf where the teacher (or the label) has mass makes forward-type losses infinite: refused."""
    zs = torch.randn(3, 5)
    zs[:, 1] = float("-inf")
    zt, labels = torch.randn(3, 5), torch.tensor([1, 0, 0])
    kw = _kwargs(loss_type, {}, labels)
    if loss_type == "tvd":  # finite: the teacher's mass on id 1 is simply missed
        p, q = torch.softmax(BETA * zt.double() / TEMPERATURE, -1), torch.softmax(zs.double() / TEMPERATURE, -1)
        expected = 0.5 * (p - q).abs().sum(-1).mean()
        torch.testing.assert_close(distillation_loss(zs, zt, **kw).double(), expected, atol=1e-6, rtol=1e-6)
        return
    with pytest.raises(ValueError, match="zero probability .* -inf logit"):
        distillation_loss(zs, zt, **kw)
    bias = torch.zeros(5)
    bias[1] = float("-inf")
    with pytest.raises(ValueError, match="zero probability .* -inf logit"):
        chunked_distillation_loss(
            torch.randn(3, 4), torch.randn(5, 4), torch.randn(3, 4), torch.randn(5, 4), student_bias=bias, **kw
        )


@pytest.mark.parametrize("loss_type", ["forward_kl", "reverse_kl", "generalized_jsd", "tvd"])
def test_float16_logit_overflow_is_recomputed_in_float32(loss_type):
    """fp16 hidden states whose logits pass 65504 (float16's largest): the chunked loss recomputes those chunks in
    float32 and gives the float32 result (the issue's reverse KL was 1.63 against 8.62)."""
    gen = torch.Generator().manual_seed(0)
    hs, ws = torch.randn(6, 4, generator=gen) * 300, torch.randn(10, 4, generator=gen) * 300
    ht, wt = torch.randn(6, 4, generator=gen) * 300, torch.randn(10, 4, generator=gen) * 300
    hs16, ws16, ht16, wt16 = (x.half() for x in (hs, ws, ht, wt))
    assert torch.isposinf(hs16 @ ws16.T).any()  # the float16 logits do overflow
    kw = dict(loss_type=loss_type, selectivity=1e-4, temperature=1e4)  # keep the distributions soft
    h = hs16.clone().requires_grad_()
    loss = chunked_distillation_loss(h, ws16, ht16, wt16, chunk_size=2, **kw)
    loss.backward()
    h32 = hs16.float().requires_grad_()
    expected = distillation_loss(h32 @ ws16.float().T, ht16.float() @ wt16.float().T, **kw)
    expected.backward()
    torch.testing.assert_close(loss.float(), expected, atol=1e-5, rtol=1e-4)
    assert torch.isfinite(h.grad).all()
    torch.testing.assert_close(h.grad.float(), h32.grad, atol=1e-3, rtol=1e-2)
    with pytest.raises(ValueError, match="float16 overflow"):
        distillation_loss((hs16 @ ws16.T).float(), (ht16 @ wt16.T).float(), **kw)


@pytest.mark.parametrize("selectivity", [1e39, 1e100, float("inf")])
def test_losses_refuse_selectivity_beyond_float32_and_inf(selectivity):
    zs, zt = torch.randn(2, 5), torch.randn(2, 5)
    match = "beyond float32's range" if selectivity < float("inf") else "selectivity=inf .* is refused"
    with pytest.raises(ValueError, match=match):
        distillation_loss(zs, zt, loss_type="reverse_kl", selectivity=selectivity)
    with pytest.raises(ValueError, match=match):
        chunked_distillation_loss(
            torch.randn(2, 3),
            torch.randn(5, 3),
            torch.randn(2, 3),
            torch.randn(5, 3),
            loss_type="forward_kl",
            selectivity=selectivity,
        )
    ids, lp = torch.tensor([[0, 1], [2, 3]]), torch.log(torch.tensor([[0.6, 0.3], [0.5, 0.4]]))
    with pytest.raises(ValueError, match=match):
        topk_distillation_loss(zs, ids, lp, tail="renormalize", selectivity=selectivity)
    # nll never reads the teacher, so its selectivity is not used
    distillation_loss(zs, loss_type="nll", labels=torch.tensor([0, 1]), selectivity=selectivity)
