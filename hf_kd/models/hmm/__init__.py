"""The hidden-Markov-model toy language model, registered with `AutoConfig` / `AutoModel` on import.

`register_for_auto_class` makes `save_pretrained` copy configuration_hmm.py and modeling_hmm.py next to the weights,
so the checkpoint loads with ``AutoModel.from_pretrained(path, trust_remote_code=True)`` where hf_kd is not installed.
"""

from transformers import AutoConfig, AutoModel

from .configuration_hmm import HMMConfig
from .long_tail import long_tail_hmm
from .modeling_hmm import HMMModel, HMMOutput, forward_log_likelihood
from .tokenizer import hmm_tokenizer

__all__ = [
    "HMMConfig",
    "HMMModel",
    "HMMOutput",
    "forward_log_likelihood",
    "hmm_tokenizer",
    "long_tail_hmm",
    "register_hmm",
]


def register_hmm() -> None:
    """Register the HMM with the transformers Auto classes; safe to call any number of times."""
    AutoConfig.register(HMMConfig.model_type, HMMConfig, exist_ok=True)
    AutoModel.register(HMMConfig, HMMModel, exist_ok=True)
    HMMConfig.register_for_auto_class()
    HMMModel.register_for_auto_class("AutoModel")


register_hmm()
