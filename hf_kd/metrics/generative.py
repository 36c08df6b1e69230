"""`as_generative_model`: what a user hands the metrics (a protocol model, a pair, or a name) as a protocol model."""

from __future__ import annotations

from .lm_adapter import CausalLMAdapter

__all__ = ["as_generative_model"]


def as_generative_model(obj, **adapter_kwargs):
    """Turn what a user hands over into a protocol model.

    Args:
        obj: a protocol model (returned as is), a ``(model, tokenizer)`` pair, or a causal LM id / local path
            (loaded in float32 by `hf_kd.offline.load_causal_lm`, so ``offline:`` names work too).
        adapter_kwargs: passed to [`CausalLMAdapter`] when one is built.

    Returns:
        An object with ``sample`` and ``log_likelihood``.
    """
    if hasattr(obj, "sample") and hasattr(obj, "log_likelihood"):
        return obj
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return CausalLMAdapter(obj[0], obj[1], **adapter_kwargs)
    if isinstance(obj, str):
        from ..offline import load_causal_lm  # loading by name lives here, not in the adapter

        model, tokenizer, _ = load_causal_lm(obj)
        return CausalLMAdapter(model, tokenizer, **adapter_kwargs)
    raise ValueError(
        f"expected a model with sample/log_likelihood, a (model, tokenizer) pair or a model id/path; got "
        f"{type(obj).__name__}."
    )
