"""Render a [`DistillationResults`] into a [`huggingface_hub.ModelCard`]: metadata, model-index and the template.

The template is `hf_kd/templates/model_card.md` (package data, so it works in non-editable installs);
`model_cards/template.md` at the repository top is a copy that a test keeps identical.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..citation import CITATION, PAPER_URL
from ..sanitize import is_hub_id, sanitize_text, sanitize_value
from . import markdown as md
from .schema import DistillationResults

__all__ = ["DEFAULT_TAGS", "KNOWN_MODELS", "render_model_card", "render_model_card_from_json", "template_path"]

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
DEFAULT_TAGS = ["hf_kd", "knowledge-distillation", "distillation", "text-generation"]
# What a card can state about well-known Hub models without reading their cards (no Hub access): id prefix -> facts.
KNOWN_MODELS = {"HuggingFaceTB/SmolLM2-": {"license": "apache-2.0", "language": ["en"]}}


def template_path(name: str = "model_card.md") -> Path:
    """Path of a card template shipped with hf_kd (``hf_kd/templates/<name>``)."""
    path = TEMPLATE_DIR / name
    if not path.is_file():
        raise ValueError(
            f"no card template {name!r} in {TEMPLATE_DIR.name}/; available: {sorted(os.listdir(TEMPLATE_DIR))}"
        )
    return path


def _known(name: str | None) -> dict[str, Any]:
    return next((facts for prefix, facts in KNOWN_MODELS.items() if name and name.startswith(prefix)), {})


def _inferred(r: DistillationResults, key: str):
    """`license` or `language` of the base model when `KNOWN_MODELS` knows it and the teacher's agrees (or there is
    none): a student inherits its weights' terms, and a teacher's outputs may carry their own."""
    base = _known(r.student_init).get(key) if r.student_init_method != "scratch" else None
    teacher = _known(r.teacher).get(key) if r.teacher else base
    if r.student_init_method == "scratch":
        return teacher
    return base if base == teacher else None


def _eval_results(r: DistillationResults) -> list[EvalResult]:
    """model-index entries: precision, recall and extra metrics, the interval bounds in `metric_args`."""
    reference = sanitize_text(r.reference_model) if r.reference_model else None
    common = {
        "task_type": "text-generation",
        "dataset_type": r.eval_dataset,
        "dataset_name": f"Samples of {reference or 'the reference model'}",
    }
    dataset_args = {k: v for k, v in (("reference_model", reference), ("num_samples", r.num_eval_samples)) if v}
    results = []
    for side in ("precision", "recall"):
        value, ci = getattr(r, side), getattr(r, f"{side}_ci")
        if value is None:
            continue
        args = {"unit": r.unit, "metric": r.metric}
        if ci is not None:
            args.update(confidence=r.confidence, ci_low=ci[0], ci_high=ci[1])
        results.append(
            EvalResult(
                **common,
                task_name="Knowledge distillation precision-recall",
                dataset_args=dataset_args or None,
                metric_type=f"kd_{side}",
                metric_name=f"{side.capitalize()} ({r.metric}, per {r.unit})",
                metric_value=value,
                metric_args=args,
                source_name="Precision/recall of Cha & Cho (2025), computed with hf_kd",
                source_url=PAPER_URL,
            )
        )
    results += [
        EvalResult(**common, metric_type=f"kd_{k}", metric_name=k, metric_value=v) for k, v in r.extra_metrics.items()
    ]
    return results


def _evaluation_metadata(r: DistillationResults) -> dict[str, Any]:
    """Precision, recall and their intervals for the card's metadata when they cannot go into model-index."""
    out = {"metric": r.metric, "unit": r.unit, "num_samples": r.num_eval_samples, "confidence": r.confidence}
    for side in ("precision", "recall"):
        value, ci = getattr(r, side), getattr(r, f"{side}_ci")
        if value is not None:
            out[side] = value
            out[f"{side}_ci"] = list(ci) if ci else None
    out.update(r.extra_metrics)
    return {k: v for k, v in out.items() if v is not None}


def _card_data(r: DistillationResults, title: str, evals: list[EvalResult], evaluated: bool, tags) -> ModelCardData:
    """The card's YAML metadata (see [`render_model_card`])."""
    base_model = r.student_init if r.student_init_method != "scratch" and is_hub_id(r.student_init) else None
    extra_meta = {"base_model_relation": "adapter"} if base_model and r.adapter else {}
    summary = {
        "teacher": r.teacher,
        "selectivity": ("inf" if math.isinf(r.selectivity) else r.selectivity) if r.selectivity is not None else None,
        "target_entropy": r.target_entropy,
        "completion_source": r.completion_source,
        "loss_type": r.loss_type,
        "student_init_method": r.student_init_method,
        "reference_model": r.reference_model,
        "evaluation": _evaluation_metadata(r) if evaluated and not evals else None,
    }
    language = r.language or _inferred(r, "language")
    return ModelCardData(
        model_name=title,
        base_model=base_model,
        datasets=[d for d in r.datasets if is_hub_id(d)] or None,
        eval_results=evals or None,
        library_name="transformers",
        license=r.license or _inferred(r, "license"),
        language=language or None,
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys(DEFAULT_TAGS + list(tags or []))),
        distillation=sanitize_value({k: v for k, v in summary.items() if v is not None}),
        **extra_meta,
    )


def _template_variables(r: DistillationResults, title: str, repo_id: str | None, in_model_index: bool, evaluated):
    """The variables documented in ``templates/model_card.md`` (Markdown, not yet sanitised)."""
    eval_intro, eval_rows, ci_header = md.eval_table(r) if evaluated else ("", [], "")
    use, limitations = md.use_and_limitations(r)
    license_id = r.license or _inferred(r, "license")
    return {
        "title": title,
        "teacher_md": md.model_md(r.teacher) if r.teacher else "none (trained on dataset completions)",
        "student_init_md": md.init_md(r),
        "adapter": r.adapter,
        "sharpening_md": md.sharpening_md(r),
        "completion_source_md": md.source_md(r.completion_source),
        "loss_md": md.loss_md(r),
        "datasets_md": md.training_data_md(r),
        "license_md": f"`{license_id}`" if license_id else "not recorded: set `license` before publishing",
        "intended_use": use,
        "limitations": limitations,
        "paper_url": PAPER_URL,
        "in_model_index": in_model_index,
        "training_size_md": md.training_size_md(r),
        "seeds_md": ", ".join(map(str, r.seeds)),
        "has_eval": evaluated,
        "eval_intro": eval_intro,
        "eval_rows": eval_rows,
        "ci_header": ci_header,
        "command": r.command,
        "usage_model_id": repo_id or "path/to/this/model",
        "framework_versions_md": "\n".join(f"- {k}: {v}" for k, v in r.framework_versions.items()),
        "citation": CITATION,
    }


def render_model_card(
    results: DistillationResults | dict[str, Any],
    repo_id: str | None = None,
    template: str | os.PathLike | None = None,
    tags: list[str] | None = None,
) -> ModelCard:
    """Render the model card of a distilled student.

    Args:
        results ([`DistillationResults`] or `dict`): what the run recorded (a dict goes through `from_dict`).
        repo_id (`str`, *optional*): the Hub repository the student goes to (usage snippet and default title).
        template (`str` or `os.PathLike`, *optional*): a Jinja template path; defaults to hf_kd's
            ``templates/model_card.md``. It receives the variables documented in that file.
        tags (`list[str]`, *optional*): extra tags next to ``hf_kd``, ``knowledge-distillation``, ...

    Returns:
        [`huggingface_hub.ModelCard`]: metadata with `base_model` (a Hub-id student init), `datasets` (Hub ids),
        `library_name="transformers"`, `pipeline_tag="text-generation"`, tags, a `distillation` summary and, when
        evaluated, a `model-index` with `kd_precision` / `kd_recall`; the text is sanitised (see [`sanitize_text`]).
    """
    r = results if isinstance(results, DistillationResults) else DistillationResults.from_dict(results)
    if repo_id is not None and not is_hub_id(repo_id):
        raise ValueError(f"repo_id={repo_id!r} is not a Hub repository id; use 'owner/name'.")
    title = sanitize_text(r.model_name or (repo_id.split("/")[-1] if repo_id else "Distilled student"))
    evaluated = r.precision is not None or r.recall is not None or bool(r.extra_metrics)
    # model-index names a Hub dataset; samples of a reference model are not one: their numbers go under distillation.
    evals = _eval_results(r) if evaluated and is_hub_id(r.eval_dataset) else []
    card_data = _card_data(r, title, evals, evaluated, tags)
    variables = _template_variables(r, title, repo_id, bool(evals), evaluated)
    if template is not None and not os.path.isfile(template):
        raise ValueError(f"card template {str(template)!r} does not exist; give a Jinja template file, or none.")
    card = ModelCard.from_template(
        card_data, template_path=str(template or template_path("model_card.md")), **sanitize_value(variables)
    )
    # Belt and braces: anything a custom template or a field we did not anticipate carried in is cleaned too.
    return ModelCard(sanitize_text(str(card)))


def render_model_card_from_json(path: str | os.PathLike, **kwargs) -> ModelCard:
    """[`render_model_card`] of a results JSON file (see [`DistillationResults`] for its keys)."""
    return render_model_card(DistillationResults.from_json(path), **kwargs)
