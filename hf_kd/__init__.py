"""hf_kd: knowledge distillation for generative models, with entropy-controlled teacher sharpening.

Importing `hf_kd` registers the Gaussian-mixture toy model with the transformers Auto classes.
"""

from .distillation_config import DistillationConfig
from .distillation_trainer import DistillationTrainer
from .losses import LOSS_TYPES, chunked_distillation_loss, distillation_loss
from .metrics import metric_path
from .models.gmm import GMMConfig, GMMModel  # importing it registers the GMM with AutoConfig/AutoModel
from .sharpening import sharpen_logits, sharpen_weights, solve_selectivity, token_entropy

__version__ = "0.1.0"

__all__ = [
    "LOSS_TYPES",
    "DistillationConfig",
    "DistillationTrainer",
    "GMMConfig",
    "GMMModel",
    "chunked_distillation_loss",
    "distillation_loss",
    "metric_path",
    "sharpen_logits",
    "sharpen_weights",
    "solve_selectivity",
    "token_entropy",
]
