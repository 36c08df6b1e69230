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
from functools import partial

import torch
from torch.utils.checkpoint import checkpoint

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


def _chunk_loss(student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, teacher_bias,
                labels, selectivity, mask, **kwargs):  # fmt: skip
    """Summed masked loss of one chunk of `(n, H)` hidden states (recomputed in backward by `checkpoint`)."""
    student_logits = torch.nn.functional.linear(student_hidden, student_weight, student_bias)
    teacher_logits = None
    if teacher_hidden is not None:
        teacher_logits = torch.nn.functional.linear(teacher_hidden, teacher_weight, teacher_bias)
    per_token = _per_token_loss(student_logits, teacher_logits, labels, selectivity, **kwargs)
    return torch.where(mask, per_token, torch.zeros_like(per_token)).sum()


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

    Only the masked positions are scored. They are processed in chunks of `chunk_size` tokens; each chunk's logits are
    recomputed in backward (activation checkpointing), so the extra memory is ``O(chunk_size * V)`` plus the gradient
    of the student's lm_head weight, on every device. The teacher gets no gradient.

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

    total = student_hidden.new_zeros(())
    for start in range(0, hidden_s.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        chunk_mask = torch.ones(hidden_s[sl].shape[0], dtype=torch.bool, device=hidden_s.device)
        args = (
            hidden_s[sl],
            student_weight,
            student_bias,
            None if hidden_t is None else hidden_t[sl],
            teacher_weight,
            teacher_bias,
            None if flat_labels is None else flat_labels[sl],
            beta[sl] if isinstance(beta, torch.Tensor) and beta.dim() > 0 else beta,
            chunk_mask,
        )
        fn = partial(_chunk_loss, **kwargs)
        if torch.is_grad_enabled() and (hidden_s.requires_grad or student_weight.requires_grad):
            total = total + checkpoint(fn, *args, use_reentrant=False)
        else:
            total = total + fn(*args)
    return _reduce(total, count, num_items_in_batch)
