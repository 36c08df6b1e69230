"""Markdown pieces of a model card: numbers, model links and the sentences that describe a run, all sanitised.

Pure functions of a [`DistillationResults`] (or of plain values); `hf_kd.cards.render` passes them to the template.
"""

from __future__ import annotations

import math

from ..sanitize import is_hub_id, is_local_path, local_basename, sanitize_text
from .schema import LOSS_DESCRIPTIONS, SOURCE_DESCRIPTIONS, DistillationResults

__all__ = [
    "DEMO_SAMPLES",
    "eval_table",
    "fmt",
    "fmt_shared",
    "init_md",
    "loss_md",
    "model_md",
    "sharpening_md",
    "source_md",
    "training_data_md",
    "training_size_md",
    "use_and_limitations",
]

# Below this many training samples a card says the student is a demonstration, not a model to use.
DEMO_SAMPLES = 10_000


def model_md(name: str | None, dataset: bool = False) -> str:
    """A model or dataset reference for the card: a Hub link, or the basename of a local path."""
    if not name:
        return "none"
    if is_hub_id(name):
        return f"[`{name}`](https://huggingface.co/{'datasets/' if dataset else ''}{name})"
    if is_local_path(name):
        return f"`{local_basename(name)}` ({'local data' if dataset else 'a local checkpoint'})"
    return f"`{sanitize_text(name)}`"


def fmt(x: float) -> str:
    """4 significant digits, or scientific notation below 1e-3."""
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.3e}"


def fmt_shared(x: float, *others: float) -> str:
    """`x` with 4 significant digits of the largest of `x, *others` (at least 3 decimals below 1,000), so that a value
    and its interval bounds share their decimals: ``-9.418 [-9.596, -9.220]``."""
    largest = max(abs(v) for v in (x, *others))
    if 0 < largest < 1e-3:
        return f"{x:.3e}"
    decimals = 3 if largest < 1 else max(0, 3 - math.floor(math.log10(largest)))
    return f"{x:.{decimals}f}"


def sharpening_md(r: DistillationResults) -> str:
    """How the teacher was sharpened: solved to a target entropy, greedy, none, or a fixed selectivity beta."""
    if r.target_entropy is not None:
        per = "per token" if r.per_token_selectivity else "per batch"
        return f"selectivity beta solved {per} so the teacher's mean token entropy is {fmt(r.target_entropy)} nats"
    if r.selectivity is None:
        return "not recorded"
    if math.isinf(r.selectivity):
        return "greedy teacher (selectivity beta = inf: argmax decoding)"
    # `temperature` divides both models' logits (TRL's meaning); selectivity scales the teacher's on top.
    temperature = r.loss_params.get("temperature", 1.0)
    if r.selectivity == 1.0:
        shared = "" if temperature == 1.0 else f", both models at temperature {fmt(temperature)}"
        return f"none (selectivity beta = 1: the teacher as is{shared})"
    return f"selectivity beta = {fmt(r.selectivity)} (teacher temperature {fmt(temperature / r.selectivity)})"


def source_md(source) -> str:
    """The completion source (or mixture) in words."""
    if isinstance(source, str):
        return f"`{source}`: {SOURCE_DESCRIPTIONS[source]}"
    parts = ", ".join(f"`{k}` {v:.0%}" for k, v in source.items())
    return f"a mixture drawn per generation batch: {parts}"


def loss_md(r: DistillationResults) -> str:
    """The loss in words, with its settings."""
    text = f"`{r.loss_type}`: {LOSS_DESCRIPTIONS[r.loss_type]}"
    if r.loss_params:
        text += " (" + ", ".join(f"{k}={v}" for k, v in r.loss_params.items()) + ")"
    return text


def training_size_md(r: DistillationResults) -> str:
    """``1,200 steps, 4,915,200 tokens, 38,400 samples`` (what was recorded)."""
    parts = [
        f"{n:,} {unit}"
        for n, unit in ((r.num_train_steps, "steps"), (r.num_train_tokens, "tokens"), (r.num_train_samples, "samples"))
        if n is not None
    ]
    return ", ".join(parts) or "not recorded"


def init_md(r: DistillationResults) -> str:
    """Where the student's weights came from (`hf_kd.students.STUDENT_INITS`), in words."""
    model = model_md(r.student_init)
    text = {
        "pretrained": f"pretrained weights of {model}",
        "scratch": f"from scratch (random weights, architecture of {model})",
        "slice": f"a layer slice of {model}",
    }[r.student_init_method]
    return f"{text}, {sanitize_text(r.student_init_details)}" if r.student_init_details else text


def training_data_md(r: DistillationResults) -> str:
    """Prompts, who sampled the completions, and how many training samples."""
    if r.datasets:
        prompts = ", ".join(model_md(d, dataset=True) for d in r.datasets)
    else:
        prompts = sanitize_text(r.train_prompts) if r.train_prompts else "not recorded"
    sources = [r.completion_source] if isinstance(r.completion_source, str) else list(r.completion_source)
    by = {
        "teacher": f"sampled by the teacher {model_md(r.teacher)} during training",
        "student": "sampled by the student during training (on-policy)",
        "dataset": "the dataset's `completion` column",
    }
    samples = f"{r.num_train_samples:,} training samples" if r.num_train_samples is not None else "count not recorded"
    return f"prompts: {prompts}; completions: {'; '.join(by[s] for s in sources)}; {samples}"


def use_and_limitations(r: DistillationResults) -> tuple[str, list[str]]:
    """The intended-use paragraph and the limitations that apply to this run."""
    use = (
        "Research on knowledge distillation of generative models: comparing students distilled at different teacher "
        "selectivities, reproducing or extending the precision-recall trade-off of Cha & Cho (2025), and as a "
        "starting point for further training."
    )
    limits = []
    if r.num_train_samples is not None and r.num_train_samples < DEMO_SAMPLES:
        steps = f"{r.num_train_steps:,} steps, " if r.num_train_steps is not None else ""
        limits.append(
            f"A demonstration-sized run ({steps}{r.num_train_samples:,} samples): it shows the pipeline and the "
            "direction of the trade-off, not a model to use for anything else; expect incoherent text."
        )
    if r.selectivity is not None and r.selectivity > 1 or r.target_entropy is not None:
        limits.append(
            "The teacher was sharpened: by design the student concentrates on the teacher's likely outputs (higher "
            "precision) and covers less of its distribution (lower recall, less diverse samples)."
        )
    limits.append(
        "It inherits the teacher's and the base model's biases, errors and language coverage; no safety tuning or "
        "evaluation beyond the numbers below was done."
    )
    if r.precision is not None:
        limits.append(
            f"Precision and recall are measured against one reference model ({model_md(r.reference_model)}), "
            "not against human judgement or downstream tasks; read them together, never one alone."
        )
    return use, limits


def _eval_intro(r: DistillationResults) -> str:
    if r.metric == "likelihood":
        what = f"mean log-likelihood per {r.unit}, higher is better"
        defs = (
            "precision = log-likelihood under the reference of the student's samples (are they plausible?); "
            "recall = log-likelihood under the student of the reference's samples (are they covered?)"
        )
    else:
        what = "fractions in [0, 1] from k-nearest-neighbour manifolds of sentence embeddings"
        defs = "precision = share of student samples on the reference manifold; recall = the converse"
    n = f"{r.num_eval_samples:,} samples per side" if r.num_eval_samples else "the evaluation samples"
    intro = f"Precision and recall (Cha & Cho, 2025) against the reference model {model_md(r.reference_model)}, "
    intro += f"{what}; {defs}. Measured on {n}"
    intro += f" (prompts: {model_md(r.eval_dataset, dataset=True)})" if r.eval_dataset else ""
    intro += (
        f"; {r.confidence:.0%} intervals are percentile bootstrap intervals over them."
        if r.precision_ci or r.recall_ci
        else "."
    )
    return intro


def eval_table(r: DistillationResults) -> tuple[str, list[dict[str, str]], str]:
    """The evaluation section: its intro sentence, the table rows (name, value, interval) and the interval header."""
    rows = []
    for side in ("precision", "recall"):
        value, ci = getattr(r, side), getattr(r, f"{side}_ci")
        if value is not None:
            shared = (value, *ci) if ci else (value,)
            interval = f"[{fmt_shared(ci[0], *shared)}, {fmt_shared(ci[1], *shared)}]" if ci else "not computed"
            rows.append({"name": side.capitalize(), "value": fmt_shared(*shared), "ci": interval})
    rows += [{"name": k, "value": fmt(v), "ci": "not computed"} for k, v in r.extra_metrics.items()]
    return _eval_intro(r), rows, f"{r.confidence:.0%} CI"
