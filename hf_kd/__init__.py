"""hf_kd: knowledge distillation for generative models, with entropy-controlled teacher sharpening.

Importing `hf_kd` registers the Gaussian-mixture toy model with the transformers Auto classes.
"""

from .sharpening import sharpen_logits, sharpen_weights, solve_selectivity, token_entropy

__version__ = "0.1.0"

__all__ = [
    "sharpen_logits",
    "sharpen_weights",
    "solve_selectivity",
    "token_entropy",
]
