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

import torch

from .divergences import (
    LOSS_TYPES,
    LossSpec,
    log_probs,
    logit_grad,
    logit_grad_from_log_probs,
    per_token_loss,
    token_divergence,
)
from .lm_heads import NO_POSTPROCESSING, LogitPostprocessing, head_logits, logit_postprocess, logit_postprocess_grad
from .sharpening import check_logits, check_selectivity, chunk_slices, default_chunk_size, entropy_from_log_probs

__all__ = [
    "LOSS_TYPES",
    "LossSpec",
    "chunked_distillation_loss",
    "default_chunk_size",
    "distillation_loss",
    "head_logits",
    "logit_postprocess",
    "token_divergence",
]


def _check_inputs(spec: LossSpec, labels, teacher, selectivity) -> None:
    """What `spec` needs of the inputs: labels for nll, a teacher and a finite selectivity otherwise."""
    if spec.loss_type == "nll" and labels is None:
        raise ValueError("loss_type='nll' needs `labels` (the completion token ids).")
    if spec.loss_type != "nll" and teacher is None:
        raise ValueError(
            f"loss_type={spec.loss_type!r} needs the teacher's logits (or hidden states and lm_head weight)."
        )
    if spec.loss_type != "nll":
        check_selectivity(selectivity, allow_inf=False)


def _check_vocab(student_vocab: int, teacher_vocab: int) -> None:
    if student_vocab != teacher_vocab:
        raise ValueError(
            f"student vocabulary size {student_vocab} != teacher vocabulary size {teacher_vocab}: token-level losses "
            "need a shared tokenizer. Resize one model's embeddings (model.resize_token_embeddings) or use "
            "loss_type='nll' on teacher-sampled completions, which needs no teacher logits."
        )


def _reduce(total: torch.Tensor, count: torch.Tensor, num_items_in_batch) -> torch.Tensor:
    if num_items_in_batch is not None:
        return total / num_items_in_batch
    return total / count.clamp_min(1)


def _scored(shape, labels, mask, device) -> torch.Tensor:
    """The positions that count: `mask` (all by default) without the ignored labels (-100)."""
    if mask is None:
        mask = torch.ones(shape, dtype=torch.bool, device=device)
    mask = mask.bool()
    return mask if labels is None else mask & (labels != -100)


def _check_total(total: torch.Tensor, loss_type: str) -> None:
    if not torch.isfinite(total):
        raise ValueError(
            f"the {loss_type} loss is {total.item()}: the student gives zero probability (a -inf logit, e.g. an "
            "lm_head bias of -inf) to an id where the teacher has mass or to a label, which makes it infinite, or "
            "the logits overflowed (selectivity * logits beyond float32). Mask the same ids in both models."
        )


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
        selectivity (`float` or `torch.Tensor` of shape `(...)`): teacher sharpening > 0, per batch or per token.
        temperature (`float`): softmax temperature of both student and teacher (TRL's `temperature`).
        jsd_beta (`float`): generalized-JSD mixing weight (TRL's `beta`).
        skew_alpha (`float`): skew of the skew KLs.
        num_items_in_batch (`int`, *optional*): divide the summed loss by this (gradient accumulation, multi-GPU).

    Returns:
        `torch.Tensor`: scalar loss.
    """
    spec = LossSpec(loss_type, temperature, jsd_beta, skew_alpha)
    _check_inputs(spec, labels, teacher_logits, selectivity)
    check_logits(student_logits, "student logits")
    if teacher_logits is not None and loss_type != "nll":
        _check_vocab(student_logits.shape[-1], teacher_logits.shape[-1])
        check_logits(teacher_logits, "teacher logits")
    mask = _scored(student_logits.shape[:-1], labels, mask, student_logits.device)
    teacher_logits = None if loss_type == "nll" else teacher_logits
    per_token = per_token_loss(*log_probs(student_logits, teacher_logits, selectivity, temperature), labels, spec)
    total = torch.where(mask, per_token, torch.zeros_like(per_token)).sum()
    _check_total(total, loss_type)
    return _reduce(total, mask.sum(), num_items_in_batch)


KEEP_LOGIT_GRAD = 2**25  # logits (128 MB in float32) up to which forward keeps dL/dz rather than backward recomputing


class _ChunkedLinearLoss(torch.autograd.Function):
    """Summed loss over token chunks of ``h @ W.T + b``, with closed-form logit gradients recomputed in backward.

    Forward keeps only the inputs; backward recomputes each chunk's logits and forms ``dL/dz`` in closed form
    (`hf_kd.divergences.logit_grad`), so nothing of size `(n, V)` outlives a chunk, no autograd graph is built over
    the logits, and no gradient buffer is held between forward and backward: the extra memory is a few `(chunk, V)`
    float32 buffers (plus, in backward, the `(V, H)` weight gradient the optimizer needs anyway). The price is one
    more logits matmul per chunk and model. Small batches (at most `KEEP_LOGIT_GRAD` logits in all, e.g. a few
    hundred tokens) form ``dL/dz`` in forward instead, from the logits at hand, and keep it for backward: the same
    numbers, without the second pass.
    """

    @staticmethod
    def forward(ctx, h_s, w_s, b_s, h_t, w_t, b_t, labels, selectivity, chunk_size, spec, stats, post):
        total = h_s.new_zeros((), dtype=torch.promote_types(h_s.dtype, torch.float32))
        keep = h_s.shape[0] * w_s.shape[0] <= KEEP_LOGIT_GRAD and any(ctx.needs_input_grad[:3])
        ctx.logit_grads = [] if keep else None
        chunks = _chunk_logits(h_s, w_s, b_s, h_t, w_t, b_t, labels, selectivity, chunk_size, post)
        for _, z_s, z_t, chunk_labels, chunk_selectivity in chunks:
            log_q, log_p = log_probs(z_s, z_t, chunk_selectivity, spec.temperature)
            total += per_token_loss(log_q, log_p, chunk_labels, spec).sum()
            if stats is not None:  # logging only: the log-probs are at hand, so the entropies cost one pass each
                _add_entropy_stats(stats, log_q, log_p, z_t, chunk_selectivity, spec.temperature)
            if keep:  # from the log-probs at hand (the last use of log_q, which it may overwrite)
                dz = logit_grad_from_log_probs(log_q, log_p, chunk_labels, spec)
                ctx.logit_grads.append(_through_postprocessing(dz, z_s, post[0]))
        _check_total(total, spec.loss_type)
        saved = selectivity if isinstance(selectivity, torch.Tensor) else None
        ctx.save_for_backward(h_s, w_s, b_s, h_t, w_t, b_t, labels, saved)
        ctx.selectivity, ctx.chunk_size, ctx.spec, ctx.post = selectivity, chunk_size, spec, post
        return total

    @staticmethod
    def backward(ctx, grad_output):
        h_s, w_s, b_s, h_t, w_t, b_t, labels, saved = ctx.saved_tensors
        selectivity = saved if saved is not None else ctx.selectivity
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        dtype = torch.promote_types(h_s.dtype, torch.float32)
        grad_h = torch.empty_like(h_s) if need_h else None
        grad_w = torch.zeros(w_s.shape, dtype=dtype, device=w_s.device) if need_w else None
        grad_b = torch.zeros(b_s.shape, dtype=dtype, device=b_s.device) if need_b else None
        if ctx.logit_grads is not None:  # formed in forward
            kept = zip(chunk_slices(h_s.shape[0], ctx.chunk_size), ctx.logit_grads, strict=True)
        else:
            chunks = _chunk_logits(h_s, w_s, b_s, h_t, w_t, b_t, labels, selectivity, ctx.chunk_size, ctx.post)
            kept = ((sl, _logit_grad(z_s, z_t, y, sel, ctx.spec, ctx.post[0])) for sl, z_s, z_t, y, sel in chunks)
        for sl, dz in kept:
            dz = dz * grad_output.to(dz.dtype)
            if need_h:
                grad_h[sl] = (dz @ w_s.to(dtype)).to(h_s.dtype)
            if need_w:
                grad_w.addmm_(dz.T, h_s[sl].to(dtype))
            if need_b:
                grad_b += dz.sum(0)
        grad_w = None if grad_w is None else grad_w.to(w_s.dtype)
        grad_b = None if grad_b is None else grad_b.to(b_s.dtype)
        return grad_h, grad_w, grad_b, None, None, None, None, None, None, None, None, None


def _logit_grad(z_s, z_t, labels, selectivity, spec: LossSpec, post: LogitPostprocessing) -> torch.Tensor:
    """``dL/dz`` of one chunk with respect to the student's raw logits (through its scale / softcap)."""
    return _through_postprocessing(logit_grad(z_s, z_t, labels, selectivity, spec), z_s, post)


def _through_postprocessing(dz: torch.Tensor, z_s: torch.Tensor, post: LogitPostprocessing) -> torch.Tensor:
    """Chain rule of ``dL/dz`` through the student's logit scale / softcap (`post`), in place."""
    if post != NO_POSTPROCESSING:
        dz.mul_(logit_postprocess_grad(z_s.to(dz.dtype), *post))
    return dz


def _add_entropy_stats(stats: dict, log_q, log_p, z_t, selectivity, temperature) -> None:
    """Accumulate token counts and summed entropies (student; teacher before and after sharpening; selectivity)."""
    n = log_q.shape[0]
    add = {"num_tokens": log_q.new_tensor(float(n)), "student_entropy": entropy_from_log_probs(log_q).sum()}
    if log_p is not None:
        add["teacher_entropy_sharpened"] = entropy_from_log_probs(log_p).sum()
        unit = not isinstance(selectivity, torch.Tensor) and selectivity == 1
        raw = log_p if unit else torch.log_softmax(z_t.to(log_p.dtype) / temperature, dim=-1)
        add["teacher_entropy"] = add["teacher_entropy_sharpened"] if unit else entropy_from_log_probs(raw).sum()
        per_token = isinstance(selectivity, torch.Tensor)
        add["selectivity"] = selectivity.sum() if per_token else log_q.new_tensor(float(selectivity) * n)
    for key, value in add.items():
        stats[key] = stats.get(key, 0) + value.detach()


def _chunk_logits(h_s, w_s, b_s, h_t, w_t, b_t, labels, selectivity, chunk_size, post):
    """Yield ``(slice, student logits, teacher logits, labels, selectivity)`` for each chunk of tokens; the logits
    are post-processed as `post` = ``(student's, teacher's)`` `LogitPostprocessing` says."""
    per_token = isinstance(selectivity, torch.Tensor) and selectivity.dim() > 0
    for sl in chunk_slices(h_s.shape[0], chunk_size):
        z_s = logit_postprocess(head_logits(h_s[sl], w_s, b_s, "student"), *post[0])
        z_t = None if h_t is None else logit_postprocess(head_logits(h_t[sl], w_t, b_t, "teacher"), *post[1])
        yield sl, z_s, z_t, None if labels is None else labels[sl], selectivity[sl] if per_token else selectivity


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
    each chunk's logits and forms their gradient in closed form (`hf_kd.divergences.logit_grad`), so the extra
    memory is ``O(chunk_size * V)`` on every device. The teacher gets no gradient.

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

    (Over 60 lines only for its keyword arguments, TRL's and the two models' head settings, and their documentation;
    the body is about 30 lines.)
    """
    spec = LossSpec(loss_type, temperature, jsd_beta, skew_alpha)
    _check_inputs(spec, labels, teacher_hidden, selectivity)
    chunk_size = _checked_chunk_size(chunk_size, student_weight.shape[0])
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
    keep = _scored(positions, labels, mask, student_hidden.device).reshape(-1)

    # Gather only the scored positions: no compute on padding or prompt tokens.
    hidden_s = student_hidden.reshape(-1, student_hidden.shape[-1])[keep]
    hidden_t = None if teacher_hidden is None else teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1])[keep]
    flat_labels = None if labels is None else labels.reshape(-1)[keep]
    if isinstance(selectivity, torch.Tensor) and selectivity.dim() > 0:
        selectivity = selectivity.expand(positions).reshape(-1)[keep]
    post = (
        LogitPostprocessing(student_logit_scale, student_final_logit_softcapping),
        LogitPostprocessing(teacher_logit_scale, teacher_final_logit_softcapping),
    )
    teacher = [None if t is None else t.detach() for t in (hidden_t, teacher_weight, teacher_bias)]
    inputs = (hidden_s, student_weight, student_bias, *teacher, flat_labels, selectivity, chunk_size)
    total = _ChunkedLinearLoss.apply(*inputs, spec, stats, post)
    return _reduce(total, keep.sum(), num_items_in_batch)


def _checked_chunk_size(chunk_size: int | None, vocab_size: int) -> int:
    """`chunk_size`, or the automatic size for `vocab_size` (`default_chunk_size`) when None; refused below 1."""
    if chunk_size is None:
        return default_chunk_size(vocab_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (got {chunk_size}).")
    return chunk_size
