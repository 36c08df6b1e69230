"""hf_kd: knowledge distillation for generative models, with entropy-controlled teacher sharpening.

Importing `hf_kd` registers the Gaussian-mixture toy model with the transformers Auto classes.
"""

from .distillation_config import DistillationConfig
from .distillation_trainer import DistillationTrainer
from .hub import push_distilled_student
from .losses import LOSS_TYPES, chunked_distillation_loss, distillation_loss
from .metrics import CausalLMAdapter, PrecisionRecallCallback, metric_path, precision_recall
from .model_card import DistillationResults, render_model_card
from .models.gmm import GMMConfig, GMMModel  # importing it registers the GMM with AutoConfig/AutoModel
from .models.hmm import HMMConfig, HMMModel  # and the HMM toy language model
from .sharpening import sharpen_logits, sharpen_weights, solve_selectivity, token_entropy
from .simulation import SimulationConfig, run_simulation
from .students import init_student, slice_layers

__version__ = "0.1.0"

__all__ = [
    "LOSS_TYPES",
    "CausalLMAdapter",
    "DistillationResults",
    "PrecisionRecallCallback",
    "SimulationConfig",
    "init_student",
    "precision_recall",
    "push_distilled_student",
    "render_model_card",
    "run_simulation",
    "slice_layers",
    "DistillationConfig",
    "DistillationTrainer",
    "GMMConfig",
    "GMMModel",
    "HMMConfig",
    "HMMModel",
    "chunked_distillation_loss",
    "distillation_loss",
    "metric_path",
    "sharpen_logits",
    "sharpen_weights",
    "solve_selectivity",
    "token_entropy",
]
