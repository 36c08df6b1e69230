"""The KV-cache decode loop every transformers sampling path uses (generation, trainer, metrics).

Each row owns a stream of uniforms from its own seed: at step t the token is the inverse-CDF draw of the sampling
law (`warp_logits`) at the row's t-th uniform. A row's tokens therefore depend on its seed and prefix only, not on
the batch it is in (up to float rounding of the logits), and rows leave the batch (cache, mask, positions) as soon
as they emit an EOS. The same forward pass gives the teacher's log-probs and top-k, so nothing is scored twice.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect

import torch

from ..fast_decode import fast_decode, fast_decode_enabled, log_once
from .fused_step import FusedStep, fused_step_support
from .padding import left_pad
from .params import SamplingParams
from .warp import mask_eos, warp_logits

__all__ = ["inverse_cdf", "sample_batch", "sample_seed", "stream_seed", "uniform_streams"]


def stream_seed(*keys) -> int:
    """A 63-bit seed derived from `keys` alone (SHA-256 of ``"hf_kd:k1:k2:..."``), for one row's own generator."""
    digest = hashlib.sha256(("hf_kd:" + ":".join(str(k) for k in keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_seed(seed: int, sample_id: int) -> int:
    """The seed of sample `sample_id` of a run seeded `seed` (``stream_seed(seed, sample_id)``)."""
    return stream_seed(int(seed), int(sample_id))


def uniform_streams(seeds: list[int], steps: int) -> torch.Tensor:
    """`(B, steps)` float64 uniforms: row i holds the first `steps` draws of a generator seeded ``seeds[i]``."""
    return torch.stack([torch.rand(steps, generator=torch.Generator().manual_seed(int(s))) for s in seeds]).double()


@functools.cache
def _cache_argument(forward_class: type) -> str:
    """The KV-cache argument of a model class's forward: ``cache`` in recent transformers, ``past_key_values`` in
    older ones (the old name still works on new versions, with a deprecation warning)."""
    return "cache" if "cache" in inspect.signature(forward_class.forward).parameters else "past_key_values"


def _cache_name(model) -> str:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT keeps the model inside
    return _cache_argument(type(base))


def _prefill(model, input_ids, attention_mask, position_ids):
    """Forward over the left-padded prompts: next-token logits `(B, V)` and the KV cache."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        logits_to_keep=1,
    )
    return out.logits[:, -1], getattr(out, _cache_name(model))


class _ForwardStep:
    """One token per running row through the model's own forward and its KV cache (`FusedStep`'s interface)."""

    def __init__(self, model, cache, attention_mask: torch.Tensor):
        self.model, self.cache, self.mask = model, cache, attention_mask

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only `rows` in the cache and the mask: finished rows leave the batch."""
        self.cache.reorder_cache(rows)
        self.mask = self.mask[rows]

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Next-token logits `(B, V)` after `tokens` `(B,)` at `positions` `(B,)` (the cache updated)."""
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=-1)
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=positions[:, None],
            use_cache=True,
            **{_cache_name(self.model): self.cache},
        )
        return out.logits[:, -1]


def _draw(logits, log_p, params: SamplingParams, uniforms, eos: list[int], step: int):
    """Token `(B,)`, its log-prob under the sampling law `(B,)` float64 CPU (0 when greedy) and the betas `(B,)`;
    `log_p` is ``log_softmax(logits)``, the law itself when `params` leave the logits as they are."""
    masked = step < params.min_new_tokens and bool(eos)
    if masked:
        logits = mask_eos(logits, eos)
    if params.untempered and not masked:
        log_s, beta = log_p, torch.ones(len(log_p), dtype=torch.float64)
    else:
        log_s, beta = warp_logits(logits, params, return_selectivity=True)
    if params.greedy:
        return logits.argmax(-1), torch.zeros(len(beta), dtype=torch.float64), beta
    token = inverse_cdf(log_s, uniforms)
    return token, log_s.gather(-1, token[:, None]).squeeze(-1).double().cpu(), beta


def inverse_cdf(log_s: torch.Tensor, u: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """The inverse-CDF draw: per row, the first id whose cumulative mass exceeds ``u * total`` (float64 sums).

    Computed by blocks, not by a cumulative sum over the whole vocabulary: ``p = exp(log s)``, float64 sums of
    blocks of `block` ids, the block where ``u * total`` falls, then a float64 cumulative sum inside that block only.
    Zero-probability ids are never drawn: the first id whose cumulative mass *exceeds* the target, and where float
    rounding leaves the target past a block's last sum, that block's last id with mass.

    Args:
        log_s (`torch.Tensor` of shape `(B, V)`): log-probabilities (``-inf`` allowed), float32 or float64.
        u (`torch.Tensor` of shape `(B,)`): uniforms in [0, 1).

    Returns:
        `torch.Tensor` of shape `(B,)`: the ids drawn (long).
    """
    rows, vocab = log_s.shape
    p = torch.nn.functional.pad(log_s.exp(), (0, (-vocab) % block))  # (B, nb * block), zero mass in the padding
    blocks = p.view(rows, -1, block)
    mass = blocks.sum(-1, dtype=torch.float64)  # (B, nb)
    cumulative = mass.cumsum(-1)
    target = u.to(cumulative) * cumulative[:, -1]
    last_block = mass.shape[1] - 1 - (mass > 0).flip(-1).int().argmax(-1)  # the last block with mass
    b = torch.searchsorted(cumulative, target[:, None], right=True).squeeze(-1).minimum(last_block)
    before = torch.where(b > 0, cumulative.gather(1, (b - 1).clamp_min(0)[:, None]).squeeze(1), 0.0)
    inside = blocks[torch.arange(rows, device=p.device), b]  # (B, block)
    j = torch.searchsorted(before[:, None] + inside.cumsum(-1, dtype=torch.float64), target[:, None], right=True)
    last_id = block - 1 - (inside > 0).flip(-1).int().argmax(-1)  # the block's last id with mass
    return b * block + j.squeeze(-1).minimum(last_id)


def _decode_step(model, cache, mask, max_new_tokens: int) -> FusedStep | _ForwardStep:
    """`FusedStep` where the fast decode path is on and the model qualifies, else the model's own forward."""
    if not fast_decode_enabled(mask.device):
        return _ForwardStep(model, cache, mask)
    why_not = fused_step_support(model) or (None if hasattr(cache, "layers") else "no per-layer KV cache")
    name = type(model).__name__
    log_once(
        f"hf_kd sampling: {name} decodes through its own forward ({why_not})."
        if why_not
        else f"hf_kd sampling: {name} decodes through hf_kd.sampling.FusedStep (a preallocated KV cache, "
        "$HF_KD_FAST_DECODE=off: the model's forward)."
    )
    return _ForwardStep(model, cache, mask) if why_not else FusedStep(model, cache, mask, max_new_tokens)


class _Rows:
    """Per-row accumulators of `sample_batch`'s output."""

    def __init__(self, n: int, store_topk: int):
        self.store_topk = store_topk
        self.rows = [
            {"completion_ids": [], "teacher_logprob": 0.0, "sampling_logprob": 0.0, "beta_sum": 0.0} for _ in range(n)
        ]
        if store_topk:
            for row in self.rows:
                row["topk_ids"], row["topk_logprobs"] = [], []

    def add(self, active, token, log_p, sampled_lp, beta, head_inputs=None) -> None:
        """Append one step for the running rows `active`; `log_p` `(B, V)` is the UNsharpened teacher's and
        `head_inputs` `(B, H)` (optional) what the output head read to give those logits."""
        if head_inputs is not None:
            for j, r in enumerate(active.tolist()):
                self.rows[r].setdefault("head_inputs", []).append(head_inputs[j])
        teacher_lp = log_p.gather(-1, token[:, None]).squeeze(-1).double().cpu()
        token = token.cpu()
        if self.store_topk:
            top_lp, top_ids = log_p.topk(self.store_topk, dim=-1)
            top_lp, top_ids = top_lp.cpu().tolist(), top_ids.int().cpu().tolist()
        for j, r in enumerate(active.tolist()):
            row = self.rows[r]
            row["completion_ids"].append(int(token[j]))
            row["teacher_logprob"] += float(teacher_lp[j])
            row["sampling_logprob"] += float(sampled_lp[j])
            row["beta_sum"] += float(beta[j])
            if self.store_topk:
                row["topk_ids"].append(top_ids[j])
                row["topk_logprobs"].append(top_lp[j])

    def finish(self, eos: set[int]) -> list[dict]:
        for row in self.rows:
            if "head_inputs" in row:
                row["head_inputs"] = torch.stack(row["head_inputs"])
            row["finished"] = bool(row["completion_ids"]) and row["completion_ids"][-1] in eos
            row["mean_selectivity"] = row.pop("beta_sum") / max(len(row["completion_ids"]), 1)
        return self.rows


@torch.no_grad()
def sample_batch(
    model,
    prompt_ids: list[list[int]],
    seeds: list[int],
    params: SamplingParams,
    *,
    eos_token_ids: list[int],
    pad_token_id: int,
    store_topk: int = 0,
    return_head_inputs: bool = False,
) -> list[dict]:
    """Sample one completion per prompt with a KV cache, scoring it as it goes.

    At step t with logits ``z`` of the running rows: ``log p = log_softmax(z)`` (the UNsharpened model),
    ``log s = warp_logits(z', params)`` with ``z' = z`` but EOS at ``-inf`` while ``t < min_new_tokens``, and
    ``x_t = F_s^{-1}(u_{i,t})`` with ``u_{i,t}`` the t-th uniform of row i's generator (``seeds[i]``); greedy
    decoding takes the argmax of ``z'``. A row stops at an EOS (kept) or after `max_new_tokens`, and leaves the batch.

    Args:
        model: a causal LM in eval mode (its device is used).
        prompt_ids (`list[list[int]]`): B tokenized prompts (non-empty).
        seeds (`list[int]`): B generator seeds, e.g. ``sample_seed(run_seed, sample_id)``.
        params (`SamplingParams`): the law and the lengths.
        eos_token_ids (`list[int]`): ids that end a completion (may be empty).
        pad_token_id (`int`): fills the left padding of the prompts.
        store_topk (`int`): keep the model's K most likely ids and log-probs per token (0: off).
        return_head_inputs (`bool`): keep, per token, the hidden state the output head read to score it (what a
            forward over prompt + completion gives at the completion's positions, up to float rounding): the
            trainer's loss reuses the teacher's instead of running the teacher again.

    Returns:
        `list[dict]`: per row ``completion_ids``, ``teacher_logprob``, ``sampling_logprob``, ``mean_selectivity``,
        ``finished`` (and ``topk_ids``, ``topk_logprobs``; ``head_inputs`` `(T, H)`).
    """
    heads = _HeadInputs(model) if return_head_inputs else contextlib.nullcontext()
    # The decode steps on the fast kernels where they are faster (CPUs).
    with fast_decode(model, "sampling"), heads:
        return _sample(model, prompt_ids, seeds, params, eos_token_ids, pad_token_id, store_topk, heads)


class _HeadInputs:
    """Context manager: ``last`` is the `(B, H)` last-position input of the model's output head at its latest call."""

    def __init__(self, model):
        self.head = model.get_output_embeddings()
        if self.head is None:
            raise ValueError(f"{type(model).__name__} has no output embeddings to read the head inputs from.")
        self.last = None

    def __enter__(self):
        self.handle = self.head.register_forward_hook(lambda module, args, out: setattr(self, "last", args[0][:, -1]))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _sample(model, prompt_ids, seeds, params, eos_token_ids, pad_token_id, store_topk, heads) -> list[dict]:
    device = next(model.parameters()).device
    ids, mask = left_pad(prompt_ids, pad_token_id)  # every row's next token sits at the same column
    position = (mask.cumsum(-1) - 1).clamp_min(0)
    uniforms = uniform_streams(seeds, params.max_new_tokens)
    eos_list = sorted({int(e) for e in eos_token_ids})
    eos = torch.tensor(eos_list, dtype=torch.long)
    rows, active = _Rows(len(prompt_ids), store_topk), torch.arange(len(prompt_ids))
    mask, next_pos = mask.to(device), position[:, -1].to(device) + 1
    logits, cache = _prefill(model, ids.to(device), mask, position.to(device))
    decode = _decode_step(model, cache, mask, params.max_new_tokens)
    for step in range(params.max_new_tokens):
        logits = logits.float()
        log_p = torch.log_softmax(logits, dim=-1)
        token, sampled_lp, beta = _draw(logits, log_p, params, uniforms[active, step], eos_list, step)
        rows.add(active, token, log_p, sampled_lp, beta, getattr(heads, "last", None))
        keep = ~torch.isin(token.cpu(), eos)
        if step == params.max_new_tokens - 1 or not keep.any():
            break
        if not keep.all():  # finished rows leave the batch: the cache, the mask and the positions shrink with it
            kept = keep.nonzero().squeeze(-1)
            decode.keep(kept.to(device))
            active, token, next_pos = active[kept], token[kept.to(device)], next_pos[kept]
        logits = decode(token, next_pos)
        next_pos = next_pos + 1
    return rows.finish(set(eos_list))
