"""Entropy control for a teacher: raise its distribution to a power (the *selectivity*) and renormalise.

For logits ``z`` the sharpened distribution is ``softmax(selectivity * z)`` (temperature ``1 / selectivity``); for
mixture weights ``a`` it is ``a**selectivity / sum(a**selectivity)``. ``selectivity = 1`` is the teacher itself and
``selectivity = inf`` keeps only the argmax (ties split evenly). All functions are pure torch.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "check_logits",
    "check_selectivity",
    "entropy_and_slope",
    "entropy_from_log_probs",
    "sharpen_logits",
    "sharpen_weights",
    "solve_mean_selectivity",
    "solve_selectivity",
    "token_entropy",
]


FLOAT32_MAX = torch.finfo(torch.float32).max


def check_selectivity(selectivity: float | torch.Tensor, allow_inf: bool = True) -> None:
    """Raise a `ValueError` unless every selectivity is a positive number that float32 can hold.

    The one check used wherever a selectivity is accepted (config, losses, generation, metrics sampling). A finite
    beta above float32's largest value (3.4e38) would overflow ``beta * logits`` to inf and give NaN probabilities.

    Args:
        selectivity (`float` or `torch.Tensor`): beta, or betas.
        allow_inf (`bool`): whether ``inf`` (the argmax teacher) is meaningful here: yes for sampling and the nll
            loss, no for token-level divergences (whose gradient would be zero or undefined).
    """
    values = torch.as_tensor(selectivity, dtype=torch.float64)
    if torch.isnan(values).any() or (values <= 0).any():
        raise ValueError(
            f"selectivity must be > 0 (got {selectivity}); use 1.0 for the unchanged teacher, values > 1 to sharpen "
            "it (temperature 1/selectivity) and float('inf') for its argmax."
        )
    infinite = torch.isinf(values)
    if (~infinite & (values > FLOAT32_MAX)).any():
        raise ValueError(
            f"selectivity={values.max().item():g} is beyond float32's range (max {FLOAT32_MAX:.3g}): beta * logits "
            "would overflow to inf and give NaN probabilities. Use a smaller value (beta = 100 is already close to "
            "greedy)" + (", or float('inf') for the argmax teacher." if allow_inf else ".")
        )
    if not allow_inf and infinite.any():
        raise ValueError(
            "selectivity=inf (the argmax teacher) is refused by token-level divergences: the sharpened teacher is "
            "one-hot, so its log-probabilities are -inf almost everywhere. Use a large finite value (e.g. 100), or "
            "sample the argmax teacher's completions and train with loss_type='nll'."
        )


def check_logits(logits: torch.Tensor, name: str = "logits") -> None:
    """Raise a `ValueError` if `logits` hold NaN or +inf, or a row that is -inf everywhere.

    ``-inf`` is a masked id (zero probability, e.g. a padded or constrained vocabulary) and is accepted; +inf and
    NaN are not numbers a softmax can use (typically a float16 overflow: float16 stops at 65504).
    """
    if logits.numel() == 0:
        return
    top = logits.detach().amax(dim=-1)  # NaN propagates through amax; +inf is the max if present
    if torch.isnan(top).any() or torch.isposinf(top).any():
        raise ValueError(
            f"{name} contain NaN or +inf values; check the model's outputs (e.g. float16 overflow: float16 stops at "
            "65504; run the model or its lm_head in float32/bfloat16)."
        )
    if torch.isneginf(top).any():
        raise ValueError(
            f"{name} are -inf at every id of some position (index {int(torch.isneginf(top).nonzero()[0, 0])} of "
            f"{top.numel()} flattened): that is no distribution; every position needs at least one unmasked id."
        )


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
    check_logits(logits)
    selectivity = torch.as_tensor(selectivity, dtype=logits.dtype, device=logits.device)
    if torch.isinf(selectivity).any():
        is_max = logits == logits.amax(dim=-1, keepdim=True)
        argmax = torch.where(is_max, 0.0, float("-inf")).to(logits.dtype)
        argmax = argmax - torch.log(is_max.sum(dim=-1, keepdim=True).to(logits.dtype))
        if selectivity.dim() == 0:
            return argmax
        finite = torch.where(torch.isinf(selectivity), torch.ones_like(selectivity), selectivity)
        return torch.where(torch.isinf(selectivity), argmax, torch.log_softmax(finite * logits, dim=-1))
    return torch.log_softmax(selectivity * logits, dim=-1)


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
    # ``p * log p`` from the log-probs at hand (no second log, 2.5x faster than `special.entr`); -inf is clamped to
    # the dtype's lowest finite value so that 0 * log 0 is 0, not nan.
    return -(log_p.exp() * log_p.clamp_min(torch.finfo(log_p.dtype).min)).sum(-1)


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


def entropy_and_slope(logits: torch.Tensor, selectivity: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy of ``p = softmax(beta * z)`` per row, and its derivative in ``log(beta)``, in float64.

    With ``y = z - max(z)``: ``H = log sum_v exp(beta y_v) - beta E_p[y]`` and ``dH/dbeta = -beta Var_p(z)``, so
    ``dH/dlog(beta) = -beta**2 Var_p(z)``. Masked ids (``-inf``) have zero mass.

    Args:
        logits (`torch.Tensor` of shape `(N, V)`): scores.
        selectivity (`float` or `torch.Tensor` of shape `()` or `(N,)`): beta > 0 (finite).

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: entropies and slopes, each of shape `(N,)`, float64.
    """
    return _entropy_and_slope(_centered(logits), selectivity)


def _centered(logits: torch.Tensor) -> torch.Tensor:
    """``z - max(z)`` in float64, masked ids at -1e300: ``exp(beta * y)`` is 0 there and ``0 * y`` stays 0 (no NaN)."""
    y = logits.detach().to(torch.float64, copy=True)
    y -= y.amax(dim=-1, keepdim=True)
    return y.clamp_min_(-1e300)


def _entropy_and_slope(y: torch.Tensor, selectivity: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    selectivity = torch.as_tensor(selectivity, dtype=torch.float64, device=y.device)
    e = torch.mul(y, selectivity.unsqueeze(-1) if selectivity.dim() else selectivity).exp_()
    norm = e.sum(-1)
    mean = e.mul_(y).sum(-1) / norm
    second = e.mul_(y).sum(-1) / norm
    return norm.log() - selectivity * mean, -(selectivity**2) * (second - mean**2).clamp_min(0)


def _solve_log_selectivity(stats, target: float, lo: torch.Tensor, hi: torch.Tensor, tol: float, max_iter: int):
    """Safeguarded Newton on ``u = log(beta)`` for ``H(u) = target``, H non-increasing (one root per entry).

    `stats(u)` returns ``(H, dH/du)`` with the shape of `u`. Starts at beta = 1 (so the teacher's own entropy returns
    beta = 1 exactly), keeps a bracket, and takes the Newton step when it stays inside the bracket and the error
    halved; otherwise it bisects, except that an original bound is tested itself the first time the search heads
    for it (one pass settles an unreachable target). Returns ``(u, error, H(lo0), H(hi0) or None)``; the u returned
    is a point actually tested (the best one), never an untested midpoint.
    """
    lo0, hi0 = lo.clone(), hi.clone()
    u = torch.zeros_like(lo).clamp_(lo, hi)
    lo_known = torch.zeros_like(lo, dtype=torch.bool)
    hi_known = torch.zeros_like(lo_known)
    h_lo, h_hi = torch.full_like(lo, math.nan), torch.full_like(lo, math.nan)
    best_u, best_err = u.clone(), torch.full_like(lo, math.inf)
    prev_err = torch.full_like(lo, math.inf)
    for _ in range(max_iter):
        h, slope = stats(u)
        err = h - target
        better = err.abs() < best_err.abs()
        best_u, best_err = torch.where(better, u, best_u), torch.where(better, err, best_err)
        at_lo, at_hi = u == lo0, u == hi0
        h_lo, h_hi = torch.where(at_lo, h, h_lo), torch.where(at_hi, h, h_hi)
        lo_known, hi_known = lo_known | at_lo, hi_known | at_hi
        done = best_err.abs() <= tol
        # Unreachable: the search stands on an original bound and the error still points outside.
        stuck = (at_hi & (err > tol)) | (at_lo & (err < -tol))
        if (done | stuck).all():
            break
        right = err > 0  # entropy too high: beta must grow
        lo, hi = torch.where(right, u, lo), torch.where(right, hi, u)
        newton = u - err / slope
        ok = torch.isfinite(newton) & (newton > lo) & (newton < hi) & (err.abs() <= 0.5 * prev_err.abs())
        fallback = torch.where(right & ~hi_known, hi0, torch.where(~right & ~lo_known, lo0, (lo + hi) / 2))
        u = torch.where(done | stuck, u, torch.where(ok, newton, fallback))
        prev_err = err
        if ((hi - lo) <= 1e-14 * (1 + lo.abs())).all():
            break
    return best_u, best_err, h_lo, h_hi


def _unreachable(target, lo_sel, hi_sel, h_hi, h_lo, what) -> ValueError:
    return ValueError(
        f"target_entropy={target} nats is unreachable: with selectivity in [{lo_sel:g}, {hi_sel:g}] the teacher's "
        f"{what} ranges over [{h_hi:.4f}, {h_lo:.4f}] nats; choose a target inside it."
    )


LOGITS_PER_CHUNK = 2**22


def default_chunk_size(vocab_size: int) -> int:
    """Tokens per chunk so that a chunk holds about `LOGITS_PER_CHUNK` logits (16 MB in float32)."""
    return max(1, LOGITS_PER_CHUNK // vocab_size)


def chunk_slices(n: int, chunk_size: int) -> list[slice]:
    """Slices ``[0, chunk_size), [chunk_size, 2 * chunk_size), ...`` covering ``range(n)`` (none when n = 0)."""
    return [slice(start, start + chunk_size) for start in range(0, n, chunk_size)]


def check_target_entropy(target_entropy: float, vocab: int) -> None:
    """Refuse a target entropy outside ``(0, log V)``, the entropies a distribution over `vocab` ids can have."""
    if not 0.0 < target_entropy < math.log(vocab):
        raise ValueError(
            f"target_entropy={target_entropy} nats is unreachable: with a vocabulary of {vocab} the entropy lies in "
            f"(0, log V = {math.log(vocab):.4f}); choose a value inside that range."
        )


def solve_mean_selectivity(
    logit_chunks,
    target_entropy: float,
    tol: float = 1e-6,
    max_iter: int = 100,
    min_selectivity: float = 1e-3,
    max_selectivity: float = 1e3,
) -> float:
    """One selectivity beta such that the MEAN entropy of ``softmax(beta * z)`` over all rows is `target_entropy`.

    Memory-bounded: the rows arrive in chunks from `logit_chunks()` (called once per pass, e.g. recomputing
    ``h @ W.T`` chunk by chunk), so nothing of size `(N, V)` is held. Each pass accumulates the summed entropy and
    its derivative ``dH/dbeta = -beta Var_p(z)`` (`entropy_and_slope`); a safeguarded Newton solve on ``log(beta)``
    needs a handful of passes.

    Args:
        logit_chunks (`Callable[[], Iterable[torch.Tensor]]`): yields `(n_i, V)` logits that together form the rows.
        target_entropy (`float`): H* in nats.
        tol (`float`): accepted absolute error on the mean entropy, in nats.
        max_iter (`int`): passes at most.
        min_selectivity, max_selectivity (`float`): search range of beta.

    Returns:
        `float`: beta (a Python float, float64 precision).

    Raises:
        `ValueError`: when the target lies outside the reachable range (the message names it), or there are no rows.
    """
    vocab, count = None, 0

    def stats(u):
        nonlocal vocab, count
        total = torch.zeros(2, dtype=torch.float64)
        count = 0
        for z in logit_chunks():
            check_logits(z, "teacher logits")
            vocab = z.shape[-1]
            h, slope = entropy_and_slope(z, u.exp().to(z.device))
            total += torch.stack([h.sum(), slope.sum()]).cpu()
            count += z.shape[0]
        if count == 0:
            raise ValueError("solve_mean_selectivity got no rows: there is no position to measure the entropy on.")
        if vocab is not None:
            check_target_entropy(target_entropy, vocab)
        return (total[0] / count).reshape(1), (total[1] / count).reshape(1)

    lo = torch.tensor([math.log(min_selectivity)], dtype=torch.float64)
    hi = torch.tensor([math.log(max_selectivity)], dtype=torch.float64)
    u, err, h_lo, h_hi = _solve_log_selectivity(stats, target_entropy, lo, hi, tol, max_iter)
    if err.abs().item() > tol:
        h_lo = h_lo if not torch.isnan(h_lo).any() else stats(lo)[0]
        h_hi = h_hi if not torch.isnan(h_hi).any() else stats(hi)[0]
        raise _unreachable(target_entropy, min_selectivity, max_selectivity, h_hi.item(), h_lo.item(), "mean entropy")
    return math.exp(u.item())


def _solve_rows(chunk: torch.Tensor, target_entropy: float, tol: float, max_iter: int, lo_sel: float, hi_sel: float):
    """One selectivity per row of `chunk` `(n, V)` (float64, shape `(n,)`), refused where the target is unreachable."""
    lo = torch.full((chunk.shape[0],), math.log(lo_sel), dtype=torch.float64, device=chunk.device)
    hi = torch.full_like(lo, math.log(hi_sel))
    y = _centered(chunk)  # once per chunk, reused by every Newton step
    u, err, h_lo, h_hi = _solve_log_selectivity(
        lambda u, y=y: _entropy_and_slope(y, u.exp()), target_entropy, lo, hi, tol, max_iter
    )
    if (err.abs() > tol).any():
        h_lo, h_hi = _entropy_and_slope(y, lo.exp())[0], _entropy_and_slope(y, hi.exp())[0]
        bad = err.abs() > tol
        raise _unreachable(
            target_entropy,
            lo_sel,
            hi_sel,
            h_hi[bad].min().item(),
            h_lo[bad].max().item(),
            f"token entropy at {int(bad.sum())} of the positions",
        )
    return u.exp()


def solve_selectivity(
    logits: torch.Tensor,
    target_entropy: float,
    mask: torch.Tensor | None = None,
    per_token: bool = False,
    tol: float = 1e-6,
    max_iter: int = 100,
    min_selectivity: float = 1e-3,
    max_selectivity: float = 1e3,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Selectivity beta such that ``softmax(beta * logits)`` has the target entropy (nats per token).

    The entropy of ``softmax(beta * z)`` is non-increasing in beta with ``dH/dbeta = -beta Var_p(z)``: a safeguarded
    Newton solve on ``log(beta)`` over ``[min_selectivity, max_selectivity]`` meets the target to `tol` in a few
    passes. With `per_token=False` one beta makes the *mean* entropy over the masked positions equal the target
    (`solve_mean_selectivity`); with `per_token=True` each position gets its own beta. Rows are processed in chunks
    of `chunk_size` (float64 work buffers of a few chunks only). Masked ids (``-inf`` logits) are allowed.

    Args:
        logits (`torch.Tensor` of shape `(..., V)`): teacher logits, e.g. `(B, T, V)`.
        target_entropy (`float`): H* in nats, ``0 < H* < log V``.
        mask (`torch.Tensor` of shape `(...)`, *optional*): positions that count (e.g. completion tokens).
        per_token (`bool`): one beta per position instead of one for the batch.
        tol (`float`): accepted absolute error on the entropy, in nats.
        max_iter (`int`): Newton/bisection steps at most.
        min_selectivity, max_selectivity (`float`): search range of beta.
        chunk_size (`int`, *optional*): rows per chunk; by default about ``2**22`` logits a chunk.

    Returns:
        `torch.Tensor`: a scalar beta, or betas of shape `(...)` with `per_token` (1.0 at masked-out positions).

    Raises:
        `ValueError`: when the target lies outside the entropy range reachable with beta in the search range; the
        message names that range.
    """
    check_logits(logits, "teacher logits")
    vocab = logits.shape[-1]
    check_target_entropy(target_entropy, vocab)
    flat = logits.detach().reshape(-1, vocab)
    keep = torch.ones(flat.shape[0], dtype=torch.bool, device=flat.device) if mask is None else mask.reshape(-1).bool()
    if not keep.any():
        raise ValueError("solve_selectivity got an empty mask: there is no position to measure the entropy on.")
    rows = flat[keep] if mask is not None else flat
    step = chunk_size or default_chunk_size(vocab)
    bounds = (min_selectivity, max_selectivity)
    if not per_token:
        selectivity = solve_mean_selectivity(
            lambda: (rows[sl] for sl in chunk_slices(rows.shape[0], step)), target_entropy, tol, max_iter, *bounds
        )
        return torch.tensor(selectivity, dtype=logits.dtype, device=logits.device)
    parts = [_solve_rows(rows[sl], target_entropy, tol, max_iter, *bounds) for sl in chunk_slices(rows.shape[0], step)]
    out = torch.ones(flat.shape[0], dtype=logits.dtype, device=logits.device)
    out[keep] = torch.cat(parts).to(logits.dtype)
    return out.reshape(logits.shape[:-1])
