"""The results schema of a distilled student ([`DistillationResults`]): fields, checks, and its JSON files.

A recipe writes one results JSON per trained student (or a sweep's ``{"rows": [...]}``); model cards are rendered from
it (`hf_kd.cards.render`). Nothing here imports torch, transformers or huggingface_hub, so `hf-kd card` starts fast.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..completion_sources import parse_completion_source
from ..students import STUDENT_INITS
from ..typecheck import check_field_types

__all__ = [
    "LEGACY_INIT_METHODS",
    "LOSS_DESCRIPTIONS",
    "METRICS",
    "SCHEMA_VERSION",
    "SOURCE_DESCRIPTIONS",
    "DistillationResults",
    "load_results_file",
    "read_json",
]

SCHEMA_VERSION = 1
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
# Names results files written before the vocabulary was unified (hf_kd.students.STUDENT_INITS) may hold: read only.
LEGACY_INIT_METHODS = {"from_scratch": "scratch", "layer_slice": "slice"}
METRICS = ("likelihood", "embedding")


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


def read_json(path: str | os.PathLike):
    """The parsed JSON of a results file, or a `ValueError` naming the file (missing, or not JSON)."""
    if not os.path.isfile(path):
        raise ValueError(f"results file {str(path)!r} does not exist; give the results JSON a recipe wrote.")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{os.path.basename(path)} is not valid JSON: {err}.") from None


# ------------------------------------------------------------------------------------------------------- checks
def _check_init(r: DistillationResults) -> None:
    if not isinstance(r.student_init, str) or not r.student_init:
        raise ValueError("student_init must name the student's initialisation (a Hub id or a local path).")
    if r.student_init_method not in STUDENT_INITS:
        old = LEGACY_INIT_METHODS.get(r.student_init_method)
        hint = f" ({r.student_init_method!r} is the old name of {old!r})" if old else ""
        raise ValueError(
            f"student_init_method={r.student_init_method!r} is unknown; use one of {STUDENT_INITS}{hint}."
        )


def _check_sharpening(r: DistillationResults) -> None:
    if r.selectivity is not None and not (isinstance(r.selectivity, (int, float)) and r.selectivity > 0):
        raise ValueError(f"selectivity must be > 0 or null (got {r.selectivity!r}); 1.0 is the plain teacher.")
    if r.target_entropy is not None:
        _finite("target_entropy", r.target_entropy, low=0.0)
        if r.selectivity not in (None, 1.0):
            raise ValueError("set either selectivity or target_entropy, not both (target_entropy solves beta).")


def _check_source(source) -> None:
    """The one completion-source check (`hf_kd.completion_sources`); the card records a name or a dict, not JSON."""
    if isinstance(source, str) and source.strip().startswith("{"):
        raise ValueError(f"completion_source must be a name or a dict, not a JSON string (got {source!r}).")
    parse_completion_source(source)


def _check_evaluation(r: DistillationResults) -> None:
    """Precision, recall and their intervals (an interval becomes a `(low, high)` tuple of floats), metric, extras."""
    for side in ("precision", "recall"):
        value, ci = getattr(r, side), getattr(r, f"{side}_ci")
        if value is not None:
            _finite(side, value)
        if ci is not None:
            if value is None or not isinstance(ci, (list, tuple)) or len(ci) != 2:
                raise ValueError(f"{side}_ci must be [low, high] next to a {side} value (got {ci!r}).")
            low, high = (_finite(f"{side}_ci", c) for c in ci)
            if low > high:
                raise ValueError(f"{side}_ci must be [low, high] with low <= high (got {list(ci)}).")
            setattr(r, f"{side}_ci", (low, high))
    if r.metric not in METRICS:
        raise ValueError(f"metric={r.metric!r} is unknown; use one of {METRICS}.")
    if not 0.0 < r.confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1) (got {r.confidence}); 0.95 is a 95% interval.")
    for name, value in r.extra_metrics.items():
        _finite(f"extra_metrics[{name!r}]", value)


def _check_results(r: DistillationResults) -> None:
    """Every check of [`DistillationResults`], in the order a reader of the error messages expects."""
    _check_init(r)
    if r.selectivity in ("inf", "Infinity"):
        r.selectivity = math.inf
    check_field_types(r, "results")  # before any use: a string `datasets` would be read letter by letter
    _check_sharpening(r)
    _check_source(r.completion_source)
    if r.loss_type not in LOSS_DESCRIPTIONS:
        raise ValueError(f"loss_type={r.loss_type!r} is unknown; use one of {tuple(LOSS_DESCRIPTIONS)}.")
    for name in ("num_train_steps", "num_train_tokens", "num_train_samples", "num_eval_samples"):
        _count(name, getattr(r, name))
    _check_evaluation(r)
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in r.seeds):
        raise ValueError(f"seeds must be a list of integers (got {r.seeds!r}).")
    if not all(isinstance(code, str) and code for code in r.language):
        raise ValueError(f"language must be a list of ISO 639-1 codes such as ['en'] (got {r.language!r}).")


# ------------------------------------------------------------------------------------------------------- schema
@dataclass
class DistillationResults:
    """What a recipe writes after distilling one student (the results JSON; also what a model card is built from).

    Fields map one-to-one to JSON keys; `to_json` / `from_json` read and write them, and unknown keys are refused so
    typos do not vanish. Free-form extras go in `extra` (kept, not rendered).

    Args:
        student_init (`str`): where the student's weights came from: a Hub id or local path.
        student_init_method (`str`): as `hf_kd.students.STUDENT_INITS`: ``"pretrained"`` (weights of
            `student_init`), ``"scratch"`` (its architecture, random weights) or ``"slice"`` (a subset of
            `student_init`'s layers). Results files may hold the old names ``"from_scratch"`` / ``"layer_slice"``:
            `from_dict` and `from_json` read them as ``"scratch"`` / ``"slice"``.
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
        _check_results(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillationResults:
        """Build from a results dict (as written by `to_dict`); unknown keys raise a ValueError naming them.

        An old `student_init_method` name (``"from_scratch"``, ``"layer_slice"``) is read as today's.
        """
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
        method = data.get("student_init_method")
        if isinstance(method, str) and method in LEGACY_INIT_METHODS:
            data = {**data, "student_init_method": LEGACY_INIT_METHODS[method]}
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
        return cls.from_dict(read_json(path))

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


def load_results_file(path: str | os.PathLike) -> dict[str | None, DistillationResults]:
    """The students of a results JSON by run name: a recipe's sweep (``{"rows": [{"name": ..., <DistillationResults
    keys>}, ...]}``, e.g. ``outputs/quickstart/results.json``), or one student's file (``{None: results}``)."""
    data = read_json(path)
    if not isinstance(data, dict) or "rows" not in data:
        return {None: DistillationResults.from_dict(data)}
    rows = data["rows"]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and "name" in r for r in rows):
        raise ValueError(f"{path}: 'rows' must be a non-empty list of results, each with a 'name'.")
    return {str(r["name"]): DistillationResults.from_dict({k: v for k, v in r.items() if k != "name"}) for r in rows}
