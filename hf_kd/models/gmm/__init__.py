"""The Gaussian-mixture toy model, registered with `AutoConfig` / `AutoModel` on import.

`register_for_auto_class` makes `save_pretrained` copy configuration_gmm.py and modeling_gmm.py next to the weights,
so the checkpoint loads with ``AutoModel.from_pretrained(path, trust_remote_code=True)`` where hf_kd is not installed.
"""

from transformers import AutoConfig, AutoModel

from .configuration_gmm import GMMConfig
from .kmeans import kmeans, kmeans_plusplus, lloyd
from .modeling_gmm import GMMModel, GMMOutput, gaussian_log_prob, sharpen_log_weights

__all__ = [
    "GMMConfig",
    "GMMModel",
    "GMMOutput",
    "gaussian_log_prob",
    "kmeans",
    "kmeans_plusplus",
    "lloyd",
    "register_gmm",
    "sharpen_log_weights",
]


def register_gmm() -> None:
    """Register the GMM with the transformers Auto classes; safe to call any number of times."""
    AutoConfig.register(GMMConfig.model_type, GMMConfig, exist_ok=True)
    AutoModel.register(GMMConfig, GMMModel, exist_ok=True)
    GMMConfig.register_for_auto_class()
    GMMModel.register_for_auto_class("AutoModel")


register_gmm()
