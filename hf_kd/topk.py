"""Token-level distillation losses from a teacher's stored top-k log-probabilities (no teacher in memory).

An offline teacher-sample dataset (`hf_kd.generation`, ``store_topk=K``) keeps, for every completion token, the ids
and the log-probabilities of the K most likely next tokens under the UNsharpened teacher. The rest of the
vocabulary (the *tail*) is lost; two ways to handle it:

- ``tail="bucket"`` (default): the tail is one extra outcome. The teacher's tail mass is ``1 - sum_k p_k``; the
  student's is its probability of every id outside the teacher's top-k. The divergence is then taken between two
  distributions over K + 1 outcomes: an exact divergence of coarse-grained distributions, hence never above the
  full-vocabulary divergence (data-processing inequality) and equal to it when the tail is empty (K = V). The tail's
  inner shape is unknown, so neither sharpening nor a temperature can be applied exactly: this mode needs
  ``selectivity / temperature = 1``.
- ``tail="renormalize"``: both teacher and student are restricted to the teacher's top-k ids and renormalised there;
  the teacher is then sharpened exactly on that support, ``softmax(selectivity * log p_topk / temperature)``.

With K = V both modes give the loss of `hf_kd.losses.distillation_loss` on the live teacher's logits.

`chunked_topk_distillation_loss` is the memory-bounded form used by `hf_kd.DistillationTrainer`: it takes the
student's hidden states and lm_head, and never holds more than one chunk of student logits (see its docstring).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from .divergences import LOSS_TYPES, LossSpec, token_divergence
from .lm_heads import LogitPostprocessing, logit_postprocess
from .losses import _checked_chunk_size, _reduce
from .sharpening import check_selectivity, chunk_slices

__all__ = [
    "TAIL_MODES",
    "check_topk",
    "chunked_topk_distillation_loss",
    "pad_topk_rows",
    "topk_distillation_loss",
    "topk_teacher_log_probs",
]

TAIL_MODES = ("bucket", "renormalize")


def check_topk(
    topk_ids: torch.Tensor, topk_logprobs: torch.Tensor, vocab_size: int | None = None, where: str = "top-k"
) -> None:
    """Raise a `ValueError` naming `where` unless stored top-k rows are usable teacher log-probabilities.

    Refused: NaN or positive log-probabilities (a log-probability is <= 0), a position whose K log-probabilities are
    all ``-inf`` (no distribution), an id stored twice at one position, an id outside ``[0, vocab_size)``. ``-inf``
    entries (ids the teacher masks) are accepted.

    Args:
        topk_ids (`torch.Tensor` of shape `(..., K)`): token ids.
        topk_logprobs (`torch.Tensor` of shape `(..., K)`): their log-probabilities.
        vocab_size (`int`, *optional*): the vocabulary size the ids must fall in.
        where (`str`): what to name in the message, e.g. ``"dataset row with sample_id 12"``.
    """
    lp = torch.as_tensor(topk_logprobs)
    ids = torch.as_tensor(topk_ids)
    if lp.numel() == 0:
        return

    def fail(problem: str, mask: torch.Tensor) -> ValueError:
        position = tuple(int(i) for i in mask.nonzero()[0])
        return ValueError(
            f"{where}: the stored top-k {problem} (first at position {position}). Such log-probabilities are not a "
            "teacher distribution; regenerate the dataset with hf_kd.generate_distillation_dataset(..., store_topk=K) "
            "or fix that row."
        )

    if torch.isnan(lp).any():
        raise fail("log-probabilities contain NaN", torch.isnan(lp))
    if (lp > 0).any():
        raise fail(f"log-probabilities contain a positive value ({lp.max().item():.4g} > 0)", lp > 0)
    if torch.isneginf(lp).all(dim=-1).any():
        raise fail("log-probabilities are all -inf at a position", torch.isneginf(lp).all(dim=-1))
    if vocab_size is not None and ((ids < 0) | (ids >= vocab_size)).any():
        raise fail(f"ids fall outside the vocabulary [0, {vocab_size})", (ids < 0) | (ids >= vocab_size))
    ordered = ids.sort(dim=-1).values
    duplicate = (ordered[..., 1:] == ordered[..., :-1]).any(dim=-1)
    if duplicate.any():
        raise fail("ids repeat an id at one position", duplicate)


def pad_topk_rows(rows: list[tuple[torch.Tensor, torch.Tensor]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-sequence stored top-k rows into batch tensors aligned with `width` completion positions.

    Args:
        rows (`list` of `(ids, logprobs)`, each of shape `(L_i, K)`): one sequence's top-k per completion token.
        width (`int`): the batch's completion length; longer rows are cut, shorter ones padded with zeros (masked
            positions).

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: ids (long) and log-probs (float32), each of shape `(B, width, K)`.
    """
    k = rows[0][0].shape[-1]
    out_ids = torch.zeros(len(rows), width, k, dtype=torch.long)
    out_lp = torch.zeros(len(rows), width, k, dtype=torch.float32)
    for i, (top_ids, top_lp) in enumerate(rows):
        n = min(width, top_ids.shape[0])
        if top_ids.shape[-1] != k:
            raise ValueError(f"rows store different top-k sizes ({top_ids.shape[-1]} and {k}); use one K.")
        out_ids[i, :n], out_lp[i, :n] = top_ids[:n], top_lp[:n]
    return out_ids, out_lp


def topk_teacher_log_probs(
    topk_logprobs: torch.Tensor, tail: str = "bucket", selectivity: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """The teacher distribution rebuilt from its stored top-k log-probabilities.

    ``bucket``: ``[log p_1, ..., log p_K, log(1 - sum_k p_k)]``; ``renormalize``: ``log_softmax(beta * log p_topk)``.

    Args:
        topk_logprobs (`torch.Tensor` of shape `(..., K)`): teacher log-probabilities of its top-k ids.
        tail (`str`): ``"bucket"`` or ``"renormalize"``.
        selectivity (`float` or `torch.Tensor` of shape `(...)`): sharpening beta (``renormalize`` only).

    Returns:
        `torch.Tensor` of shape `(..., K + 1)` (bucket) or `(..., K)` (renormalize), normalised log-probabilities.
    """
    log_p = topk_logprobs.to(torch.promote_types(topk_logprobs.dtype, torch.float32))
    if tail == "renormalize":
        selectivity = torch.as_tensor(selectivity, dtype=log_p.dtype, device=log_p.device)
        return torch.log_softmax(log_p * (selectivity.unsqueeze(-1) if selectivity.dim() > 0 else selectivity), dim=-1)
    # Stored float32 top-k masses may sum to slightly more than 1: clamp the tail at 0.
    tail_mass = (-torch.expm1(torch.logsumexp(log_p, dim=-1, keepdim=True))).clamp_min(0)
    return torch.cat([log_p, torch.log(tail_mass)], dim=-1)


def _student_log_probs(log_q: torch.Tensor, topk_ids: torch.Tensor, tail: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Student log-probabilities on the teacher's top-k ids (+ its tail outcome, or renormalised), and where the
    tail is empty (every id is in the top-k)."""
    on_topk = log_q.gather(-1, topk_ids)
    if tail == "renormalize":
        return torch.log_softmax(on_topk, dim=-1), None
    outside = log_q.scatter(-1, topk_ids, float("-inf"))
    # With K = V nothing lies outside: logsumexp of all -inf has a NaN gradient, so give an exact -inf constant.
    empty = torch.isinf(outside).all(dim=-1, keepdim=True)
    safe = torch.where(empty, torch.zeros_like(outside), outside)
    log_tail = torch.where(empty, torch.full_like(empty, float("-inf"), dtype=log_q.dtype), safe.logsumexp(-1, True))
    return torch.cat([on_topk, log_tail], dim=-1), empty


def topk_distillation_loss(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    *,
    loss_type: str = "forward_kl",
    mask: torch.Tensor | None = None,
    tail: str = "bucket",
    selectivity: float | torch.Tensor = 1.0,
    temperature: float = 1.0,
    jsd_beta: float = 0.5,
    skew_alpha: float = 0.1,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Masked token-level divergence between the stored top-k teacher and the student (module docstring: tails).

    Per position: ``D(p_topk || q_topk)`` with `hf_kd.losses.token_divergence`, where ``q = softmax(z_s /
    temperature)`` and the teacher is tempered and sharpened by ``selectivity / temperature``; reduced as
    ``sum(mask * D) / num_items_in_batch`` (else the mean over unmasked positions).

    Args:
        student_logits (`torch.Tensor` of shape `(..., V)`): student logits at the scored positions.
        topk_ids (`torch.Tensor` of shape `(..., K)`): the teacher's top-k token ids (int).
        topk_logprobs (`torch.Tensor` of shape `(..., K)`): their UNsharpened teacher log-probabilities.
        loss_type (`str`): any of `hf_kd.losses.LOSS_TYPES` except ``"nll"``.
        mask (`torch.Tensor` of shape `(...)`, *optional*): positions that count.
        tail (`str`): ``"bucket"`` or ``"renormalize"``.
        selectivity (`float` or `torch.Tensor` of shape `(...)`): teacher sharpening (``renormalize``, or 1).
        temperature (`float`): softmax temperature of both sides (TRL's meaning).
        jsd_beta, skew_alpha (`float`): as in `hf_kd.losses.distillation_loss`.
        num_items_in_batch (`int`, *optional*): divide the summed loss by this.

    Returns:
        `torch.Tensor`: scalar loss.
    """
    if topk_ids.shape != topk_logprobs.shape or topk_ids.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(
            f"shapes disagree: student_logits {tuple(student_logits.shape)}, topk_ids {tuple(topk_ids.shape)}, "
            f"topk_logprobs {tuple(topk_logprobs.shape)}; expected (..., V), (..., K), (..., K)."
        )
    spec = _checked_spec(loss_type, tail, temperature, jsd_beta, skew_alpha)
    scale = _checked_teacher_scale(student_logits.shape[-1], topk_ids, topk_logprobs, spec, tail, selectivity)
    return _topk_loss(student_logits, topk_ids, topk_logprobs, scale, spec, tail, mask, num_items_in_batch)


def _checked_spec(loss_type: str, tail: str, temperature: float, jsd_beta: float, skew_alpha: float) -> LossSpec:
    """The loss settings, refusing nll (the top-k is a teacher distribution, not labels) and unknown tails."""
    if loss_type == "nll" or loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r} is not a divergence; choose one of {LOSS_TYPES[1:]}.")
    if tail not in TAIL_MODES:
        raise ValueError(f"tail={tail!r} is unknown; choose 'bucket' (tail mass as one outcome) or 'renormalize'.")
    return LossSpec(loss_type, temperature, jsd_beta, skew_alpha)


def _checked_teacher_scale(vocab_size, topk_ids, topk_logprobs, spec: LossSpec, tail: str, selectivity):
    """Validate the stored top-k and the selectivity once; return the teacher's logit scale
    ``selectivity / temperature``."""
    check_selectivity(selectivity, allow_inf=False)
    teacher_scale = selectivity / spec.temperature
    if tail == "bucket" and not bool((torch.as_tensor(teacher_scale) == 1).all()):
        raise ValueError(
            "tail='bucket' cannot sharpen or temper the teacher (the tail's inner shape is unknown); use "
            "selectivity / temperature = 1, or tail='renormalize', or sample the dataset at the selectivity you want."
        )
    if topk_ids.shape[-1] > vocab_size:
        raise ValueError(f"K = {topk_ids.shape[-1]} exceeds the student's vocabulary ({vocab_size}).")
    check_topk(topk_ids, topk_logprobs.detach(), vocab_size, "topk_distillation_loss")
    return teacher_scale


def _topk_loss(student_logits, topk_ids, topk_logprobs, teacher_scale, spec: LossSpec, tail, mask, num_items_in_batch):
    """`topk_distillation_loss` on inputs `_checked_spec` and `_checked_teacher_scale` have validated."""
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_q = torch.log_softmax(student_logits.to(dtype) / spec.temperature, dim=-1)
    ids = topk_ids.long().to(log_q.device)
    log_p = topk_teacher_log_probs(topk_logprobs.to(log_q.device, dtype), tail, teacher_scale).detach()
    student, empty = _student_log_probs(log_q, ids, tail)
    if empty is not None:  # an empty tail has no mass, whatever rounding left in 1 - sum(p_topk)
        log_p = torch.cat([log_p[..., :-1], log_p[..., -1:].masked_fill(empty, float("-inf"))], dim=-1)
    per_token = token_divergence(student, log_p, spec.loss_type, jsd_beta=spec.jsd_beta, skew_alpha=spec.skew_alpha)
    mask = torch.ones_like(per_token, dtype=torch.bool) if mask is None else mask.bool().to(per_token.device)
    total = torch.where(mask, per_token, torch.zeros_like(per_token)).sum()
    return _reduce(total, mask.sum(), num_items_in_batch)


def _chunk_sum(h, weight, bias, ids, logprobs, scale, spec: LossSpec, tail: str, post: LogitPostprocessing):
    """Summed top-k loss of one chunk of hidden states (recomputed in backward by `checkpoint`); inputs checked."""
    logits = logit_postprocess(torch.nn.functional.linear(h, weight, bias), *post)
    return _topk_loss(logits, ids, logprobs, scale, spec, tail, mask=None, num_items_in_batch=1)


def chunked_topk_distillation_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    *,
    loss_type: str = "forward_kl",
    tail: str = "bucket",
    selectivity: float | torch.Tensor = 1.0,
    temperature: float = 1.0,
    jsd_beta: float = 0.5,
    skew_alpha: float = 0.1,
    num_items_in_batch: int | torch.Tensor | None = None,
    student_bias: torch.Tensor | None = None,
    chunk_size: int | None = None,
    student_logit_scale: float = 1.0,
    student_final_logit_softcapping: float | None = None,
) -> torch.Tensor:
    """`topk_distillation_loss` on the student logits ``h @ W.T + b`` of the scored tokens, chunk by chunk.

    Each chunk of `chunk_size` tokens is computed under `torch.utils.checkpoint`: the forward keeps only the chunk's
    inputs, and backward recomputes one chunk's logits at a time. Memory beyond the hidden states is therefore one
    chunk's autograd graph, a handful of `(chunk_size, V)` float32 buffers (about 8: logits, log-softmax, the
    scatter for the tail and their gradients), plus the lm_head weight gradient; never `(N, V)`.

    Args:
        student_hidden (`torch.Tensor` of shape `(N, H)`): the student's last hidden states at the scored tokens.
        student_weight (`torch.Tensor` of shape `(V, H)`): the student's lm_head weight.
        topk_ids, topk_logprobs (`torch.Tensor` of shape `(N, K)`): the stored teacher top-k per scored token.
        student_bias (`torch.Tensor` of shape `(V,)`, *optional*): lm_head bias.
        selectivity (`float` or `torch.Tensor` of shape `(N,)`): teacher sharpening (``renormalize``, or 1).
        chunk_size (`int`, *optional*): tokens per chunk; by default about ``2**22`` logits per chunk.
        student_logit_scale, student_final_logit_softcapping: the student's logit post-processing
            (`hf_kd.losses.logit_postprocess`; the stored teacher log-probs already include the teacher's).
        loss_type, tail, temperature, jsd_beta, skew_alpha, num_items_in_batch: as in `topk_distillation_loss`.

    Returns:
        `torch.Tensor`: scalar loss, equal to `topk_distillation_loss` on the full `(N, V)` logits.
    """
    if student_hidden.dim() != 2 or topk_ids.shape[0] != student_hidden.shape[0]:
        raise ValueError(
            f"expected student_hidden (N, H) and topk_ids (N, K) with the same N; got {tuple(student_hidden.shape)} "
            f"and {tuple(topk_ids.shape)}."
        )
    chunk_size = _checked_chunk_size(chunk_size, student_weight.shape[0])
    spec = _checked_spec(loss_type, tail, temperature, jsd_beta, skew_alpha)
    # the stored top-k is checked once here, not again per chunk and in each chunk's recomputation
    scale = _checked_teacher_scale(student_weight.shape[0], topk_ids, topk_logprobs, spec, tail, selectivity)
    post = LogitPostprocessing(student_logit_scale, student_final_logit_softcapping)
    per_token = isinstance(scale, torch.Tensor) and scale.dim() > 0
    n = student_hidden.shape[0]
    # 0 * sum keeps the result in the graph even with no scored token (backward then gives zero gradients).
    total = (student_hidden.sum() * 0).to(torch.promote_types(student_hidden.dtype, torch.float32))
    for sl in chunk_slices(n, chunk_size):
        chunk = (student_hidden[sl], student_weight, student_bias, topk_ids[sl], topk_logprobs[sl])
        args = (*chunk, scale[sl] if per_token else scale, spec, tail, post)
        if torch.is_grad_enabled() and (student_hidden.requires_grad or student_weight.requires_grad):
            total = total + checkpoint(_chunk_sum, *args, use_reentrant=False)
        else:
            total = total + _chunk_sum(*args)
    return _reduce(total, torch.tensor(n), num_items_in_batch)
