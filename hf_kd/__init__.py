"""hf_kd: knowledge distillation for generative models, with entropy-controlled teacher sharpening.

The public names below load on first use (PEP 562), so `import hf_kd` and the `hf-kd` command start without torch,
transformers or trl. Using any of them (or importing `hf_kd.models.gmm` / `hf_kd.models.hmm`) registers the toy models
(Gaussian mixture, HMM language model) with the transformers Auto classes.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    "DistillationConfig": "distillation_config",
    "DistillationTrainer": "distillation_trainer",
    "push_distilled_student": "hub",
    "LOSS_TYPES": "losses",
    "chunked_distillation_loss": "losses",
    "distillation_loss": "losses",
    "CausalLMAdapter": "metrics",
    "PrecisionRecallCallback": "metrics",
    "metric_path": "metrics",
    "precision_recall": "metrics",
    "DistillationResults": "model_card",
    "render_model_card": "model_card",
    "GMMConfig": "models.gmm",
    "GMMModel": "models.gmm",
    "HMMConfig": "models.hmm",
    "HMMModel": "models.hmm",
    "SamplingParams": "sampling",
    "warp_logits": "sampling",
    "sharpen_logits": "sharpening",
    "sharpen_weights": "sharpening",
    "solve_selectivity": "sharpening",
    "token_entropy": "sharpening",
    "SimulationConfig": "simulation",
    "run_simulation": "simulation",
    "init_student": "students",
    "slice_layers": "students",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_kd' has no attribute {name!r}")
    for toy in (".models.gmm", ".models.hmm"):  # importing them registers the toy models with the Auto classes
        importlib.import_module(toy, __name__)
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
