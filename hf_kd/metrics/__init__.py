"""Precision and recall of generative models: likelihood-based (the paper's) and embedding-based.

Everything here works over one protocol (`sample`, `log_likelihood`; see [`GenerativeModel`]): the Gaussian-mixture
model implements it natively and [`CausalLMAdapter`] gives it to a (model, tokenizer) pair.
"""

import os

from .callback import PrecisionRecallCallback
from .embedding import TextEmbedder, default_embedder_path, embedding_precision_recall, knn_precision_recall
from .generative import as_generative_model
from .intervals import bootstrap_ci, bootstrap_difference, mean_confidence_interval, seed_t_interval
from .likelihood import (
    compare_students,
    compare_to_baseline,
    precision,
    precision_recall,
    recall,
    resolve_unit,
    score_samples,
)
from .lm_adapter import CausalLMAdapter, score_token_sequences
from .protocol import GenerativeModel, check_generative_model

_METRICS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "evaluate")


def metric_path(name: str) -> str:
    """Absolute path of a shipped `evaluate` metric, to pass to `evaluate.load`.

    Args:
        name (`str`): ``"kd_precision_recall"`` or ``"kd_embedding_precision_recall"``.

    Returns:
        `str`: the metric's folder (named like its script, as `evaluate` requires).
    """
    available = sorted(d for d in os.listdir(_METRICS_DIR) if os.path.isfile(os.path.join(_METRICS_DIR, d, f"{d}.py")))
    if name not in available:
        raise ValueError(f"unknown metric {name!r}; hf_kd ships {available}.")
    return os.path.join(_METRICS_DIR, name)


__all__ = [
    "CausalLMAdapter",
    "GenerativeModel",
    "PrecisionRecallCallback",
    "TextEmbedder",
    "as_generative_model",
    "bootstrap_ci",
    "bootstrap_difference",
    "check_generative_model",
    "compare_students",
    "compare_to_baseline",
    "default_embedder_path",
    "embedding_precision_recall",
    "knn_precision_recall",
    "mean_confidence_interval",
    "metric_path",
    "precision",
    "precision_recall",
    "recall",
    "resolve_unit",
    "score_samples",
    "score_token_sequences",
    "seed_t_interval",
]
