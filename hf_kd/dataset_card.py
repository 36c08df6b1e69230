"""Dataset card (README.md with YAML metadata) of an offline teacher-sample dataset, ready for ``push_to_hub``."""

from __future__ import annotations

import math
import os

import pyarrow as pa
import yaml

__all__ = ["dataset_statistics", "render_dataset_card", "write_dataset_card"]

PAPER = (
    'Sungmin Cha and Kyunghyun Cho, "Why Knowledge Distillation Works in Generative Models: A Minimal Working '
    'Explanation", NeurIPS 2025 (arXiv:2505.13111)'
)


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)  # YAML and JSON have no portable inf / nan


def dataset_statistics(table: pa.Table) -> dict:
    """Token counts and mean log-probabilities of a generated table (pure: columns in, numbers out)."""
    tokens = table.column("num_tokens").to_pylist()
    total = sum(tokens)
    teacher = sum(table.column("teacher_logprob").to_pylist())
    sampling = sum(table.column("sampling_logprob").to_pylist())
    betas = table.column("mean_selectivity").to_pylist()
    mean_beta = sum(b * t for b, t in zip(betas, tokens)) / max(total, 1)
    return {
        "num_samples": table.num_rows,
        "num_tokens": total,
        "mean_tokens_per_sample": total / max(table.num_rows, 1),
        "max_tokens_per_sample": max(tokens, default=0),
        "fraction_finished_with_eos": sum(table.column("finished").to_pylist()) / max(table.num_rows, 1),
        "teacher_logprob_per_token": _finite(teacher / max(total, 1)),
        "sampling_logprob_per_token": _finite(sampling / max(total, 1)),
        "mean_selectivity": _finite(mean_beta),
    }


def render_dataset_card(generation: dict, stats: dict) -> str:
    """README.md text: YAML metadata (``configs`` for `load_dataset`, ``hf_kd`` for provenance) and a summary.

    Args:
        generation (`dict`): the generation arguments (teacher, revision, selectivity, ..., command).
        stats (`dict`): from `dataset_statistics`.

    Returns:
        `str`: the card.
    """
    meta = {
        "tags": ["hf-kd", "knowledge-distillation", "synthetic", "teacher-samples"],
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(stats["num_samples"])],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
        "hf_kd": {**{k: _finite(v) if isinstance(v, float) else v for k, v in generation.items()}, **stats},
    }
    g = generation
    if g.get("target_entropy") is not None:
        knob = (
            f"target entropy {g['target_entropy']} nats/token (mean selectivity solved: {stats['mean_selectivity']})"
        )
    else:
        knob = f"selectivity {g['selectivity']} (temperature {g['temperature']})"
    prompts = g.get("prompt") if g.get("prompt") is not None else f"{g.get('num_prompts')} prompts"
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip(),
        "---",
        "",
        f"# Teacher samples of {g['teacher']}",
        "",
        f"{stats['num_samples']} completions ({stats['num_tokens']} tokens) sampled from `{g['teacher']}` "
        f"(revision `{g.get('revision')}`) for {prompts!r} at {knob}, top-k {g.get('top_k')}, top-p {g.get('top_p')}, "
        f"at most {g['max_new_tokens']} new tokens, seed {g['seed']}. Made with hf_kd for sequence-level knowledge "
        f"distillation ({PAPER}).",
        "",
        "Columns: `sample_id`, `prompt`, `completion` (text, special tokens skipped), `completion_ids` (ending with "
        "EOS when the teacher stopped: EOS is kept, unlike the paper's scripts), `num_tokens`, `finished`, "
        "`teacher_logprob` (sum under the unsharpened teacher), `sampling_logprob` (sum under the sampling "
        + (
            "distribution; NaN here: the vLLM backend returns the teacher's log-probs only)"
            if g.get("backend") == "vllm"
            else "distribution)"
        )
        + ", `mean_selectivity`"
        + (
            f", `topk_ids` / `topk_logprobs` (the teacher's top-{g['store_topk']} per token, unsharpened, not "
            "renormalised: the tail mass is 1 - sum exp).",
            ".",
        )[not g.get("store_topk")],
        "",
        f"{stats['fraction_finished_with_eos']:.1%} of the samples ended with EOS; mean length "
        f"{stats['mean_tokens_per_sample']:.1f} tokens; teacher log-prob {stats['teacher_logprob_per_token']} "
        "nats/token.",
        "",
        "Sample `i` depends only on `(seed, i)`: the dataset is identical across resumes and process counts.",
        "",
        "```bash",
        str(g.get("command")),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_dataset_card(output_dir: str, generation: dict, table: pa.Table) -> str:
    """Write ``output_dir/README.md`` atomically and return its path."""
    path = os.path.join(output_dir, "README.md")
    tmp = path + f".tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(render_dataset_card(generation, dataset_statistics(table)))
    os.replace(tmp, path)
    return path
