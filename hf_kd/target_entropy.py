"""Selectivity for a target entropy, solved from hidden states and an lm_head without `(N, V)` logits."""

from __future__ import annotations

import torch

from .losses import default_chunk_size, head_logits
from .sharpening import solve_mean_selectivity, solve_selectivity

__all__ = ["solve_head_selectivity"]


@torch.no_grad()
def solve_head_selectivity(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target_entropy: float,
    per_token: bool = False,
    chunk_size: int | None = None,
    postprocess=None,
) -> float | torch.Tensor:
    """Beta such that ``softmax(beta * f(h @ W.T + b))`` has mean (or per-token) entropy `target_entropy`, in nats.

    The logits are formed `chunk_size` tokens at a time (`hf_kd.losses.head_logits`, float32 on 16-bit overflow).
    Per token, every chunk is solved on its own. Per batch, each safeguarded-Newton pass recomputes the chunks and
    accumulates the summed entropy and its slope (`hf_kd.sharpening.solve_mean_selectivity`): a handful of passes,
    and the extra memory of a few float64 `(chunk_size, V)` buffers, never `(N, V)`.

    Args:
        hidden (`torch.Tensor` of shape `(N, H)`): the teacher's last hidden states at the scored tokens.
        weight (`torch.Tensor` of shape `(V, H)`): its lm_head weight.
        bias (`torch.Tensor` of shape `(V,)`, *optional*): its lm_head bias (``-inf`` masks an id).
        target_entropy (`float`): H* in nats.
        per_token (`bool`): one beta per token instead of one for all `N`.
        chunk_size (`int`, *optional*): tokens per chunk; by default about ``2**22`` logits a chunk.
        postprocess (`Callable[[torch.Tensor], torch.Tensor]`, *optional*): ``f``, applied to each chunk's logits
            (e.g. a model's logit scale and the temperature); the identity by default.

    Returns:
        `float` (per batch) or `torch.Tensor` of shape `(N,)`, float32 (per token).
    """
    n = hidden.shape[0]
    size = chunk_size or default_chunk_size(weight.shape[0])

    def chunk(i: int) -> torch.Tensor:
        z = head_logits(hidden[i : i + size], weight, bias, "teacher")
        return z if postprocess is None else postprocess(z)

    def logits():  # one chunk at a time, recomputed on every pass
        return (chunk(i) for i in range(0, n, size))

    if per_token:
        return torch.cat([solve_selectivity(z, target_entropy, per_token=True) for z in logits()]).float()
    return solve_mean_selectivity(logits, target_entropy)
