"""`warp_logits`: next-token logits -> the log-probabilities sampled from, in the one documented order."""

from __future__ import annotations

import torch

from ..sharpening import solve_selectivity
from .params import SamplingParams

__all__ = ["mask_eos", "top_k_filter", "top_p_filter", "warp_logits"]


def top_k_filter(scores: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """``-inf`` outside the `top_k` highest scores of each row (ties at the k-th value kept); None or 0: unchanged.

    Args:
        scores (`torch.Tensor` of shape `(B, V)`): scores.
        top_k (`int`, *optional*): ids to keep (at most V).
    """
    if not top_k:
        return scores
    kth = torch.topk(scores, min(top_k, scores.shape[-1]))[0][..., -1, None]
    return scores.masked_fill(scores < kth, -float("inf"))


def top_p_filter(scores: torch.Tensor, top_p: float | None) -> torch.Tensor:
    """``-inf`` outside the nucleus: the smallest set of highest-probability ids whose mass reaches `top_p`.

    In ascending order of ``p = softmax(scores)``, an id is removed when the cumulative mass up to and including it
    is ``<= 1 - top_p``; the most likely id is always kept. None or 1: unchanged.

    Args:
        scores (`torch.Tensor` of shape `(B, V)`): scores (already temperature-scaled and top-k filtered).
        top_p (`float`, *optional*): nucleus mass in (0, 1].
    """
    if top_p is None or top_p >= 1.0:
        return scores
    ascending, order = torch.sort(scores, descending=False)
    remove_sorted = ascending.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(1, order, remove_sorted)
    return scores.masked_fill(remove, -float("inf"))


def mask_eos(logits: torch.Tensor, eos_token_ids: list[int]) -> torch.Tensor:
    """`logits` with the EOS ids at ``-inf`` (before `min_new_tokens`, as `MinNewTokensLengthLogitsProcessor`)."""
    out = logits.clone()
    out[..., eos_token_ids] = -float("inf")
    return out


def warp_logits(logits: torch.Tensor, params: SamplingParams, return_selectivity: bool = False):
    """Log-probabilities of the sampling law for next-token logits: THE order used by every sampling path.

    ``log s = log_softmax(top_p(top_k(beta * (z / T))))`` with T = `params.temperature` and beta = `selectivity`,
    or solved at this step so that ``softmax(beta * z / T)`` has `target_entropy` (one beta per row with
    `per_token`, else one for the batch). This is the order of transformers' `generate` (`TemperatureLogitsWarper`,
    then `TopKLogitsWarper`, then `TopPLogitsWarper`, beta folded into the temperature) and of vLLM's sampler;
    top-k does not depend on the scale, top-p does. With ``selectivity = inf`` the law is the argmax (log-prob 0
    there, ``-inf`` elsewhere; the first maximum on ties).

    Args:
        logits (`torch.Tensor` of shape `(B, V)`): next-token logits (``-inf`` allowed, e.g. masked EOS).
        params (`SamplingParams`): the law.
        return_selectivity (`bool`): also return the betas used.

    Returns:
        `torch.Tensor` of shape `(B, V)`: log-probabilities (``-inf`` on removed ids) in float32, or float64 for
        float64 logits; with `return_selectivity` also the betas `(B,)` in float64.
    """
    z = logits if logits.dtype == torch.float64 else logits.float()
    rows = z.shape[0]
    if params.greedy:
        log_s = torch.full_like(z, -float("inf")).scatter(-1, z.argmax(-1, keepdim=True), 0.0)
        beta = torch.full((rows,), float("inf"), dtype=torch.float64)
    else:
        if params.temperature != 1.0:
            z = z / params.temperature
        if params.target_entropy is None:
            z, beta = z * params.selectivity, torch.full((rows,), params.selectivity, dtype=torch.float64)
        else:
            solved = solve_selectivity(z, params.target_entropy, per_token=params.per_token)
            z = z * (solved[:, None] if params.per_token else solved).to(z.dtype)
            beta = solved.detach().double().cpu().reshape(-1).expand(rows)
        log_s = torch.log_softmax(top_p_filter(top_k_filter(z, params.top_k), params.top_p), dim=-1)
    return (log_s, beta) if return_selectivity else log_s
