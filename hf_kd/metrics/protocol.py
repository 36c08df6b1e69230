"""The generative-model protocol that precision and recall are written against.

Any object with these two methods works: the Gaussian-mixture model has them natively and
[`CausalLMAdapter`] gives them to a (model, tokenizer) pair.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["GenerativeModel", "check_generative_model"]


@runtime_checkable
class GenerativeModel(Protocol):
    """A model that draws samples and scores them.

    - ``sample(n, selectivity=1.0, generator=None, **kwargs)`` returns `n` samples (points, token sequences, texts).
    - ``log_likelihood(samples, **kwargs)`` returns ``(total, units)``: two 1-D tensors with one entry per sample, the
      total log-likelihood in nats and the number of scored units (1 for a point, scored tokens for a sequence).
    """

    def sample(self, n: int, **kwargs: Any) -> Any: ...

    def log_likelihood(self, samples: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]: ...


def check_generative_model(obj: Any, name: str) -> None:
    """Raise a `ValueError` naming `name` unless `obj` has callable ``sample`` and ``log_likelihood`` methods."""
    if isinstance(obj, GenerativeModel):
        return
    hint = ""
    if hasattr(obj, "generate") and hasattr(obj, "config"):
        hint = " Wrap a transformers model as hf_kd.metrics.CausalLMAdapter(model, tokenizer)."
    raise ValueError(
        f"{name} must implement sample(n, ...) and log_likelihood(samples) (got {type(obj).__name__}).{hint}"
    )
