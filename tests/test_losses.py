import math

import pytest
import torch

from hf_kd.losses import LOSS_TYPES, chunked_distillation_loss, distillation_loss

DIVERGENCES = [t for t in LOSS_TYPES if t != "nll"]


def brute_force(p, q, loss_type, jsd_beta=0.5, skew_alpha=0.1):
    """One token, plain Python floats: the textbook formulas, written independently of hf_kd."""

    def kl(a, b):
        return sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0)

    def mix(a, b, w):
        return [w * x + (1 - w) * y for x, y in zip(a, b)]

    if loss_type == "forward_kl":
        return kl(p, q)
    if loss_type == "reverse_kl":
        return kl(q, p)
    if loss_type == "generalized_jsd":
        m = mix(p, q, jsd_beta)
        return jsd_beta * kl(p, m) + (1 - jsd_beta) * kl(q, m)
    if loss_type == "skew_forward_kl":
        return kl(p, mix(p, q, skew_alpha))
    if loss_type == "skew_reverse_kl":
        return kl(q, mix(q, p, skew_alpha))
    if loss_type == "tvd":
        return 0.5 * sum(abs(x - y) for x, y in zip(p, q))
    raise AssertionError(loss_type)


@pytest.mark.parametrize("loss_type", DIVERGENCES)
def test_identical_distributions_give_zero(loss_type):
    z = torch.randn(2, 5, 17)
    assert distillation_loss(z, z.clone(), loss_type=loss_type).abs().item() < 1e-6


def test_known_kl_values():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    forward = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    reverse = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    fwd = distillation_loss(q.log(), p.log(), loss_type="forward_kl")
    rev = distillation_loss(q.log(), p.log(), loss_type="reverse_kl")
    tvd = distillation_loss(q.log(), p.log(), loss_type="tvd")
    assert fwd.item() == pytest.approx(forward, abs=1e-6)
    assert rev.item() == pytest.approx(reverse, abs=1e-6)
    assert tvd.item() == pytest.approx(0.4, abs=1e-6)


@pytest.mark.parametrize("loss_type", DIVERGENCES)
@pytest.mark.parametrize("selectivity", [0.5, 1.0, 2.0, 4.0])
def test_matches_brute_force_with_sharpening_and_temperature(loss_type, selectivity):
    gen = torch.Generator().manual_seed(1)
    zs, zt = (
        torch.randn(6, 7, generator=gen, dtype=torch.float64),
        torch.randn(6, 7, generator=gen, dtype=torch.float64),
    )
    mask = torch.tensor([True, True, False, True, False, True])
    temperature = 1.7
    got = distillation_loss(zs, zt, loss_type=loss_type, mask=mask, selectivity=selectivity, temperature=temperature)
    values = []
    for i in range(6):
        if mask[i]:
            p = torch.softmax(selectivity * zt[i] / temperature, -1).tolist()  # sharpened on top of the temperature
            q = torch.softmax(zs[i] / temperature, -1).tolist()  # the temperature divides both sides
            values.append(brute_force(p, q, loss_type))
    assert got.item() == pytest.approx(sum(values) / len(values), abs=1e-10)


@pytest.mark.parametrize("jsd_beta", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [0.7, 1.0, 2.0])
def test_generalized_jsd_matches_trl(jsd_beta, temperature):
    from trl.experimental.gkd import GKDTrainer

    zs, zt = torch.randn(2, 4, 9), torch.randn(2, 4, 9)
    labels = torch.tensor([[1, 2, -100, 3], [-100, 4, 5, 6]])
    ours = distillation_loss(
        zs,
        zt,
        loss_type="generalized_jsd",
        jsd_beta=jsd_beta,
        labels=labels,
        mask=labels != -100,
        temperature=temperature,
    )
    theirs = GKDTrainer.generalized_jsd_loss(
        zs, zt, labels=labels, beta=jsd_beta, temperature=temperature, reduction="mean"
    )
    # TRL's "mean" averages over vocabulary entries too; ours is per token.
    assert ours.item() == pytest.approx(theirs.item() * zs.shape[-1], rel=1e-5)


def test_skew_zero_is_plain_kl_and_endpoints_of_jsd():
    zs, zt = torch.randn(3, 8), torch.randn(3, 8)
    fwd = distillation_loss(zs, zt, loss_type="forward_kl")
    rev = distillation_loss(zs, zt, loss_type="reverse_kl")
    torch.testing.assert_close(distillation_loss(zs, zt, loss_type="skew_forward_kl", skew_alpha=0.0), fwd)
    torch.testing.assert_close(distillation_loss(zs, zt, loss_type="skew_reverse_kl", skew_alpha=0.0), rev)
    torch.testing.assert_close(distillation_loss(zs, zt, loss_type="generalized_jsd", jsd_beta=0.0), fwd)
    torch.testing.assert_close(distillation_loss(zs, zt, loss_type="generalized_jsd", jsd_beta=1.0), rev)


def test_nll_and_reductions():
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 2, -100], [0, 4, 3]])
    log_q = torch.log_softmax(logits, -1)
    picked = [-log_q[b, t, labels[b, t]].item() for b in range(2) for t in range(3) if labels[b, t] != -100]
    mean = distillation_loss(logits, loss_type="nll", labels=labels)
    assert mean.item() == pytest.approx(sum(picked) / len(picked), abs=1e-6)
    summed = distillation_loss(logits, loss_type="nll", labels=labels, num_items_in_batch=10)
    assert summed.item() == pytest.approx(sum(picked) / 10, abs=1e-6)


def test_per_token_selectivity_equals_scaled_teacher():
    zs, zt = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    beta = torch.rand(2, 3) + 0.5
    got = distillation_loss(zs, zt, loss_type="forward_kl", selectivity=beta)
    expected = distillation_loss(zs, zt * beta.unsqueeze(-1), loss_type="forward_kl")
    torch.testing.assert_close(got, expected)


def _chunked_case(vocab, tokens=48, hidden_s=24, hidden_t=40, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    hs = torch.randn(2, tokens // 2, hidden_s, generator=gen, dtype=dtype).requires_grad_()
    ws = (torch.randn(vocab, hidden_s, generator=gen, dtype=dtype) * 0.3).requires_grad_()
    ht = torch.randn(2, tokens // 2, hidden_t, generator=gen, dtype=dtype)
    wt = torch.randn(vocab, hidden_t, generator=gen, dtype=dtype) * 0.3
    labels = torch.randint(0, vocab, (2, tokens // 2), generator=gen)
    mask = torch.rand(2, tokens // 2, generator=gen) > 0.25
    return hs, ws, ht, wt, labels, mask


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("vocab", [50, 49_152])
def test_chunked_equals_dense(loss_type, vocab):
    hs, ws, ht, wt, labels, mask = _chunked_case(vocab)
    kw = dict(loss_type=loss_type, labels=labels, mask=mask, selectivity=2.0, temperature=1.5, num_items_in_batch=29)
    dense = distillation_loss(hs @ ws.T, ht @ wt.T, **kw)
    grads_dense = torch.autograd.grad(dense, [hs, ws])
    chunked = chunked_distillation_loss(hs, ws, ht, wt, chunk_size=7, **kw)
    grads_chunked = torch.autograd.grad(chunked, [hs, ws])
    assert abs(chunked.item() - dense.item()) < 1e-5
    for a, b in zip(grads_dense, grads_chunked):
        assert (a - b).abs().max().item() < 1e-5


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gradcheck_float64(loss_type):
    hs, ws, ht, wt, labels, mask = _chunked_case(7, tokens=6, hidden_s=3, hidden_t=4, dtype=torch.float64)
    kw = dict(loss_type=loss_type, labels=labels, mask=mask, selectivity=1.5, temperature=1.2)
    assert torch.autograd.gradcheck(lambda h, w: distillation_loss(h @ w.T, ht @ wt.T, **kw), (hs, ws))
    assert torch.autograd.gradcheck(lambda h, w: chunked_distillation_loss(h, w, ht, wt, chunk_size=2, **kw), (hs, ws))


def test_errors_name_the_problem():
    zs, zt = torch.randn(2, 5), torch.randn(2, 7)
    with pytest.raises(ValueError, match="student vocabulary size 5 != teacher vocabulary size 7"):
        distillation_loss(zs, zt, loss_type="forward_kl")
    with pytest.raises(ValueError, match="student vocabulary size 5 != teacher vocabulary size 7"):
        chunked_distillation_loss(torch.randn(2, 3), torch.randn(5, 3), torch.randn(2, 4), torch.randn(7, 4))
    with pytest.raises(ValueError, match="selectivity must be > 0"):
        distillation_loss(zs, zs, loss_type="forward_kl", selectivity=0.0)
    with pytest.raises(ValueError, match=r"NaN or \+inf"):
        distillation_loss(zs, torch.full((2, 5), float("nan")), loss_type="forward_kl")
    with pytest.raises(ValueError, match="teacher hidden states contain NaN"):
        chunked_distillation_loss(
            torch.randn(2, 3), torch.randn(5, 3), torch.full((2, 4), float("inf")), torch.randn(5, 4)
        )
    with pytest.raises(ValueError, match="unknown loss_type"):
        distillation_loss(zs, zs, loss_type="kl")
    with pytest.raises(ValueError, match="needs `labels`"):
        distillation_loss(zs, loss_type="nll")
    with pytest.raises(ValueError, match="needs the teacher"):
        distillation_loss(zs, loss_type="reverse_kl")


def test_chunked_loss_reports_entropies_for_logging():
    from hf_kd.sharpening import token_entropy

    hs, ws, ht, wt, labels, mask = _chunked_case(50)
    stats = {}
    chunked_distillation_loss(
        hs, ws, ht, wt, loss_type="reverse_kl", mask=mask, selectivity=3.0, temperature=2.0, chunk_size=5, stats=stats
    )
    z_s, z_t = (hs @ ws.T)[mask].detach(), (ht @ wt.T)[mask]
    assert stats["num_tokens"].item() == mask.sum().item()
    torch.testing.assert_close(stats["student_entropy"], token_entropy(z_s / 2.0).sum())
    torch.testing.assert_close(stats["teacher_entropy"], token_entropy(z_t / 2.0).sum())
    torch.testing.assert_close(stats["teacher_entropy_sharpened"], token_entropy(3.0 * z_t / 2.0).sum())
    assert stats["selectivity"].item() == pytest.approx(3.0 * mask.sum().item())


POSTPROCESS = [  # (student scale, softcap), (teacher scale, softcap): Cohere-, Granite-, Gemma-2-style heads
    ((0.0625, None), (0.125, None)),
    ((1.0, None), (1 / 3, None)),
    ((1.0, 3.0), (2.0, 5.0)),
]


@pytest.mark.parametrize(("student_post", "teacher_post"), POSTPROCESS)
@pytest.mark.parametrize("jsd_beta", [0.0, 0.5, 1.0])
def test_chunked_postprocessed_logits_match_trl_kernel(student_post, teacher_post, jsd_beta):
    """Scale and softcap go through the closed-form backward exactly as TRL's chunked divergence applies them."""
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    hs, ws, ht, wt, _, mask = _chunked_case(50, seed=3)
    hs, ws, ht, wt = (x * 4 for x in (hs.detach(), ws.detach(), ht, wt))  # logits large enough for the softcap
    hs.requires_grad_(), ws.requires_grad_()
    post = dict(
        student_logit_scale=student_post[0],
        student_final_logit_softcapping=student_post[1],
        teacher_logit_scale=teacher_post[0],
        teacher_final_logit_softcapping=teacher_post[1],
    )
    ours = chunked_distillation_loss(
        hs,
        ws,
        ht,
        wt,
        loss_type="generalized_jsd",
        mask=mask,
        jsd_beta=jsd_beta,
        temperature=1.7,
        chunk_size=7,
        num_items_in_batch=31,
        **post,
    )
    theirs, _, _ = _chunked_divergence_loss(
        hs, ht, ws, wt, mask, jsd_beta, num_items_in_batch=31, temperature=1.7, **post
    )
    assert ours.item() > 1e-3
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    for a, b in zip(torch.autograd.grad(ours, [hs, ws]), torch.autograd.grad(theirs, [hs, ws])):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("loss_type", ["forward_kl", "tvd", "nll"])
def test_postprocessed_gradcheck_float64(loss_type):
    hs, ws, ht, wt, labels, mask = _chunked_case(7, tokens=6, hidden_s=3, hidden_t=4, dtype=torch.float64)
    kw = dict(loss_type=loss_type, labels=labels, mask=mask, selectivity=1.5, temperature=1.2, chunk_size=2)
    post = dict(student_logit_scale=0.5, student_final_logit_softcapping=2.0, teacher_logit_scale=3.0)
    assert torch.autograd.gradcheck(lambda h, w: chunked_distillation_loss(h, w, ht, wt, **kw, **post), (hs, ws))


@pytest.mark.parametrize("loss_type", ["generalized_jsd", "forward_kl", "nll"])
def test_small_batches_keep_the_logit_gradient_from_forward(monkeypatch, loss_type):
    """Under `KEEP_LOGIT_GRAD` logits the loss forms dL/dz in forward and backward runs no logits matmul; losses and
    gradients equal the recomputing path's bit for bit (the same function of the same logits)."""
    import hf_kd.losses as losses

    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(50, 16, generator=g), torch.randn(300, 16, generator=g)
    ht, wt, labels = torch.randn(50, 16, generator=g), torch.randn(300, 16, generator=g), torch.randint(0, 300, (50,))
    heads = []
    head_logits = losses.head_logits
    monkeypatch.setattr(losses, "head_logits", lambda *a: heads.append(1) or head_logits(*a))
    out = {}
    for budget in (2**25, 0):
        monkeypatch.setattr(losses, "KEEP_LOGIT_GRAD", budget)
        hs, ws = h.clone().requires_grad_(), w.clone().requires_grad_()
        kw = dict(loss_type=loss_type, selectivity=2.0, temperature=0.8, chunk_size=16, labels=labels)
        loss = losses.chunked_distillation_loss(hs, ws, ht, wt, **kw)
        forward_heads = len(heads)
        loss.backward()
        out[budget] = (loss.detach(), hs.grad, ws.grad, len(heads) - forward_heads)
        heads.clear()
    kept, recomputed = out[2**25], out[0]
    assert kept[3] == 0 and recomputed[3] > 0  # backward recomputed logits only without the kept gradient
    for a, b in zip(kept[:3], recomputed[:3]):
        assert torch.equal(a, b)
