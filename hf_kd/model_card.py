"""Model cards for distilled students: a results schema and a Jinja template rendered with huggingface_hub.

The recipes write one results JSON per trained student ([`DistillationResults`], schema below); `hf-kd card` and
[`render_model_card`] turn it into a [`huggingface_hub.ModelCard`] whose metadata carries `base_model`, `datasets`,
tags, `license` and `language` (given, or known for the base model and teacher, e.g. SmolLM2: apache-2.0, en), the
training data, intended use and limitations, and precision and recall with their confidence intervals: in a
`model-index` (metric types `kd_precision`, `kd_recall`) when the evaluation ran on a Hub dataset, else under
`distillation.evaluation` (model-index names a Hub dataset; samples of a reference model are not one).
[`write_trainer_model_card`] is what `DistillationTrainer.create_model_card` calls (no evaluation needed).

Nothing local leaks into a card: absolute paths become their basename and token-looking strings are dropped
(`hf_kd.sanitize.sanitize_text`); `hf_kd.sanitize.find_leaks` checks a finished card.

The template is `hf_kd/templates/model_card.md` (package data, so it works in non-editable installs);
`model_cards/template.md` at the repository top is a copy that a test keeps identical.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .sanitize import (
    current_command,
    is_hub_id,
    is_local_path,
    local_basename,
    sanitize_text,
    sanitize_value,
)
from .typecheck import check_field_types

__all__ = [
    "CITATION",
    "DistillationResults",
    "add_card_arguments",
    "card_from_args",
    "framework_versions",
    "load_results_file",
    "render_model_card",
    "render_model_card_from_json",
    "results_from_trainer",
    "template_path",
    "write_trainer_model_card",
]

TEMPLATE_DIR = Path(__file__).parent / "templates"
SCHEMA_VERSION = 1
PAPER_URL = "https://arxiv.org/abs/2505.13111"
CITATION = """@inproceedings{cha2025why,
  title         = {Why Knowledge Distillation Works in Generative Models: A Minimal Working Explanation},
  author        = {Cha, Sungmin and Cho, Kyunghyun},
  booktitle     = {Advances in Neural Information Processing Systems (NeurIPS)},
  year          = {2025},
  eprint        = {2505.13111},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2505.13111}
}"""

# Kept in step with hf_kd.losses.LOSS_TYPES and hf_kd.distillation_config.COMPLETION_SOURCES by tests (importing
# them here would pull torch and trl into `hf-kd card`).
LOSS_DESCRIPTIONS = {
    "nll": "negative log-likelihood of the completions (sequence-level KD)",
    "forward_kl": "forward KL(teacher || student) per token",
    "reverse_kl": "reverse KL(student || teacher) per token",
    "generalized_jsd": "generalized Jensen-Shannon divergence per token",
    "skew_forward_kl": "skew forward KL (DistiLLM) per token",
    "skew_reverse_kl": "skew reverse KL (DistiLLM) per token",
    "tvd": "total variation distance per token",
}
SOURCE_DESCRIPTIONS = {
    "student": "the student samples the completions (on-policy)",
    "teacher": "the sharpened teacher samples the completions (online sequence-level KD)",
    "dataset": "the dataset's `completion` column (off-policy)",
}
INIT_METHODS = ("pretrained", "from_scratch", "layer_slice")
METRICS = ("likelihood", "embedding")
DEFAULT_TAGS = ["hf_kd", "knowledge-distillation", "distillation", "text-generation"]
# What a card can state about well-known Hub models without reading their cards (no Hub access): id prefix -> facts.
KNOWN_MODELS = {"HuggingFaceTB/SmolLM2-": {"license": "apache-2.0", "language": ["en"]}}
# Below this many training samples a card says the student is a demonstration, not a model to use.
DEMO_SAMPLES = 10_000


def _model_md(name: str | None, dataset: bool = False) -> str:
    """A model or dataset reference for the card: a Hub link, or the basename of a local path."""
    if not name:
        return "none"
    if is_hub_id(name):
        return f"[`{name}`](https://huggingface.co/{'datasets/' if dataset else ''}{name})"
    if is_local_path(name):
        return f"`{local_basename(name)}` ({'local data' if dataset else 'a local checkpoint'})"
    return f"`{sanitize_text(name)}`"


# ------------------------------------------------------------------------------------------------- results schema
def _finite(name: str, value, low=-math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise ValueError(f"{name} must be a finite number{f' >= {low}' if low > -math.inf else ''} (got {value!r}).")
    return float(value)


def _count(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer or null (got {value!r}).")
    return value


@dataclass
class DistillationResults:
    """What a recipe writes after distilling one student (the results JSON; also what a model card is built from).

    Fields map one-to-one to JSON keys; `to_json` / `from_json` read and write them, and unknown keys are refused so
    typos do not vanish. Free-form extras go in `extra` (kept, not rendered).

    Args:
        student_init (`str`): where the student's weights came from: a Hub id or local path.
        student_init_method (`str`): ``"pretrained"`` (weights of `student_init`), ``"from_scratch"`` (its
            architecture, random weights) or ``"layer_slice"`` (a subset of `student_init`'s layers).
        student_init_details (`str`, *optional*): e.g. ``"every 2nd layer"`` or ``"12 layers, hidden 576"``.
        teacher (`str`, *optional*): teacher Hub id or path (``None`` only for `nll` on dataset completions).
        adapter (`str`, *optional*): e.g. ``"LoRA r=16, alpha=32"`` when a PEFT adapter was trained.
        datasets (`list[str]`): training datasets (Hub ids go into the card's metadata).
        train_prompts (`str`, *optional*): where the training prompts came from when no dataset names them, e.g.
            ``'the prompt "The", 96 copies'``.
        selectivity (`float`, *optional*): the teacher's fixed sharpening beta (``inf``: greedy teacher).
        target_entropy (`float`, *optional*): instead, beta solved to this mean token entropy (nats).
        per_token_selectivity (`bool`): with `target_entropy`, one beta per token instead of per batch.
        completion_source (`str` or `dict`): ``"student"``, ``"teacher"``, ``"dataset"`` or a mixture.
        loss_type (`str`): one of `hf_kd.losses.LOSS_TYPES`; `loss_params` its settings (e.g. ``{"beta": 0.5}``).
        num_train_steps, num_train_tokens, num_train_samples (`int`, *optional*): training size.
        precision, recall (`float`, *optional*): precision and recall against `reference_model`
            (likelihood metric: mean log-likelihood per `unit`, higher is better; embedding metric: fractions).
        precision_ci, recall_ci (`[low, high]`, *optional*): their `confidence` bootstrap intervals.
        metric (`str`): ``"likelihood"`` or ``"embedding"``; `unit`: ``"token"``, ``"byte"``, ...
        reference_model (`str`, *optional*): p*, the model the student is measured against.
        eval_dataset (`str`, *optional*): prompts/dataset the evaluation samples were conditioned on.
        num_eval_samples (`int`, *optional*): samples drawn on each side; `seeds`: the run's seeds.
        extra_metrics (`dict[str, float]`): more numbers (e.g. density, coverage), rendered and put in model-index.
        command (`str`, *optional*): the exact command that trained the student.
        model_name, license (`str`, *optional*): card title and license id (Hub license ids, e.g. ``"apache-2.0"``;
            default: the base model's and teacher's when `KNOWN_MODELS` knows them and they agree).
        language (`list[str]`): ISO 639-1 codes (default: as for `license`).
        framework_versions (`dict[str, str]`): library versions at training time ([`framework_versions`]).
    """

    student_init: str
    student_init_method: str = "pretrained"
    student_init_details: str | None = None
    teacher: str | None = None
    adapter: str | None = None
    datasets: list[str] = field(default_factory=list)
    train_prompts: str | None = None
    selectivity: float | None = 1.0
    target_entropy: float | None = None
    per_token_selectivity: bool = False
    completion_source: str | dict[str, float] = "student"
    loss_type: str = "generalized_jsd"
    loss_params: dict[str, Any] = field(default_factory=dict)
    num_train_steps: int | None = None
    num_train_tokens: int | None = None
    num_train_samples: int | None = None
    precision: float | None = None
    precision_ci: tuple[float, float] | None = None
    recall: float | None = None
    recall_ci: tuple[float, float] | None = None
    metric: str = "likelihood"
    unit: str = "token"
    confidence: float = 0.95
    reference_model: str | None = None
    eval_dataset: str | None = None
    num_eval_samples: int | None = None
    seeds: list[int] = field(default_factory=list)
    extra_metrics: dict[str, float] = field(default_factory=dict)
    command: str | None = None
    model_name: str | None = None
    license: str | None = None
    language: list[str] = field(default_factory=list)
    framework_versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if not isinstance(self.student_init, str) or not self.student_init:
            raise ValueError("student_init must name the student's initialisation (a Hub id or a local path).")
        if self.student_init_method not in INIT_METHODS:
            raise ValueError(
                f"student_init_method={self.student_init_method!r} is unknown; use one of {INIT_METHODS}."
            )
        if self.selectivity in ("inf", "Infinity"):
            self.selectivity = math.inf
        check_field_types(self, "results")  # before any use: a string `datasets` would be read letter by letter
        if self.selectivity is not None and not (isinstance(self.selectivity, (int, float)) and self.selectivity > 0):
            raise ValueError(f"selectivity must be > 0 or null (got {self.selectivity!r}); 1.0 is the plain teacher.")
        if self.target_entropy is not None:
            _finite("target_entropy", self.target_entropy, low=0.0)
            if self.selectivity not in (None, 1.0):
                raise ValueError("set either selectivity or target_entropy, not both (target_entropy solves beta).")
        self._check_source()
        if self.loss_type not in LOSS_DESCRIPTIONS:
            raise ValueError(f"loss_type={self.loss_type!r} is unknown; use one of {tuple(LOSS_DESCRIPTIONS)}.")
        for name in ("num_train_steps", "num_train_tokens", "num_train_samples", "num_eval_samples"):
            _count(name, getattr(self, name))
        for side in ("precision", "recall"):
            value, ci = getattr(self, side), getattr(self, f"{side}_ci")
            if value is not None:
                _finite(side, value)
            if ci is not None:
                if value is None or not isinstance(ci, (list, tuple)) or len(ci) != 2:
                    raise ValueError(f"{side}_ci must be [low, high] next to a {side} value (got {ci!r}).")
                low, high = (_finite(f"{side}_ci", c) for c in ci)
                if low > high:
                    raise ValueError(f"{side}_ci must be [low, high] with low <= high (got {list(ci)}).")
                setattr(self, f"{side}_ci", (low, high))
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r} is unknown; use one of {METRICS}.")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1) (got {self.confidence}); 0.95 is a 95% interval.")
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise ValueError(f"seeds must be a list of integers (got {self.seeds!r}).")
        for name, value in self.extra_metrics.items():
            _finite(f"extra_metrics[{name!r}]", value)
        if not all(isinstance(code, str) and code for code in self.language):
            raise ValueError(f"language must be a list of ISO 639-1 codes such as ['en'] (got {self.language!r}).")

    def _check_source(self):
        source = self.completion_source
        if isinstance(source, str):
            if source not in SOURCE_DESCRIPTIONS:
                raise ValueError(f"completion_source={source!r} is unknown; use one of {tuple(SOURCE_DESCRIPTIONS)}.")
            return
        if not isinstance(source, dict) or not source or set(source) - set(SOURCE_DESCRIPTIONS):
            raise ValueError(f"completion_source must be one of {tuple(SOURCE_DESCRIPTIONS)} or a dict over them.")
        if not math.isclose(sum(source.values()), 1.0) or min(source.values()) < 0:
            raise ValueError(f"completion_source probabilities must be >= 0 and sum to 1 (got {source}).")

    # ------------------------------------------------------------------------------------------- (de)serialising
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillationResults:
        """Build from a results dict (as written by `to_dict`); unknown keys raise a ValueError naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"results must be a JSON object of fields (got a {type(data).__name__}).")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown results keys {unknown}; the schema has {sorted(names)}. Put free-form values under 'extra'."
            )
        version = data.get("schema_version", SCHEMA_VERSION)
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise ValueError(f"results schema_version {data['schema_version']} is newer than {SCHEMA_VERSION}.")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (an infinite selectivity is written as the string ``"inf"``)."""
        data = dataclasses.asdict(self)
        for side in ("precision_ci", "recall_ci"):
            data[side] = list(data[side]) if data[side] is not None else None
        if data["selectivity"] is not None and math.isinf(data["selectivity"]):
            data["selectivity"] = "inf"
        return data

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> DistillationResults:
        """Read a results JSON written by [`to_json`]."""
        return cls.from_dict(_read_json(path))

    def to_json(self, path: str | os.PathLike) -> str:
        """Write the results JSON (indented, UTF-8); returns the path."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
        return str(path)

    def with_precision_recall(self, result: dict[str, Any], reference_model: str | None = None) -> DistillationResults:
        """A copy holding the output of `hf_kd.metrics.precision_recall` (values, intervals, unit, counts)."""
        updates = {key: result[key] for key in ("precision", "recall", "unit", "confidence") if key in result}
        updates.update({f"{s}_ci": tuple(result[f"{s}_ci"]) for s in ("precision", "recall") if f"{s}_ci" in result})
        if "precision_num_samples" in result:
            updates["num_eval_samples"] = int(result["precision_num_samples"])
        if reference_model is not None:
            updates["reference_model"] = reference_model
        return dataclasses.replace(self, **updates)


# ------------------------------------------------------------------------------------------------------ helpers
def framework_versions() -> dict[str, str]:
    """Installed versions of hf_kd and the libraries it trains with (read from package metadata, nothing imported)."""
    out = {}
    for dist in ("hf-kd", "transformers", "trl", "torch", "peft", "datasets", "accelerate", "huggingface_hub"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def template_path(name: str = "model_card.md") -> Path:
    """Path of a card template shipped with hf_kd (``hf_kd/templates/<name>``)."""
    path = TEMPLATE_DIR / name
    if not path.is_file():
        raise ValueError(
            f"no card template {name!r} in {TEMPLATE_DIR.name}/; available: {sorted(os.listdir(TEMPLATE_DIR))}"
        )
    return path


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.3e}"


def _fmt_shared(x: float, *others: float) -> str:
    """`x` with 4 significant digits of the largest of `x, *others` (at least 3 decimals below 1,000), so that a value
    and its interval bounds share their decimals: ``-9.418 [-9.596, -9.220]``."""
    largest = max(abs(v) for v in (x, *others))
    if 0 < largest < 1e-3:
        return f"{x:.3e}"
    decimals = 3 if largest < 1 else max(0, 3 - math.floor(math.log10(largest)))
    return f"{x:.{decimals}f}"


def _sharpening_md(r: DistillationResults) -> str:
    if r.target_entropy is not None:
        per = "per token" if r.per_token_selectivity else "per batch"
        return f"selectivity beta solved {per} so the teacher's mean token entropy is {_fmt(r.target_entropy)} nats"
    if r.selectivity is None:
        return "not recorded"
    if math.isinf(r.selectivity):
        return "greedy teacher (selectivity beta = inf: argmax decoding)"
    # `temperature` divides both models' logits (TRL's meaning); selectivity scales the teacher's on top.
    temperature = r.loss_params.get("temperature", 1.0)
    if r.selectivity == 1.0:
        shared = "" if temperature == 1.0 else f", both models at temperature {_fmt(temperature)}"
        return f"none (selectivity beta = 1: the teacher as is{shared})"
    return f"selectivity beta = {_fmt(r.selectivity)} (teacher temperature {_fmt(temperature / r.selectivity)})"


def _source_md(source) -> str:
    if isinstance(source, str):
        return f"`{source}`: {SOURCE_DESCRIPTIONS[source]}"
    parts = ", ".join(f"`{k}` {v:.0%}" for k, v in source.items())
    return f"a mixture drawn per generation batch: {parts}"


def _training_size_md(r: DistillationResults) -> str:
    parts = [
        f"{n:,} {unit}"
        for n, unit in ((r.num_train_steps, "steps"), (r.num_train_tokens, "tokens"), (r.num_train_samples, "samples"))
        if n is not None
    ]
    return ", ".join(parts) or "not recorded"


def _init_md(r: DistillationResults) -> str:
    model = _model_md(r.student_init)
    text = {
        "pretrained": f"pretrained weights of {model}",
        "from_scratch": f"from scratch (random weights, architecture of {model})",
        "layer_slice": f"a layer slice of {model}",
    }[r.student_init_method]
    return f"{text}, {sanitize_text(r.student_init_details)}" if r.student_init_details else text


def _known(name: str | None) -> dict[str, Any]:
    return next((facts for prefix, facts in KNOWN_MODELS.items() if name and name.startswith(prefix)), {})


def _inferred(r: DistillationResults, key: str):
    """`license` or `language` of the base model when `KNOWN_MODELS` knows it and the teacher's agrees (or there is
    none): a student inherits its weights' terms, and a teacher's outputs may carry their own."""
    base = _known(r.student_init).get(key) if r.student_init_method != "from_scratch" else None
    teacher = _known(r.teacher).get(key) if r.teacher else base
    if r.student_init_method == "from_scratch":
        return teacher
    return base if base == teacher else None


def _training_data_md(r: DistillationResults) -> str:
    if r.datasets:
        prompts = ", ".join(_model_md(d, dataset=True) for d in r.datasets)
    else:
        prompts = sanitize_text(r.train_prompts) if r.train_prompts else "not recorded"
    sources = [r.completion_source] if isinstance(r.completion_source, str) else list(r.completion_source)
    by = {
        "teacher": f"sampled by the teacher {_model_md(r.teacher)} during training",
        "student": "sampled by the student during training (on-policy)",
        "dataset": "the dataset's `completion` column",
    }
    samples = f"{r.num_train_samples:,} training samples" if r.num_train_samples is not None else "count not recorded"
    return f"prompts: {prompts}; completions: {'; '.join(by[s] for s in sources)}; {samples}"


def _use_and_limitations(r: DistillationResults) -> tuple[str, list[str]]:
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
            f"Precision and recall are measured against one reference model ({_model_md(r.reference_model)}), "
            "not against human judgement or downstream tasks; read them together, never one alone."
        )
    return use, limits


def _eval_results(r: DistillationResults) -> list[EvalResult]:
    """model-index entries: precision, recall and extra metrics, the interval bounds in `metric_args`."""
    dataset_type = r.eval_dataset
    reference = sanitize_text(r.reference_model) if r.reference_model else None
    dataset_name = f"Samples of {reference or 'the reference model'}"
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
                task_type="text-generation",
                task_name="Knowledge distillation precision-recall",
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_args=dataset_args or None,
                metric_type=f"kd_{side}",
                metric_name=f"{side.capitalize()} ({r.metric}, per {r.unit})",
                metric_value=value,
                metric_args=args,
                source_name="Precision/recall of Cha & Cho (2025), computed with hf_kd",
                source_url=PAPER_URL,
            )
        )
    common = {"task_type": "text-generation", "dataset_type": dataset_type, "dataset_name": dataset_name}
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


def _eval_table(r: DistillationResults) -> tuple[str, list[dict[str, str]], str]:
    pct = f"{r.confidence:.0%}"
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
    intro = f"Precision and recall (Cha & Cho, 2025) against the reference model {_model_md(r.reference_model)}, "
    intro += f"{what}; {defs}. Measured on {n}"
    intro += f" (prompts: {_model_md(r.eval_dataset, dataset=True)})" if r.eval_dataset else ""
    intro += (
        f"; {pct} intervals are percentile bootstrap intervals over them." if r.precision_ci or r.recall_ci else "."
    )
    rows = []
    for side in ("precision", "recall"):
        value, ci = getattr(r, side), getattr(r, f"{side}_ci")
        if value is not None:
            shared = (value, *ci) if ci else (value,)
            interval = f"[{_fmt_shared(ci[0], *shared)}, {_fmt_shared(ci[1], *shared)}]" if ci else "not computed"
            rows.append({"name": side.capitalize(), "value": _fmt_shared(*shared), "ci": interval})
    rows += [{"name": k, "value": _fmt(v), "ci": "not computed"} for k, v in r.extra_metrics.items()]
    return intro, rows, f"{pct} CI"


# ---------------------------------------------------------------------------------------------------- rendering
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
    license_id = r.license or _inferred(r, "license")
    language = r.language or _inferred(r, "language")
    base_model = r.student_init if r.student_init_method != "from_scratch" and is_hub_id(r.student_init) else None
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
    card_data = ModelCardData(
        model_name=title,
        base_model=base_model,
        datasets=[d for d in r.datasets if is_hub_id(d)] or None,
        eval_results=evals or None,
        library_name="transformers",
        license=license_id,
        language=language or None,
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys(DEFAULT_TAGS + list(tags or []))),
        distillation=sanitize_value({k: v for k, v in summary.items() if v is not None}),
        **extra_meta,
    )
    eval_intro, eval_rows, ci_header = _eval_table(r) if evaluated else ("", [], "")
    use, limitations = _use_and_limitations(r)
    loss_md = f"`{r.loss_type}`: {LOSS_DESCRIPTIONS[r.loss_type]}"
    if r.loss_params:
        loss_md += " (" + ", ".join(f"{k}={v}" for k, v in r.loss_params.items()) + ")"
    variables = {
        "title": title,
        "teacher_md": _model_md(r.teacher) if r.teacher else "none (trained on dataset completions)",
        "student_init_md": _init_md(r),
        "adapter": r.adapter,
        "sharpening_md": _sharpening_md(r),
        "completion_source_md": _source_md(r.completion_source),
        "loss_md": loss_md,
        "datasets_md": _training_data_md(r),
        "license_md": f"`{license_id}`" if license_id else "not recorded: set `license` before publishing",
        "intended_use": use,
        "limitations": limitations,
        "paper_url": PAPER_URL,
        "in_model_index": bool(evals),
        "training_size_md": _training_size_md(r),
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


# ------------------------------------------------------------------------------------------------------ trainer
def _name_or_path(model) -> str | None:
    model = getattr(model, "module", model)  # DDP/DeepSpeed wrappers
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", None) or None


def results_from_trainer(trainer, **overrides) -> DistillationResults:
    """[`DistillationResults`] of a (trained) `hf_kd.DistillationTrainer`, read from its args, models and state.

    No evaluation is run: pass `precision=...` etc. through `overrides` (any schema field) when you have them.
    """
    args = trainer.args
    student = trainer.model
    base = getattr(getattr(student, "peft_config", {}).get("default"), "base_model_name_or_path", None)
    state = trainer.state
    world = getattr(args, "world_size", 1) or 1
    steps = int(state.global_step)
    loss_params = {}
    if args.loss_type == "generalized_jsd":
        loss_params["beta"] = args.beta
    if args.loss_type.startswith("skew_"):
        loss_params["skew_alpha"] = args.skew_alpha
    if getattr(args, "temperature", 1.0) != 1.0:  # divides both sides' logits (the teacher's on top of selectivity)
        loss_params["temperature"] = args.temperature
    fields = {
        "student_init": base or _name_or_path(student) or "unknown",
        "teacher": _name_or_path(getattr(trainer, "teacher_model", None)),
        "adapter": "PEFT adapter" if base else None,
        "selectivity": None if args.target_entropy is not None else args.selectivity,
        "target_entropy": args.target_entropy,
        "per_token_selectivity": args.per_token_selectivity,
        "completion_source": args.completion_source,
        "loss_type": args.loss_type,
        "loss_params": loss_params,
        "num_train_steps": steps,
        "num_train_tokens": int(state.num_input_tokens_seen) or None,
        "num_train_samples": steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * world,
        "seeds": [args.seed],
        "command": current_command(),
        "model_name": (args.hub_model_id or "").split("/")[-1] or None,
        "framework_versions": framework_versions(),
    }
    fields.update(overrides)
    return DistillationResults(**fields)


def write_trainer_model_card(
    trainer,
    output_dir: str | os.PathLike | None = None,
    results: DistillationResults | dict[str, Any] | None = None,
    model_name: str | None = None,
    dataset_name: str | list[str] | None = None,
    tags: str | list[str] | None = None,
) -> str | None:
    """Write ``README.md`` (our card) for `trainer`: what `DistillationTrainer.create_model_card` calls.

    Args:
        trainer: an `hf_kd.DistillationTrainer` (its args, models and state describe the run).
        output_dir (`str`, *optional*): where to write; defaults to ``trainer.args.output_dir``.
        results ([`DistillationResults`] or `dict`, *optional*): use these instead of reading the trainer
            (e.g. with precision and recall filled in).
        model_name, dataset_name, tags: as in `transformers.Trainer.create_model_card`.

    Returns:
        `str` or `None`: the README path, or `None` on processes other than the main one (nothing written).
    """
    if hasattr(trainer, "is_world_process_zero") and not trainer.is_world_process_zero():
        return None
    if results is None:
        overrides = {"model_name": model_name} if model_name else {}
        if dataset_name:
            overrides["datasets"] = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name)
        results = results_from_trainer(trainer, **overrides)
    tags = [tags] if isinstance(tags, str) else list(tags or [])
    card = render_model_card(results, repo_id=trainer.args.hub_model_id, tags=tags)
    path = Path(output_dir or trainer.args.output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return str(path)


# ---------------------------------------------------------------------------------------------------------- CLI
def _read_json(path: str | os.PathLike):
    if not os.path.isfile(path):
        raise ValueError(f"results file {str(path)!r} does not exist; give the results JSON a recipe wrote.")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{os.path.basename(path)} is not valid JSON: {err}.") from None


def load_results_file(path: str | os.PathLike) -> dict[str | None, DistillationResults]:
    """The students of a results JSON by run name: a recipe's sweep (``{"rows": [{"name": ..., <DistillationResults
    keys>}, ...]}``, e.g. ``outputs/quickstart/results.json``), or one student's file (``{None: results}``)."""
    data = _read_json(path)
    if not isinstance(data, dict) or "rows" not in data:
        return {None: DistillationResults.from_dict(data)}
    rows = data["rows"]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and "name" in r for r in rows):
        raise ValueError(f"{path}: 'rows' must be a non-empty list of results, each with a 'name'.")
    return {str(r["name"]): DistillationResults.from_dict({k: v for k, v in r.items() if k != "name"}) for r in rows}


def add_card_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `hf-kd card`: render model cards from a results JSON."""
    parser.add_argument(
        "results",
        help="Results JSON: one student's (<run>/results.json) or a recipe's sweep (<output_dir>/results.json).",
    )
    parser.add_argument(
        "--output",
        "-o",
        default=None,
        help="Write the card here (e.g. out/README.md); for a sweep, a folder that gets <run>/README.md per "
        "student (default: print to stdout).",
    )
    parser.add_argument(
        "--repo-id",
        "--repo_id",
        dest="repo_id",
        default=None,
        help="Hub repository of the student (title and usage snippet); for a sweep, <repo-id>-<run> "
        "(default: none, the snippet says path/to/this/model).",
    )
    parser.add_argument("--run", dest="run_name", default=None, help="Of a sweep, only this run (default: every run).")
    parser.add_argument("--template", default=None, help="A Jinja card template (default: hf_kd's model_card.md).")
    parser.add_argument("--tag", action="append", default=[], help="An extra tag (repeatable; default: none).")
    return parser


def card_from_args(args: argparse.Namespace) -> dict[str | None, ModelCard]:
    """Run `hf-kd card`: render every student of the results file, then write to `--output` or print."""
    students = load_results_file(args.results)
    sweep = None not in students
    if args.run_name is not None and not sweep:
        raise ValueError(f"--run selects a run of a sweep; {args.results} holds one student's results.")
    if args.run_name is not None:
        if args.run_name not in students:
            raise ValueError(f"--run {args.run_name!r} is not in {args.results}; its runs are {sorted(students)}.")
        students = {args.run_name: students[args.run_name]}
    cards = {}
    for name, results in students.items():
        repo_id = f"{args.repo_id}-{name}" if args.repo_id and sweep else args.repo_id
        cards[name] = card = render_model_card(results, repo_id=repo_id, template=args.template, tags=args.tag)
        if args.output:
            path = Path(args.output) / name / "README.md" if sweep else Path(args.output)
            path.parent.mkdir(parents=True, exist_ok=True)
            card.save(path)
            print(f"model card: {path}")
        else:
            print(str(card))
    return cards
