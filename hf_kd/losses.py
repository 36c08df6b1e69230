"""Token-level distillation losses between a sharpened teacher and a student, dense and memory-bounded (chunked).

Notation (per position, over the vocabulary ``V``): the teacher is ``p = softmax(selectivity * z_t)`` and the
student is ``q = softmax(z_s / temperature)``. Sharpening touches the teacher only; the temperature, the student
only.

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
"""

from __future__ import annotations

import math

import torch

from .sharpening import _check_finite, check_selectivity

__all__ = ["LOSS_TYPES", "chunked_distillation_loss", "distillation_loss", "token_divergence"]

LOGITS_PER_CHUNK = 2**22

LOSS_TYPES = ("nll", "forward_kl", "reverse_kl", "generalized_jsd", "skew_forward_kl", "skew_reverse_kl", "tvd")


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``sum_v p_v (log p_v - log q_v)`` over the last dim, with ``0 log 0 = 0``."""
    p = log_p.exp()
    return (p * torch.where(p > 0, log_p - log_q, torch.zeros_like(log_p))).sum(-1)


def _log_mix(log_p: torch.Tensor, log_q: torch.Tensor, weight_p: float) -> torch.Tensor:
    """``log(weight_p * p + (1 - weight_p) * q)``."""
    return torch.logaddexp(log_p + math.log(weight_p), log_q + math.log1p(-weight_p))


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
        return _kl(log_q, log_p)
    if loss_type == "generalized_jsd":
        if jsd_beta == 0:
            return _kl(log_p, log_q)
        if jsd_beta == 1:
            return _kl(log_q, log_p)
        log_m = _log_mix(log_p, log_q, jsd_beta)
        return jsd_beta * _kl(log_p, log_m) + (1 - jsd_beta) * _kl(log_q, log_m)
    if loss_type == "skew_forward_kl":
        return _kl(log_p, log_q if skew_alpha == 0 else _log_mix(log_p, log_q, skew_alpha))
    if loss_type == "skew_reverse_kl":
        return _kl(log_q, log_p if skew_alpha == 0 else _log_mix(log_p, log_q, 1 - skew_alpha))
    if loss_type == "tvd":
        return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)
    raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {LOSS_TYPES}.")


def _check_arguments(loss_type, labels, teacher, jsd_beta, skew_alpha, temperature):
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
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (got {temperature}).")


def _check_vocab(student_vocab: int, teacher_vocab: int) -> None:
    if student_vocab != teacher_vocab:
        raise ValueError(
            f"student vocabulary size {student_vocab} != teacher vocabulary size {teacher_vocab}: token-level losses "
            "need a shared tokenizer. Resize one model's embeddings (model.resize_token_embeddings) or use "
            "loss_type='nll' on teacher-sampled completions, which needs no teacher logits."
        )


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
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_q = torch.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    if loss_type == "nll":
        safe = labels.clamp_min(0)  # ignored positions (e.g. -100) are masked out by the caller
        return -log_q.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    beta = selectivity
    if isinstance(beta, torch.Tensor) and beta.dim() > 0:
        beta = beta.to(dtype).unsqueeze(-1)
    log_p = torch.log_softmax(teacher_logits.detach().to(dtype) * beta, dim=-1)
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
        temperature (`float`): student temperature.
        jsd_beta (`float`): generalized-JSD mixing weight (TRL's `beta`).
        skew_alpha (`float`): skew of the skew KLs.
        num_items_in_batch (`int`, *optional*): divide the summed loss by this (gradient accumulation, multi-GPU).

    Returns:
        `torch.Tensor`: scalar loss.
    """
    _check_arguments(loss_type, labels, teacher_logits, jsd_beta, skew_alpha, temperature)
    _check_finite(student_logits.detach(), "student logits")
    if teacher_logits is not None:
        _check_vocab(student_logits.shape[-1], teacher_logits.shape[-1])
        _check_finite(teacher_logits.detach(), "teacher logits")
    if loss_type != "nll":
        check_selectivity(selectivity)
    if mask is None:
        mask = _default_mask(student_logits.shape[:-1], labels, student_logits.device)
    elif labels is not None:
        mask = mask.bool() & (labels != -100)
    per_token = _per_token_loss(
        student_logits, teacher_logits, labels, selectivity, loss_type, temperature, jsd_beta, skew_alpha
    )
    mask = mask.bool()
    total = torch.where(mask, per_token, torch.zeros_like(per_token)).sum()
    return _reduce(total, mask.sum(), num_items_in_batch)


def _loss_and_logit_grad(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    selectivity: float | torch.Tensor,
    loss_type: str,
    temperature: float,
    jsd_beta: float,
    skew_alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss `(n,)` and its exact gradient with respect to the student logits `(n, V)`.

    With ``q = softmax(z / T)`` and ``g = dL/dq`` (up to a per-token constant, which cancels), the chain rule through
    the softmax gives ``dL/dz = q * (g - sum_v q_v g_v) / T``. Per loss:

    - nll: ``dL/dz = (q - onehot(label)) / T``; forward KL: ``dL/dz = (q - p) / T``;
    - reverse KL: ``g = log q - log p``; skew reverse KL: ``g = log q - log m - a q / m``, ``m = (1 - a) p + a q``;
    - skew forward KL: ``g = -(1 - a) p / m``, ``m = a p + (1 - a) q``;
    - generalized JSD (weight l): ``g = (1 - l) (log q - log m)``, ``m = l p + (1 - l) q``;
    - TVD: ``g = sign(q - p) / 2``.
    """
    per_token = _per_token_loss(
        student_logits, teacher_logits, labels, selectivity, loss_type, temperature, jsd_beta, skew_alpha
    )
    dtype = per_token.dtype
    log_q = torch.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    q = log_q.exp()
    if loss_type == "nll":
        q[torch.arange(q.shape[0], device=q.device), labels] -= 1.0
        return per_token, q.div_(temperature)
    beta = selectivity
    if isinstance(beta, torch.Tensor) and beta.dim() > 0:
        beta = beta.to(dtype).unsqueeze(-1)
    log_p = torch.log_softmax(teacher_logits.to(dtype) * beta, dim=-1)
    if loss_type == "forward_kl" or (loss_type == "generalized_jsd" and jsd_beta == 0):
        return per_token, (q - log_p.exp()).div_(temperature)
    if loss_type == "skew_forward_kl" and skew_alpha == 0:
        return per_token, (q - log_p.exp()).div_(temperature)
    if loss_type == "reverse_kl" or (loss_type == "generalized_jsd" and jsd_beta == 1):
        g = log_q - log_p
    elif loss_type == "generalized_jsd":
        g = (log_q - _log_mix(log_p, log_q, jsd_beta)).mul_(1 - jsd_beta)
    elif loss_type == "skew_forward_kl":
        g = (log_p - _log_mix(log_p, log_q, skew_alpha)).exp_().mul_(-(1 - skew_alpha))
    elif loss_type == "skew_reverse_kl":
        log_m = log_p if skew_alpha == 0 else _log_mix(log_p, log_q, 1 - skew_alpha)
        g = log_q - log_m - skew_alpha * (log_q - log_m).exp()
    else:  # tvd
        g = torch.sign(q - log_p.exp()).mul_(0.5)
    g.sub_((q * g).sum(-1, keepdim=True))
    return per_token, g.mul_(q).div_(temperature)


class _ChunkedLinearLoss(torch.autograd.Function):
    """Summed loss over token chunks of ``h @ W.T + b``; gradients are computed in forward, chunk by chunk.

    Nothing of size `(n, V)` outlives a chunk and no autograd graph is built over the logits, so the extra memory is
    a few `(chunk, V)` float32 buffers plus the `(V, H)` weight gradient (the approach of fused linear
    cross-entropy kernels, here for every divergence of this module).
    """

    @staticmethod
    def forward(ctx, h_s, w_s, b_s, h_t, w_t, b_t, labels, beta, chunk_size, kwargs):
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(h_s) if need_h else None
        grad_w = torch.zeros_like(w_s, dtype=torch.promote_types(w_s.dtype, torch.float32)) if need_w else None
        grad_b = torch.zeros_like(b_s, dtype=grad_w.dtype if need_w else torch.float32) if need_b else None
        total = h_s.new_zeros((), dtype=torch.promote_types(h_s.dtype, torch.float32))
        per_token_beta = isinstance(beta, torch.Tensor) and beta.dim() > 0
        for start in range(0, h_s.shape[0], chunk_size):
            sl = slice(start, start + chunk_size)
            z_s = torch.nn.functional.linear(h_s[sl], w_s, b_s)
            z_t = None if h_t is None else torch.nn.functional.linear(h_t[sl], w_t, b_t)
            per_token, dz = _loss_and_logit_grad(
                z_s,
                z_t,
                None if labels is None else labels[sl],
                beta[sl] if per_token_beta else beta,
                **kwargs,
            )
            total += per_token.sum()
            del z_s, z_t
            if need_h:
                grad_h[sl] = (dz @ w_s.to(dz.dtype)).to(h_s.dtype)
            if need_w:
                grad_w.addmm_(dz.T, h_s[sl].to(dz.dtype))
            if need_b:
                grad_b += dz.sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.weight_dtype = w_s.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        grads = [None if g is None else (g * grad_output.to(g.dtype)) for g in (grad_h, grad_w, grad_b)]
        grads[1:] = [None if g is None else g.to(ctx.weight_dtype) for g in grads[1:]]
        return (*grads, None, None, None, None, None, None, None)


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
) -> torch.Tensor:
    """`distillation_loss` on the logits ``h @ W.T + b``, without materialising `(..., V)` logits.

    Only the masked positions are scored. They are processed in chunks of `chunk_size` tokens, and each chunk's
    gradient is computed in closed form during the forward pass (see `_loss_and_logit_grad`), so the extra memory is
    ``O(chunk_size * V)`` plus the gradient of the student's lm_head weight, on every device. The teacher gets no
    gradient. Call `backward` at most once on the result (its gradients are stored, not recomputed).

    Args:
        student_hidden (`torch.Tensor` of shape `(..., H)`): the student's last hidden states at the scored positions.
        student_weight (`torch.Tensor` of shape `(V, H)`): the student's lm_head weight.
        teacher_hidden (`torch.Tensor` of shape `(..., H_t)`, *optional*): the teacher's last hidden states.
        teacher_weight (`torch.Tensor` of shape `(V, H_t)`, *optional*): the teacher's lm_head weight.
        student_bias, teacher_bias (`torch.Tensor` of shape `(V,)`, *optional*): lm_head biases.
        chunk_size (`int`, *optional*): tokens per chunk; by default about ``2**22`` logits (16 MB in float32) a chunk.
        loss_type, labels, mask, selectivity, temperature, jsd_beta, skew_alpha, num_items_in_batch: as in
            `distillation_loss`.

    Returns:
        `torch.Tensor`: scalar loss, equal to `distillation_loss` on the full logits.
    """
    _check_arguments(loss_type, labels, teacher_hidden, jsd_beta, skew_alpha, temperature)
    if chunk_size is None:
        chunk_size = max(1, LOGITS_PER_CHUNK // student_weight.shape[0])
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (got {chunk_size}).")
    if loss_type == "nll":
        teacher_hidden = teacher_weight = teacher_bias = None
    else:
        check_selectivity(selectivity)
        if teacher_weight is None:
            raise ValueError(f"loss_type={loss_type!r} needs teacher_weight (the teacher's lm_head weight).")
        _check_vocab(student_weight.shape[0], teacher_weight.shape[0])
    _check_finite(student_hidden.detach(), "student hidden states")
    if teacher_hidden is not None:
        _check_finite(teacher_hidden.detach(), "teacher hidden states")
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
    teacher_weight = None if teacher_weight is None else teacher_weight.detach()
    teacher_bias = None if teacher_bias is None else teacher_bias.detach()

    total = _ChunkedLinearLoss.apply(
        hidden_s, student_weight, student_bias, hidden_t, teacher_weight, teacher_bias, flat_labels, beta, chunk_size,
        kwargs,
    )  # fmt: skip
    return _reduce(total, count, num_items_in_batch)
