"""Precision and recall of generative models: likelihood-based (the paper's) and embedding-based."""

from .lm_adapter import CausalLMAdapter, score_token_sequences
from .protocol import GenerativeModel, check_generative_model

__all__ = ["CausalLMAdapter", "GenerativeModel", "check_generative_model", "score_token_sequences"]
