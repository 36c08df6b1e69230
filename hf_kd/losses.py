"""Token-level distillation losses between a sharpened teacher and a student, dense and memory-bounded (chunked).

Notation (per position, over the vocabulary ``V``): the teacher is ``p = softmax(selectivity * z_t / temperature)``
and the student is ``q = softmax(z_s / temperature)``. The temperature divides both sides (TRL's meaning); the
selectivity sharpens the teacher on top of it.

| loss_type          | per-token value                                        |
|--------------------|--------------------------------------------------------|
| ``nll``            | ``-log q[label]``                                      |
| ``forward_kl``     | ``KL(p || q)``                                         |
| ``reverse_kl``     | ``KL(q || p)``                                         |
| ``generalized_jsd``| ``l KL(p || m) + (1 - l) KL(q || m)``, ``m = l p + (1 - l) q`` (TRL's ``beta`` = l)  |

The generalized JSD follows TRL's ``generalized_jsd_loss``: ``l = 0`` is forward KL and ``l = 1`` is reverse KL.
| ``skew_forward_kl``| ``KL(p || a p + (1 - a) q)`` (DistiLLM, skew ``a``)   |
| ``skew_reverse_kl``| ``KL(q || (1 - a) p + a q)``                           |
| ``tvd``            | ``0.5 * sum |p - q|``                                  |

Reduction: ``sum(mask * value) / num_items_in_batch`` when given, else the mean over unmasked positions.

Masked vocabularies: a ``-inf`` logit is an id with zero probability (a padded or constrained vocabulary, an
lm_head bias of ``-inf``), in the teacher, the student or both. Every loss stays finite, with gradients, and equals
the loss on the unmasked support when both models mask the same ids. Where the teacher has no mass (``p_v = 0``)
and the student has some (``q_v > 0``):

- ``forward_kl``: those ids add no term, and the student pays through its normalisation (``log q`` falls on the
  teacher's support): the exact, finite KL.
- ``reverse_kl`` (and ``skew_reverse_kl`` at ``a = 0``, ``generalized_jsd`` at ``l = 1``): the exact value is
  ``+inf``. We use ``KL(q_S || p) - log Q_S``: ``Q_S`` is the student's mass on the teacher's support ``S`` and
  ``q_S = q / Q_S`` there. It equals the reverse KL when ``Q_S = 1`` and charges ``-log Q_S`` (finite, zero only
  without stray mass, growing without bound as ``Q_S -> 0``) for mass off the support.
- ``generalized_jsd``, ``skew_forward_kl``, ``skew_reverse_kl``: the mixture ``m`` is positive wherever ``q`` is,
  so the exact value is finite (``skew_reverse_kl`` charges ``q_v log(1 / a)`` per such id).
- ``tvd``: exact; stray student mass counts in full. ``nll``: no teacher.

A student with ``-inf`` where the teacher has mass makes forward-type losses truly infinite: that is refused with
an error, as is any other non-finite loss.
"""

from __future__ import annotations

import math

import torch

from .sharpening import check_logits, check_selectivity, default_chunk_size, entropy_from_log_probs

__all__ = [
    "LOSS_TYPES",
    "chunked_distillation_loss",
    "distillation_loss",
    "head_logits",
    "logit_postprocess",
    "token_divergence",
]

LOSS_TYPES = ("nll", "forward_kl", "reverse_kl", "generalized_jsd", "skew_forward_kl", "skew_reverse_kl", "tvd")


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``sum_v p_v (log p_v - log q_v)`` over the last dim; ids with ``p_v = 0`` add 0 (also when ``q_v = 0``)."""
    p = log_p.exp()
    # where, not a fill after the product: autograd would meet 0 * (-inf - -inf) = NaN in the product's backward.
    return (p * torch.where(p > 0, log_p - log_q, 0.0)).sum(-1)


def _restrict(log_q: torch.Tensor, log_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log q_S, log Q_S)``: the student renormalised on the teacher's support ``S = {p > 0}``, and its mass there.

    Shapes `(..., V)` -> `(..., V)` (``-inf`` off ``S``) and `(..., 1)`.
    """
    log_q_s = log_q.masked_fill(log_p == -math.inf, -math.inf)
    log_mass = torch.logsumexp(log_q_s, dim=-1, keepdim=True)
    return log_q_s - log_mass, log_mass


def _reverse_kl(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """``KL(q_S || p) - log Q_S`` (see the module docstring): the reverse KL when the student stays on ``S``."""
    log_q_s, log_mass = _restrict(log_q, log_p)
    return _kl(log_q_s, log_p) - log_mass.squeeze(-1)


def _log_mix(log_p: torch.Tensor, log_q: torch.Tensor, weight_p: float) -> torch.Tensor:
    """``log(weight_p * p + (1 - weight_p) * q)``, with the mixture floored at the dtype's smallest normal number.

    The floor only touches entries where both probabilities underflow; their terms in the divergences and gradients
    carry a factor ``p`` or ``q`` that is zero there. One fused ``lerp`` is much cheaper than ``logaddexp``.
    """
    mix = torch.lerp(log_q.exp(), log_p.exp(), weight_p)
    return mix.clamp_min_(torch.finfo(mix.dtype).tiny).log_()


def token_divergence(
    student_log_probs: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    loss_type: str,
    jsd_beta: float = 0.5,
    skew_alpha: float = 0.1,
) -> torch.Tensor:
    """Per-position divergence between two normalised distributions given as log-probabilities.

    Args:
        student_log_probs (`torch.Tensor` of shape `(..., V)`): ``log q``.
        teacher_log_probs (`torch.Tensor` of shape `(..., V)`): ``log p`` (already sharpened).
        loss_type (`str`): one of `LOSS_TYPES` except ``"nll"``.
        jsd_beta (`float`): mixing weight of the generalized JSD, in [0, 1].
        skew_alpha (`float`): skew of the skew KLs, in [0, 1).

    Returns:
        `torch.Tensor` of shape `(...)`.
    """
    log_q, log_p = student_log_probs, teacher_log_probs
    if loss_type == "forward_kl":
        return _kl(log_p, log_q)
    if loss_type == "reverse_kl":
        return _reverse_kl(log_q, log_p)
    if loss_type == "generalized_jsd":
        if jsd_beta == 0:
            return _kl(log_p, log_q)
        if jsd_beta == 1:
            return _reverse_kl(log_q, log_p)
        log_m = _log_mix(log_p, log_q, jsd_beta)
        return jsd_beta * _kl(log_p, log_m) + (1 - jsd_beta) * _kl(log_q, log_m)
    if loss_type == "skew_forward_kl":
        return _kl(log_p, log_q if skew_alpha == 0 else _log_mix(log_p, log_q, skew_alpha))
    if loss_type == "skew_reverse_kl":
        if skew_alpha == 0:
            return _reverse_kl(log_q, log_p)
        return _kl(log_q, _log_mix(log_p, log_q, 1 - skew_alpha))
    if loss_type == "tvd":
        return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)
    raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {LOSS_TYPES}.")


def _is_reverse_kl(loss_type: str, jsd_beta: float, skew_alpha: float) -> bool:
    """Whether the loss is the plain reverse KL (also generalized JSD at l = 1 and skew reverse KL at a = 0)."""
    return (
        loss_type == "reverse_kl"
        or (loss_type == "generalized_jsd" and jsd_beta == 1)
        or (loss_type == "skew_reverse_kl" and skew_alpha == 0)
    )


def _check_arguments(loss_type, labels, teacher, jsd_beta, skew_alpha, temperature, selectivity):
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {LOSS_TYPES}.")
    if loss_type == "nll" and labels is None:
        raise ValueError("loss_type='nll' needs `labels` (the completion token ids).")
    if loss_type != "nll" and teacher is None:
        raise ValueError(f"loss_type={loss_type!r} needs the teacher's logits (or hidden states and lm_head weight).")
    if not 0.0 <= jsd_beta <= 1.0:
        raise ValueError(f"jsd_beta must be in [0, 1] (got {jsd_beta}); 0 is forward KL, 1 is reverse KL.")
    if not 0.0 <= skew_alpha < 1.0:
        raise ValueError(f"skew_alpha must be in [0, 1) (got {skew_alpha}); DistiLLM uses 0.1.")
    if not 0 < temperature < math.inf:
        raise ValueError(f"temperature must be a positive finite number (got {temperature}).")
    if loss_type != "nll":
        check_selectivity(selectivity, allow_inf=False)


def _check_vocab(student_vocab: int, teacher_vocab: int) -> None:
    if student_vocab != teacher_vocab:
        raise ValueError(
            f"student vocabulary size {student_vocab} != teacher vocabulary size {teacher_vocab}: token-level losses "
            "need a shared tokenizer. Resize one model's embeddings (model.resize_token_embeddings) or use "
            "loss_type='nll' on teacher-sampled completions, which needs no teacher logits."
        )


def _log_probs(student_logits, teacher_logits, selectivity, temperature):
    """``(log q, log p)``: both at `temperature`, the teacher also sharpened by `selectivity` (None if absent)."""
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_q = torch.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    if teacher_logits is None:
        return log_q, None
    beta = selectivity
    if isinstance(beta, torch.Tensor) and beta.dim() > 0:
        beta = beta.to(dtype).unsqueeze(-1)
    return log_q, torch.log_softmax(teacher_logits.detach().to(dtype) * beta / temperature, dim=-1)


def _per_token_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    selectivity: float | torch.Tensor,
    loss_type: str,
    temperature: float,
    jsd_beta: float,
    skew_alpha: float,
) -> torch.Tensor:
    """Loss at every position, computed in float32 (or float64 if given): `(..., V)` logits -> `(...)`."""
    log_q, log_p = _log_probs(student_logits, None if loss_type == "nll" else teacher_logits, selectivity, temperature)
    return _loss_from_log_probs(log_q, log_p, labels, loss_type, jsd_beta, skew_alpha)


def _loss_from_log_probs(log_q, log_p, labels, loss_type, jsd_beta, skew_alpha) -> torch.Tensor:
    if loss_type == "nll":
        safe = labels.clamp_min(0)  # ignored positions (e.g. -100) are masked out by the caller
        return -log_q.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return token_divergence(log_q, log_p, loss_type, jsd_beta=jsd_beta, skew_alpha=skew_alpha)


def _reduce(total: torch.Tensor, count: torch.Tensor, num_items_in_batch) -> torch.Tensor:
    if num_items_in_batch is not None:
        return total / num_items_in_batch
    return total / count.clamp_min(1)


def _default_mask(shape, labels, device) -> torch.Tensor:
    mask = torch.ones(shape, dtype=torch.bool, device=device)
    if labels is not None:
        mask = mask & (labels != -100)
    return mask


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    *,
    loss_type: str = "forward_kl",
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    selectivity: float | torch.Tensor = 1.0,
    temperature: float = 1.0,
    jsd_beta: float = 0.5,
    skew_alpha: float = 0.1,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Masked token-level distillation loss from full logits (see the module docstring for the formulas).

    Args:
        student_logits (`torch.Tensor` of shape `(..., V)`): student logits at the scored positions.
        teacher_logits (`torch.Tensor` of shape `(..., V)`, *optional*): teacher logits; not needed for ``"nll"``.
        loss_type (`str`): one of `LOSS_TYPES`.
        labels (`torch.Tensor` of shape `(...)`, *optional*): target token ids for ``"nll"`` (-100 is ignored).
        mask (`torch.Tensor` of shape `(...)`, *optional*): positions that count (e.g. completion tokens).
        selectivity (`float` or `torch.Tensor` of shape `(...)`): teacher sharpening beta > 0, per batch or per token.
        temperature (`float`): softmax temperature of both student and teacher (TRL's `temperature`).
        jsd_beta (`float`): generalized-JSD mixing weight (TRL's `beta`).
        skew_alpha (`float`): skew of the skew KLs.
        num_items_in_batch (`int`, *optional*): divide the summed loss by this (gradient accumulation, multi-GPU).

    Returns:
        `torch.Tensor`: scalar loss.
    """
    _check_arguments(loss_type, labels, teacher_logits, jsd_beta, skew_alpha, temperature, selectivity)
    check_logits(student_logits, "student logits")
    if teacher_logits is not None and loss_type != "nll":
        _check_vocab(student_logits.shape[-1], teacher_logits.shape[-1])
        check_logits(teacher_logits, "teacher logits")
    if mask is None:
        mask = _default_mask(student_logits.shape[:-1], labels, student_logits.device)
    elif labels is not None:
        mask = mask.bool() & (labels != -100)
    per_token = _per_token_loss(
        student_logits, teacher_logits, labels, selectivity, loss_type, temperature, jsd_beta, skew_alpha
    )
    mask = mask.bool()
    total = torch.where(mask, per_token, torch.zeros_like(per_token)).sum()
    _check_total(total, loss_type)
    return _reduce(total, mask.sum(), num_items_in_batch)


def _check_total(total: torch.Tensor, loss_type: str) -> None:
    if not torch.isfinite(total):
        raise ValueError(
            f"the {loss_type} loss is {total.item()}: the student gives zero probability (a -inf logit, e.g. an "
            "lm_head bias of -inf) to an id where the teacher has mass or to a label, which makes it infinite, or "
            "the logits overflowed (selectivity * logits beyond float32). Mask the same ids in both models."
        )


def _logit_grad(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    selectivity: float | torch.Tensor,
    loss_type: str,
    temperature: float,
    jsd_beta: float,
    skew_alpha: float,
) -> torch.Tensor:
    """Exact gradient of the per-token loss with respect to the student logits `(n, V)` (the loss is not formed).

    With ``q = softmax(z / T)`` and ``g = dL/dq`` (up to a per-token constant, which cancels), the chain rule through
    the softmax gives ``dL/dz = q * (g - sum_v q_v g_v) / T``. Per loss:

    - nll: ``dL/dz = (q - onehot(label)) / T``; forward KL: ``dL/dz = (q - p) / T``;
    - reverse KL: ``g = log q_S - log p`` on the teacher's support ``S`` (module docstring), so that
      ``dL/dz = (q_S * (g - sum_S q_S g) - q_S + q) / T``;
    - skew reverse KL: ``g = log q - log m - a q / m``, ``m = (1 - a) p + a q``;
    - skew forward KL: ``g = -(1 - a) p / m``, ``m = a p + (1 - a) q``;
    - generalized JSD (weight l): ``g = (1 - l) (log q - log m)``, ``m = l p + (1 - l) q``;
    - TVD: ``g = sign(q - p) / 2``.

    Where the student is masked (``q_v = 0``) ``g_v`` may be ``-inf``; it meets the factor ``q_v = 0`` and is set to 0.
    """
    log_q, log_p = _log_probs(student_logits, None if loss_type == "nll" else teacher_logits, selectivity, temperature)
    q = log_q.exp()
    if loss_type == "nll":
        q[torch.arange(q.shape[0], device=q.device), labels] -= 1.0
        return q.div_(temperature)
    if loss_type == "forward_kl" or (loss_type == "generalized_jsd" and jsd_beta == 0):
        return (q - log_p.exp()).div_(temperature)
    if loss_type == "skew_forward_kl" and skew_alpha == 0:
        return (q - log_p.exp()).div_(temperature)
    if _is_reverse_kl(loss_type, jsd_beta, skew_alpha):
        log_q_s, _ = _restrict(log_q, log_p)
        q_s = log_q_s.exp()
        g = log_q_s.sub_(log_p).masked_fill_(q_s == 0, 0.0)
        g.sub_((q_s * g).sum(-1, keepdim=True)).sub_(1.0).mul_(q_s)
        return g.add_(q).div_(temperature)
    if loss_type == "generalized_jsd":
        g = (log_q - _log_mix(log_p, log_q, jsd_beta)).mul_(1 - jsd_beta)
    elif loss_type == "skew_forward_kl":
        g = (log_p - _log_mix(log_p, log_q, skew_alpha)).exp_().mul_(-(1 - skew_alpha))
    elif loss_type == "skew_reverse_kl":
        log_m = _log_mix(log_p, log_q, 1 - skew_alpha)
        g = log_q - log_m - skew_alpha * (log_q - log_m).exp()
    else:  # tvd
        g = torch.sign(q - log_p.exp()).mul_(0.5)
    g.masked_fill_(q == 0, 0.0)
    g.sub_((q * g).sum(-1, keepdim=True))
    return g.mul_(q).div_(temperature)


class _ChunkedLinearLoss(torch.autograd.Function):
    """Summed loss over token chunks of ``h @ W.T + b``, with closed-form logit gradients recomputed in backward.

    Forward keeps only the inputs; backward recomputes each chunk's logits and forms ``dL/dz`` in closed form, so
    nothing of size `(n, V)` outlives a chunk, no autograd graph is built over the logits, and no gradient buffer is
    held between forward and backward: the extra memory is a few `(chunk, V)` float32 buffers (plus, in backward,
    the `(V, H)` weight gradient the optimizer needs anyway). The price is one more logits matmul per chunk.
    """

    @staticmethod
    def forward(ctx, h_s, w_s, b_s, h_t, w_t, b_t, labels, beta, chunk_size, kwargs, stats, post):
        total = h_s.new_zeros((), dtype=torch.promote_types(h_s.dtype, torch.float32))
        loss_type, temperature = kwargs["loss_type"], kwargs["temperature"]
        chunks = _chunks(h_s, w_s, b_s, h_t, w_t, b_t, labels, beta, chunk_size, post)
        for _, z_s, z_t, chunk_labels, chunk_beta in chunks:
            log_q, log_p = _log_probs(z_s, z_t, chunk_beta, temperature)
            total += _loss_from_log_probs(
                log_q, log_p, chunk_labels, loss_type, kwargs["jsd_beta"], kwargs["skew_alpha"]
            ).sum()
            if stats is not None:  # logging only: the log-probs are at hand, so the entropies cost one pass each
                _add_entropy_stats(stats, log_q, log_p, z_t, chunk_beta, temperature)
        _check_total(total, loss_type)
        ctx.save_for_backward(h_s, w_s, b_s, h_t, w_t, b_t, labels, beta if isinstance(beta, torch.Tensor) else None)
        ctx.beta, ctx.chunk_size, ctx.kwargs, ctx.post = beta, chunk_size, kwargs, post
        return total

    @staticmethod
    def backward(ctx, grad_output):
        h_s, w_s, b_s, h_t, w_t, b_t, labels, beta_tensor = ctx.saved_tensors
        beta = beta_tensor if beta_tensor is not None else ctx.beta
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        dtype = torch.promote_types(h_s.dtype, torch.float32)
        grad_h = torch.empty_like(h_s) if need_h else None
        grad_w = torch.zeros(w_s.shape, dtype=dtype, device=w_s.device) if need_w else None
        grad_b = torch.zeros(b_s.shape, dtype=dtype, device=b_s.device) if need_b else None
        chunks = _chunks(h_s, w_s, b_s, h_t, w_t, b_t, labels, beta, ctx.chunk_size, ctx.post)
        for sl, z_s, z_t, chunk_labels, chunk_beta in chunks:
            dz = _logit_grad(z_s, z_t, chunk_labels, chunk_beta, **ctx.kwargs)
            dz.mul_(grad_output.to(dz.dtype))
            if ctx.post[0] != (1.0, None):  # chain rule through the student's scale / softcap
                dz.mul_(logit_postprocess_grad(z_s.to(dz.dtype), *ctx.post[0]))
            if need_h:
                grad_h[sl] = (dz @ w_s.to(dtype)).to(h_s.dtype)
            if need_w:
                grad_w.addmm_(dz.T, h_s[sl].to(dtype))
            if need_b:
                grad_b += dz.sum(0)
        grad_w = None if grad_w is None else grad_w.to(w_s.dtype)
        grad_b = None if grad_b is None else grad_b.to(b_s.dtype)
        return grad_h, grad_w, grad_b, None, None, None, None, None, None, None, None, None


def _add_entropy_stats(stats: dict, log_q, log_p, z_t, beta, temperature) -> None:
    """Accumulate token counts and summed entropies (student; teacher before and after sharpening; beta) as tensors."""
    n = log_q.shape[0]
    add = {"num_tokens": log_q.new_tensor(float(n)), "student_entropy": entropy_from_log_probs(log_q).sum()}
    if log_p is not None:
        add["teacher_entropy_sharpened"] = entropy_from_log_probs(log_p).sum()
        unit = not isinstance(beta, torch.Tensor) and beta == 1
        raw = log_p if unit else torch.log_softmax(z_t.to(log_p.dtype) / temperature, dim=-1)
        add["teacher_entropy"] = add["teacher_entropy_sharpened"] if unit else entropy_from_log_probs(raw).sum()
        add["selectivity"] = beta.sum() if isinstance(beta, torch.Tensor) else log_q.new_tensor(float(beta) * n)
    for key, value in add.items():
        stats[key] = stats.get(key, 0) + value.detach()


def logit_postprocess(logits: torch.Tensor, scale: float = 1.0, softcap: float | None = None) -> torch.Tensor:
    """The model's own post-processing of its lm_head output: ``softcap * tanh(scale * z / softcap)``, or
    ``scale * z`` without a softcap (Cohere/Granite ``logit_scale``-style scales, Gemma-2-style softcapping; the
    order is TRL's). Shapes are kept."""
    if scale != 1:
        logits = logits * scale
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def logit_postprocess_grad(processed: torch.Tensor, scale: float = 1.0, softcap: float | None = None):
    """``d processed / d z`` of `logit_postprocess`, from its output: ``scale * (1 - (processed / softcap)^2)``."""
    if softcap is None:
        return scale
    return (1 - (processed / softcap).square()).mul_(scale)


def head_logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, name: str) -> torch.Tensor:
    """Logits ``h @ W.T + b`` of a chunk of tokens, `(n, H)` -> `(n, V)`; recomputed in float32 when a 16-bit matmul
    overflowed (float16 stops at 65504), so large logits give the right loss instead of inf/NaN. ``-inf`` (a masked
    id, e.g. from the bias) is kept; NaN and +inf that survive are refused."""
    z = torch.nn.functional.linear(h, w, b)
    if z.dtype in (torch.float16, torch.bfloat16) and not bool(z.detach().amax() < math.inf):
        z = torch.nn.functional.linear(h.float(), w.float(), None if b is None else b.float())
    check_logits(z, f"{name} logits (hidden states @ lm_head weight)")
    return z


def _chunks(h_s, w_s, b_s, h_t, w_t, b_t, labels, beta, chunk_size, post=((1.0, None), (1.0, None))):
    """Yield ``(slice, student logits, teacher logits, labels, selectivity)`` for each chunk of tokens; the logits
    are post-processed as `post` = ``((student scale, softcap), (teacher scale, softcap))`` says."""
    per_token_beta = isinstance(beta, torch.Tensor) and beta.dim() > 0
    for start in range(0, h_s.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        z_s = logit_postprocess(head_logits(h_s[sl], w_s, b_s, "student"), *post[0])
        z_t = None if h_t is None else logit_postprocess(head_logits(h_t[sl], w_t, b_t, "teacher"), *post[1])
        yield sl, z_s, z_t, None if labels is None else labels[sl], beta[sl] if per_token_beta else beta


def chunked_distillation_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    *,
    loss_type: str = "forward_kl",
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    selectivity: float | torch.Tensor = 1.0,
    temperature: float = 1.0,
    jsd_beta: float = 0.5,
    skew_alpha: float = 0.1,
    num_items_in_batch: int | torch.Tensor | None = None,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    chunk_size: int | None = None,
    stats: dict | None = None,
    student_logit_scale: float = 1.0,
    teacher_logit_scale: float = 1.0,
    student_final_logit_softcapping: float | None = None,
    teacher_final_logit_softcapping: float | None = None,
) -> torch.Tensor:
    """`distillation_loss` on the logits ``h @ W.T + b``, without materialising `(..., V)` logits.

    Only the masked positions are scored. They are processed in chunks of `chunk_size` tokens; backward recomputes
    each chunk's logits and forms their gradient in closed form (see `_logit_grad`), so the extra memory is
    ``O(chunk_size * V)`` on every device. The teacher gets no gradient.

    Args:
        student_hidden (`torch.Tensor` of shape `(..., H)`): the student's last hidden states at the scored positions.
        student_weight (`torch.Tensor` of shape `(V, H)`): the student's lm_head weight.
        teacher_hidden (`torch.Tensor` of shape `(..., H_t)`, *optional*): the teacher's last hidden states.
        teacher_weight (`torch.Tensor` of shape `(V, H_t)`, *optional*): the teacher's lm_head weight.
        student_bias, teacher_bias (`torch.Tensor` of shape `(V,)`, *optional*): lm_head biases.
        stats (`dict`, *optional*): if given, receives summed token entropies for logging (keys ``num_tokens``,
            ``student_entropy`` and, with a teacher, ``teacher_entropy``, ``teacher_entropy_sharpened``,
            ``selectivity``), taken from the log-probabilities the loss computes anyway.
        chunk_size (`int`, *optional*): tokens per chunk; by default about ``2**22`` logits (16 MB in float32) a chunk.
        student_logit_scale, teacher_logit_scale (`float`, *optional*, defaults to `1.0`),
        student_final_logit_softcapping, teacher_final_logit_softcapping (`float`, *optional*): each model's own
            logit post-processing (`logit_postprocess`), applied to its ``h @ W.T + b`` before temperature and
            selectivity, as TRL's `DistillationTrainer` does; the student's gradient goes through it in closed form.
        loss_type, labels, mask, selectivity, temperature, jsd_beta, skew_alpha, num_items_in_batch: as in
            `distillation_loss`.

    Returns:
        `torch.Tensor`: scalar loss, equal to `distillation_loss` on the full logits.
    """
    _check_arguments(loss_type, labels, teacher_hidden, jsd_beta, skew_alpha, temperature, selectivity)
    if chunk_size is None:
        chunk_size = default_chunk_size(student_weight.shape[0])
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (got {chunk_size}).")
    if loss_type == "nll":
        teacher_hidden = teacher_weight = teacher_bias = None
    else:
        if teacher_weight is None:
            raise ValueError(f"loss_type={loss_type!r} needs teacher_weight (the teacher's lm_head weight).")
        _check_vocab(student_weight.shape[0], teacher_weight.shape[0])
    for name, hidden in (("student", student_hidden), ("teacher", teacher_hidden)):
        if hidden is not None and not torch.isfinite(hidden.detach()).all():
            raise ValueError(f"{name} hidden states contain NaN or infinite values; check the model's forward.")
    positions = student_hidden.shape[:-1]
    if mask is None:
        mask = _default_mask(positions, labels, student_hidden.device)
    elif labels is not None:
        mask = mask.bool() & (labels != -100)
    keep = mask.bool().reshape(-1)
    count = keep.sum()

    # Gather only the scored positions: no compute on padding or prompt tokens.
    hidden_s = student_hidden.reshape(-1, student_hidden.shape[-1])[keep]
    hidden_t = None if teacher_hidden is None else teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1])[keep]
    flat_labels = None if labels is None else labels.reshape(-1)[keep]
    beta = selectivity
    if isinstance(beta, torch.Tensor) and beta.dim() > 0:
        beta = beta.expand(positions).reshape(-1)[keep]
    kwargs = dict(loss_type=loss_type, temperature=temperature, jsd_beta=jsd_beta, skew_alpha=skew_alpha)
    post = (
        (student_logit_scale, student_final_logit_softcapping),
        (teacher_logit_scale, teacher_final_logit_softcapping),
    )
    teacher_weight = None if teacher_weight is None else teacher_weight.detach()
    teacher_bias = None if teacher_bias is None else teacher_bias.detach()

    total = _ChunkedLinearLoss.apply(
        hidden_s, student_weight, student_bias, hidden_t, teacher_weight, teacher_bias, flat_labels, beta, chunk_size,
        kwargs, stats, post,
    )  # fmt: skip
    return _reduce(total, count, num_items_in_batch)
