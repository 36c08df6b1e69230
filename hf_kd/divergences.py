"""Divergences between two next-token distributions, their settings (`LossSpec`) and closed-form logit gradients.

The formulas, and what each loss does on masked vocabularies (``-inf`` logits), are in `hf_kd.losses`'s docstring.
These are pure functions of log-probabilities (or logits) of shape `(..., V)`; the dense, chunked and top-k losses
(`hf_kd.losses`, `hf_kd.topk`) build on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "LOSS_TYPES",
    "LossSpec",
    "log_probs",
    "logit_grad",
    "logit_grad_from_log_probs",
    "per_token_loss",
    "token_divergence",
]

LOSS_TYPES = ("nll", "forward_kl", "reverse_kl", "generalized_jsd", "skew_forward_kl", "skew_reverse_kl", "tvd")


@dataclass(frozen=True)
class LossSpec:
    """The settings of a token-level loss that the dense, chunked and top-k losses share, validated once.

    Args:
        loss_type (`str`): one of `LOSS_TYPES`.
        temperature (`float`): softmax temperature of both student and teacher (TRL's `temperature`).
        jsd_beta (`float`): generalized-JSD mixing weight l in [0, 1] (TRL's `beta`): 0 is forward KL, 1 reverse KL.
        skew_alpha (`float`): skew a of the skew KLs, in [0, 1).
    """

    loss_type: str = "forward_kl"
    temperature: float = 1.0
    jsd_beta: float = 0.5
    skew_alpha: float = 0.1

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {self.loss_type!r}; choose one of {LOSS_TYPES}.")
        if not 0.0 <= self.jsd_beta <= 1.0:
            raise ValueError(f"jsd_beta must be in [0, 1] (got {self.jsd_beta}); 0 is forward KL, 1 is reverse KL.")
        if not 0.0 <= self.skew_alpha < 1.0:
            raise ValueError(f"skew_alpha must be in [0, 1) (got {self.skew_alpha}); DistiLLM uses 0.1.")
        if not 0 < self.temperature < math.inf:
            raise ValueError(f"temperature must be a positive finite number (got {self.temperature}).")

    @property
    def is_reverse_kl(self) -> bool:
        """Whether the loss is the plain reverse KL (also generalized JSD at l = 1 and skew reverse KL at a = 0)."""
        return (
            self.loss_type == "reverse_kl"
            or (self.loss_type == "generalized_jsd" and self.jsd_beta == 1)
            or (self.loss_type == "skew_reverse_kl" and self.skew_alpha == 0)
        )


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


def log_probs(student_logits, teacher_logits, selectivity, temperature):
    """``(log q, log p)``: both at `temperature`, the teacher also sharpened by `selectivity` (None if absent).

    Shapes `(..., V)`; a per-token `selectivity` has the shape `(...)`. Computed in float32 (or float64 if given).
    """
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_q = torch.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    if teacher_logits is None:
        return log_q, None
    if isinstance(selectivity, torch.Tensor) and selectivity.dim() > 0:
        selectivity = selectivity.to(dtype).unsqueeze(-1)
    return log_q, torch.log_softmax(teacher_logits.detach().to(dtype) * selectivity / temperature, dim=-1)


def per_token_loss(log_q: torch.Tensor, log_p: torch.Tensor | None, labels, spec: LossSpec) -> torch.Tensor:
    """The loss at every position from ``(log q, log p)`` of shape `(..., V)` (labels `(...)` for nll) -> `(...)`."""
    if spec.loss_type == "nll":
        safe = labels.clamp_min(0)  # ignored positions (e.g. -100) are masked out by the caller
        return -log_q.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return token_divergence(log_q, log_p, spec.loss_type, jsd_beta=spec.jsd_beta, skew_alpha=spec.skew_alpha)


def logit_grad(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    selectivity: float | torch.Tensor,
    spec: LossSpec,
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
    teacher_logits = None if spec.loss_type == "nll" else teacher_logits
    log_q, log_p = log_probs(student_logits, teacher_logits, selectivity, spec.temperature)
    return logit_grad_from_log_probs(log_q, log_p, labels, spec)


def logit_grad_from_log_probs(
    log_q: torch.Tensor, log_p: torch.Tensor | None, labels: torch.Tensor | None, spec: LossSpec
) -> torch.Tensor:
    """`logit_grad` from the log-probabilities `log_probs` gives (`(n, V)` each), for a caller that has them already.
    May overwrite `log_q` in place."""
    loss_type, temperature, jsd_beta, skew_alpha = spec.loss_type, spec.temperature, spec.jsd_beta, spec.skew_alpha
    q = log_q.exp()
    if loss_type == "nll":
        q[torch.arange(q.shape[0], device=q.device), labels] -= 1.0
        return q.div_(temperature)
    if loss_type == "forward_kl" or (loss_type == "generalized_jsd" and jsd_beta == 0):
        return (q - log_p.exp()).div_(temperature)
    if loss_type == "skew_forward_kl" and skew_alpha == 0:
        return (q - log_p.exp()).div_(temperature)
    if spec.is_reverse_kl:
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
