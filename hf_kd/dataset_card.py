"""Dataset card of an offline teacher-sample dataset: a `huggingface_hub.DatasetCard`, ready for ``push_to_hub``.

The metadata (``configs`` for `load_dataset`, ``hf_kd`` for provenance: the generation arguments and statistics) is a
`DatasetCardData`; the text is the Jinja template ``hf_kd/templates/dataset_card.md``, as for model cards.
"""

from __future__ import annotations

import math
import os

import pyarrow as pa
from huggingface_hub import DatasetCard, DatasetCardData

from .cards.render import template_path
from .citation import PAPER_REFERENCE

__all__ = ["dataset_card_data", "dataset_statistics", "render_dataset_card", "write_dataset_card"]

TAGS = ["hf-kd", "knowledge-distillation", "synthetic", "teacher-samples"]
DATA_FILES = [{"split": "train", "path": "data/train-*.parquet"}]


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


def dataset_card_data(generation: dict, stats: dict) -> DatasetCardData:
    """The card's metadata: tags, task and size categories, the ``configs`` that `load_dataset` reads, and ``hf_kd``
    (the generation arguments, then the statistics; infinities and NaNs as strings)."""
    return DatasetCardData(
        tags=list(TAGS),
        task_categories=["text-generation"],
        size_categories=[_size_category(stats["num_samples"])],
        configs=[{"config_name": "default", "data_files": DATA_FILES}],
        hf_kd={**{k: _finite(v) if isinstance(v, float) else v for k, v in generation.items()}, **stats},
    )


def _template_variables(g: dict, stats: dict) -> dict:
    """The variables of ``templates/dataset_card.md``, formatted."""
    if g.get("target_entropy") is not None:
        knob = (
            f"target entropy {g['target_entropy']} nats/token (mean selectivity solved: {stats['mean_selectivity']})"
        )
    else:
        knob = f"selectivity {g['selectivity']} (temperature {g['temperature']})"
    prompts = g.get("prompt") if g.get("prompt") is not None else f"{g.get('num_prompts')} prompts"
    return {
        "teacher": g["teacher"],
        "num_samples": stats["num_samples"],
        "num_tokens": stats["num_tokens"],
        "revision": str(g.get("revision")),
        "prompts_md": repr(prompts),
        "sharpening_md": knob,
        "top_k": str(g.get("top_k")),
        "top_p": str(g.get("top_p")),
        "max_new_tokens": g["max_new_tokens"],
        "seed": g["seed"],
        "paper_reference": PAPER_REFERENCE,
        "vllm": g.get("backend") == "vllm",
        "store_topk": g.get("store_topk"),
        "finished_md": f"{stats['fraction_finished_with_eos']:.1%}",
        "mean_length_md": f"{stats['mean_tokens_per_sample']:.1f}",
        "teacher_logprob": str(stats["teacher_logprob_per_token"]),
        "command": str(g.get("command")),
    }


def render_dataset_card(generation: dict, stats: dict) -> DatasetCard:
    """The README.md of a teacher-sample dataset.

    Args:
        generation (`dict`): the generation arguments (teacher, revision, selectivity, ..., command).
        stats (`dict`): from `dataset_statistics`.

    Returns:
        [`huggingface_hub.DatasetCard`]: metadata as in [`dataset_card_data`], and a summary of how the samples were
        drawn, their columns and statistics, and the command that made them.
    """
    return DatasetCard.from_template(
        dataset_card_data(generation, stats),
        template_path=str(template_path("dataset_card.md")),
        **_template_variables(generation, stats),
    )


def write_dataset_card(output_dir: str, generation: dict, table: pa.Table) -> str:
    """Write ``output_dir/README.md`` atomically and return its path."""
    path = os.path.join(output_dir, "README.md")
    tmp = path + f".tmp-{os.getpid()}"
    render_dataset_card(generation, dataset_statistics(table)).save(tmp)
    os.replace(tmp, path)
    return path
