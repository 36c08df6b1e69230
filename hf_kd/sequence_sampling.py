"""Sampling a batch of completions from a (sharpened) teacher with a KV cache, scoring every token as it goes.

Used by `hf_kd.generation`; see its module docstring for how the per-sample randomness makes datasets reproducible.
"""

from __future__ import annotations

import hashlib
import math

import torch
from transformers import LogitsProcessorList, TopKLogitsWarper, TopPLogitsWarper

from .completions import EntropyTargetLogitsProcessor, left_pad

__all__ = ["sample_batch", "sample_seed"]


def sample_seed(seed: int, sample_id: int) -> int:
    """A 63-bit seed derived from ``(seed, sample_id)`` alone (SHA-256), for the sample's own generator."""
    digest = hashlib.sha256(f"hf_kd:{int(seed)}:{int(sample_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class _Sharpen:
    """``scores -> selectivity * scores`` (a logits processor for a fixed beta)."""

    def __init__(self, selectivity: float):
        self.selectivity = selectivity

    def __call__(self, input_ids, scores):
        return scores * self.selectivity


def _processors(selectivity, target_entropy, per_token, top_k, top_p) -> tuple[LogitsProcessorList, object]:
    """Processors in transformers' order (sharpen, top-k, top-p) and the one that knows the beta used."""
    first = EntropyTargetLogitsProcessor(target_entropy, per_token) if target_entropy is not None else None
    first = first or _Sharpen(selectivity)
    procs = LogitsProcessorList([first])
    if top_k:
        procs.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p))
    return procs, first


def _current_beta(beta_source, n: int) -> torch.Tensor:
    if isinstance(beta_source, _Sharpen):
        return torch.full((n,), float(beta_source.selectivity), dtype=torch.float64)
    return beta_source.last_selectivity.double().cpu().reshape(-1).expand(n)


@torch.no_grad()
def sample_batch(
    model,
    prompt_ids: list[list[int]],
    sample_ids: list[int],
    *,
    seed: int,
    max_new_tokens: int,
    eos_token_ids: list[int],
    pad_token_id: int,
    selectivity: float = 1.0,
    target_entropy: float | None = None,
    per_token_selectivity: bool = True,
    top_k: int | None = None,
    top_p: float | None = None,
    store_topk: int = 0,
) -> list[dict]:
    """Sample one completion per prompt with a KV cache, scoring it as it goes.

    At step t with teacher logits ``z`` (rows still running): ``log p = log_softmax(z)`` (UNsharpened),
    sampling scores ``s = processors(z)`` (``beta * z``, then top-k / top-p), ``x_t = F_s^{-1}(u_{i,t})`` with
    ``u_{i,t}`` the t-th uniform of the generator seeded by ``sample_seed(seed, i)``. A row stops at an EOS (kept) or
    after `max_new_tokens`, and then leaves the batch.

    Args:
        model: a causal LM in eval mode (its device is used).
        prompt_ids (`list[list[int]]`): B tokenized prompts (non-empty).
        sample_ids (`list[int]`): B sample ids (the randomness of each row).
        seed (`int`): run seed.
        max_new_tokens (`int`): length cap.
        eos_token_ids (`list[int]`): ids that end a completion.
        pad_token_id (`int`): fills the left padding of the prompts.
        selectivity (`float`): beta > 0, ``inf`` for greedy decoding; ignored with `target_entropy`.
        target_entropy (`float`, *optional*): nats per token; beta solved at each step.
        per_token_selectivity (`bool`): with `target_entropy`, one beta per row and step (else one per step).
        top_k (`int`, *optional*), top_p (`float`, *optional*): applied after sharpening.
        store_topk (`int`): keep the teacher's K most likely ids and log-probs per token (0: off).

    Returns:
        `list[dict]`: per row ``completion_ids``, ``teacher_logprob``, ``sampling_logprob``, ``mean_selectivity``,
        ``finished`` (and ``topk_ids``, ``topk_logprobs``).
    """
    device = next(model.parameters()).device
    n = len(prompt_ids)
    ids, mask = left_pad(prompt_ids, pad_token_id)  # every row's next token sits at the same column
    position = (mask.cumsum(-1) - 1).clamp_min(0)
    uniforms = torch.stack(
        [torch.rand(max_new_tokens, generator=torch.Generator().manual_seed(sample_seed(seed, i))) for i in sample_ids]
    ).double()
    greedy = target_entropy is None and math.isinf(selectivity)
    procs, beta_source = _processors(selectivity, target_entropy, per_token_selectivity, top_k, top_p)
    eos = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.long)
    rows = [{"completion_ids": [], "teacher_logprob": 0.0, "sampling_logprob": 0.0, "beta_sum": 0.0} for _ in range(n)]
    if store_topk:
        for row in rows:
            row["topk_ids"], row["topk_logprobs"] = [], []
    active = torch.arange(n)
    mask, next_pos = mask.to(device), position[:, -1].to(device) + 1
    out = model(
        input_ids=ids.to(device),
        attention_mask=mask,
        position_ids=position.to(device),
        use_cache=True,
        logits_to_keep=1,
    )
    cache = out.past_key_values
    for step in range(max_new_tokens):
        logits = out.logits[:, -1].float()
        log_p = torch.log_softmax(logits, dim=-1)
        if greedy:
            beta = torch.full((len(active),), math.inf, dtype=torch.float64)
            token = logits.argmax(-1)
            sampled_lp = torch.zeros(len(active), dtype=torch.float64)
        else:
            log_s = torch.log_softmax(procs(None, logits.clone()).float(), dim=-1)
            beta = _current_beta(beta_source, len(active))
            cdf = log_s.double().exp().cumsum(-1)
            u = uniforms[active, step].to(cdf.device) * cdf[:, -1]
            # right=True: the first id whose cumulative mass exceeds u, so zero-probability ids are never drawn.
            token = torch.searchsorted(cdf, u[:, None], right=True).squeeze(-1).clamp_max(cdf.shape[-1] - 1)
            sampled_lp = log_s.gather(-1, token[:, None]).squeeze(-1).double().cpu()
        teacher_lp = log_p.gather(-1, token[:, None]).squeeze(-1).double().cpu()
        if store_topk:
            top_lp, top_ids = log_p.topk(store_topk, dim=-1)
            top_lp, top_ids = top_lp.cpu().tolist(), top_ids.int().cpu().tolist()
        token_cpu = token.cpu()
        for j, r in enumerate(active.tolist()):
            row = rows[r]
            row["completion_ids"].append(int(token_cpu[j]))
            row["teacher_logprob"] += float(teacher_lp[j])
            row["sampling_logprob"] += float(sampled_lp[j])
            row["beta_sum"] += float(beta[j])
            if store_topk:
                row["topk_ids"].append(top_ids[j])
                row["topk_logprobs"].append(top_lp[j])
        keep = ~torch.isin(token_cpu, eos)
        if step == max_new_tokens - 1 or not keep.any():
            break
        if not keep.all():  # finished rows leave the batch: the cache, the mask and the positions shrink with it
            kept = keep.nonzero().squeeze(-1)
            cache.reorder_cache(kept.to(device))
            active, token, mask, next_pos = active[kept], token[kept.to(device)], mask[kept.to(device)], next_pos[kept]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=next_pos[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        next_pos = next_pos + 1
    eos_set = set(eos.tolist())
    for row in rows:
        row["finished"] = bool(row["completion_ids"]) and row["completion_ids"][-1] in eos_set
        row["mean_selectivity"] = row.pop("beta_sum") / max(len(row["completion_ids"]), 1)
    return rows
