"""Entropy control for a teacher: raise its distribution to a power (the *selectivity*) and renormalise.

For logits ``z`` the sharpened distribution is ``softmax(selectivity * z)`` (temperature ``1 / selectivity``); for
mixture weights ``a`` it is ``a**selectivity / sum(a**selectivity)``. ``selectivity = 1`` is the teacher itself and
``selectivity = inf`` keeps only the argmax (ties split evenly). All functions are pure torch.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "check_selectivity",
    "entropy_from_log_probs",
    "sharpen_logits",
    "sharpen_weights",
    "solve_selectivity",
    "token_entropy",
]


def check_selectivity(selectivity: float | torch.Tensor) -> None:
    """Raise a `ValueError` unless every selectivity is a positive number (``inf`` allowed)."""
    values = torch.as_tensor(selectivity, dtype=torch.float64)
    if torch.isnan(values).any() or (values <= 0).any():
        raise ValueError(
            f"selectivity must be > 0 (got {selectivity}); use 1.0 for the unchanged teacher, values > 1 to sharpen "
            "it (temperature 1/selectivity) and float('inf') for its argmax."
        )


def _check_finite(logits: torch.Tensor, name: str = "logits") -> None:
    if not torch.isfinite(logits).all():
        raise ValueError(f"{name} contain NaN or infinite values; check the model's outputs (e.g. fp16 overflow).")


def sharpen_logits(logits: torch.Tensor, selectivity: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Log-probabilities of the teacher raised to the power `selectivity` and renormalised.

    ``log_softmax(selectivity * logits)``; ``selectivity = inf`` gives the uniform distribution over the maxima.

    Args:
        logits (`torch.Tensor` of shape `(..., V)`): unnormalised teacher scores (logits or log-probabilities).
        selectivity (`float` or `torch.Tensor` broadcastable to `(..., 1)`): beta > 0.

    Returns:
        `torch.Tensor` of shape `(..., V)`: log-probabilities (``-inf`` outside the argmax set when beta is ``inf``).
    """
    check_selectivity(selectivity)
    _check_finite(logits)
    beta = torch.as_tensor(selectivity, dtype=logits.dtype, device=logits.device)
    if torch.isinf(beta).any():
        is_max = logits == logits.amax(dim=-1, keepdim=True)
        argmax = torch.where(is_max, 0.0, float("-inf")).to(logits.dtype)
        argmax = argmax - torch.log(is_max.sum(dim=-1, keepdim=True).to(logits.dtype))
        if beta.dim() == 0:
            return argmax
        finite = torch.where(torch.isinf(beta), torch.ones_like(beta), beta)
        return torch.where(torch.isinf(beta), argmax, torch.log_softmax(finite * logits, dim=-1))
    return torch.log_softmax(beta * logits, dim=-1)


def sharpen_weights(weights: torch.Tensor, selectivity: float = 1.0, log_space: bool = False) -> torch.Tensor:
    """Mixture weights raised to the power `selectivity` and renormalised: ``a_k**beta / sum_j a_j**beta``.

    Computed in log space, so tiny weights and large beta do not underflow.

    Args:
        weights (`torch.Tensor` of shape `(..., K)`): mixture weights (non-negative, or log-weights if `log_space`).
        selectivity (`float`): beta > 0; ``inf`` keeps the heaviest component(s), ties split evenly.
        log_space (`bool`): whether `weights` are log-weights; the result is then log-weights too.

    Returns:
        `torch.Tensor` of shape `(..., K)`: the sharpened weights (or log-weights), summing to one.
    """
    log_w = weights if log_space else torch.log(weights)
    if torch.isnan(log_w).any() or (not log_space and (weights < 0).any()):
        raise ValueError("mixture weights must be non-negative numbers without NaN.")
    if torch.isinf(log_w).all(dim=-1).any():
        raise ValueError("every mixture weight is zero; at least one component needs positive weight.")
    check_selectivity(selectivity)
    if math.isinf(float(selectivity)):
        is_max = log_w == log_w.amax(dim=-1, keepdim=True)
        out = torch.where(is_max, 0.0, float("-inf")).to(log_w.dtype)
        out = out - torch.log(is_max.sum(dim=-1, keepdim=True).to(log_w.dtype))
    else:
        # -inf * beta stays -inf (beta > 0); keep zero weights at zero.
        out = torch.log_softmax(log_w * selectivity, dim=-1)
    return out if log_space else out.exp()


def entropy_from_log_probs(log_p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of normalised log-probabilities: ``H = -sum_v p_v log p_v`` with ``0 log 0 = 0``.

    Args:
        log_p (`torch.Tensor` of shape `(..., V)`): log-probabilities (``-inf`` allowed for zero mass).

    Returns:
        `torch.Tensor` of shape `(...)`.
    """
    return torch.special.entr(log_p.exp()).sum(-1)


def token_entropy(logits: torch.Tensor, mask: torch.Tensor | None = None, reduce: bool = False) -> torch.Tensor:
    """Entropy in nats of ``softmax(logits)`` at each position: ``H = -sum_v p_v log p_v``.

    Args:
        logits (`torch.Tensor` of shape `(..., V)`): scores, e.g. `(B, T, V)`.
        mask (`torch.Tensor` of shape `(...)`, *optional*): positions to keep (with `reduce`).
        reduce (`bool`): return the mean over the masked positions (a scalar) instead of every position.

    Returns:
        `torch.Tensor` of shape `(...)`, or a scalar when `reduce`.
    """
    ent = entropy_from_log_probs(torch.log_softmax(logits.float(), dim=-1))
    if not reduce:
        return ent
    if mask is None:
        return ent.mean()
    mask = mask.to(ent.dtype)
    return (ent * mask).sum() / mask.sum().clamp_min(1)


def _entropy_at(logits: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    # logits (N, V), log_beta (N,) or () -> entropy (N,)
    beta = log_beta.exp()
    if beta.dim() == 1:
        beta = beta[:, None]
    return token_entropy(beta * logits)


def solve_selectivity(
    logits: torch.Tensor,
    target_entropy: float,
    mask: torch.Tensor | None = None,
    per_token: bool = False,
    tol: float = 1e-4,
    max_iter: int = 100,
    min_selectivity: float = 1e-3,
    max_selectivity: float = 1e3,
) -> torch.Tensor:
    """Selectivity beta such that ``softmax(beta * logits)`` has the target entropy (nats per token).

    The entropy of ``softmax(beta * z)`` is non-increasing in beta, so a bisection on ``log(beta)`` over
    ``[min_selectivity, max_selectivity]`` converges. With `per_token=False` a single beta makes the *mean* entropy
    over the masked positions equal the target; with `per_token=True` each position gets its own beta.

    Args:
        logits (`torch.Tensor` of shape `(..., V)`): teacher logits, e.g. `(B, T, V)`.
        target_entropy (`float`): H* in nats, ``0 < H* < log V``.
        mask (`torch.Tensor` of shape `(...)`, *optional*): positions that count (e.g. completion tokens).
        per_token (`bool`): one beta per position instead of one for the batch.
        tol (`float`): accepted absolute error on the entropy, in nats.
        max_iter (`int`): bisection steps.
        min_selectivity, max_selectivity (`float`): search range of beta.

    Returns:
        `torch.Tensor`: a scalar beta, or betas of shape `(...)` with `per_token` (1.0 at masked-out positions).

    Raises:
        `ValueError`: when the target lies outside the entropy range reachable with beta in the search range; the
        message names that range.
    """
    _check_finite(logits)
    vocab = logits.shape[-1]
    if not 0.0 < target_entropy < math.log(vocab):
        raise ValueError(
            f"target_entropy={target_entropy} nats is unreachable: with a vocabulary of {vocab} the entropy lies in "
            f"(0, log V = {math.log(vocab):.4f}); choose a value inside that range."
        )
    with torch.no_grad():
        flat = logits.detach().reshape(-1, vocab).double()
        keep = torch.ones(flat.shape[0], dtype=torch.bool, device=flat.device)
        if mask is not None:
            keep = mask.reshape(-1).bool()
        if not keep.any():
            raise ValueError("solve_selectivity got an empty mask: there is no position to measure the entropy on.")
        rows = flat[keep]
        lo = torch.full((rows.shape[0] if per_token else 1,), math.log(min_selectivity), dtype=torch.float64)
        hi = torch.full_like(lo, math.log(max_selectivity))
        lo, hi = lo.to(flat.device), hi.to(flat.device)

        def entropy(log_beta):
            ent = _entropy_at(rows, log_beta if per_token else log_beta[0])
            return ent if per_token else ent.mean().reshape(1)

        h_max, h_min = entropy(lo), entropy(hi)
        bad = (target_entropy > h_max + tol) | (target_entropy < h_min - tol)
        if bad.any():
            raise ValueError(
                f"target_entropy={target_entropy} nats is unreachable: with selectivity in "
                f"[{min_selectivity:g}, {max_selectivity:g}] the teacher's {'token' if per_token else 'mean'} entropy "
                f"ranges over [{h_min.min().item():.4f}, {h_max.max().item():.4f}] nats; choose a target inside it."
            )
        for _ in range(max_iter):
            mid = (lo + hi) / 2
            h_mid = entropy(mid)
            too_high = h_mid > target_entropy  # entropy too high -> need larger beta
            lo = torch.where(too_high, mid, lo)
            hi = torch.where(too_high, hi, mid)
            if ((h_mid - target_entropy).abs() < tol * 0.1).all() or ((hi - lo) < 1e-12).all():
                break
        beta = ((lo + hi) / 2).exp().to(logits.dtype)
    if not per_token:
        return beta[0]
    out = torch.ones(flat.shape[0], dtype=logits.dtype, device=logits.device)
    out[keep] = beta
    return out.reshape(logits.shape[:-1])
