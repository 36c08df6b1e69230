"""The pieces of a causal LM's output layer the chunked losses need: head weights and logit post-processing.

hf_kd's losses project hidden states through the `lm_head` themselves, so they must apply what the model's own
forward applies after it, exactly as `trl.DistillationTrainer` reads it from the (text) config:

- a scale: Cohere's ``logit_scale``, Muse Glimmer's ``output_multiplier``, Falcon-H1's ``lm_head_multiplier``, or
  ``1 / logits_scaling`` (Granite, MiniCPM3; HyperCLOVA X multiplies by ``logits_scaling``);
- then Gemma-2-style ``final_logit_softcapping``: ``softcap * tanh(z / softcap)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .sharpening import check_logits

if torch.distributed.is_available():
    from torch.distributed.tensor import DTensor
else:  # builds without distributed support have no DTensor
    DTensor = ()

__all__ = [
    "LogitPostprocessing",
    "head_logits",
    "head_weight_and_bias",
    "logit_postprocess",
    "logit_postprocess_grad",
    "logit_postprocessing",
]


class LogitPostprocessing(NamedTuple):
    """A model's post-processing of its lm_head output (`logit_postprocess`): a scale, then an optional softcap."""

    scale: float = 1.0
    softcap: float | None = None


NO_POSTPROCESSING = LogitPostprocessing()


def logit_postprocessing(model) -> LogitPostprocessing:
    """``LogitPostprocessing(scale, softcap)`` of `model` (a model, PeftModel or config), read as TRL 1.16 reads it."""
    config = getattr(model, "config", model)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    scale = getattr(config, "logit_scale", None)
    if scale is None:
        scale = getattr(config, "output_multiplier", None)
    if scale is None:
        scale = getattr(config, "lm_head_multiplier", None)
    if scale is None and getattr(config, "logits_scaling", None) is not None:
        scaling = config.logits_scaling
        scale = scaling if getattr(config, "model_type", None) == "hyperclovax" else 1 / scaling
    softcap = getattr(config, "final_logit_softcapping", None)
    return LogitPostprocessing(1.0 if scale is None else float(scale), softcap)


def head_weight_and_bias(head: torch.nn.Module, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`head`'s weight and bias as plain tensors. Under FSDP2 they are DTensors: gather them once here (one
    all-gather, whose backward reduce-scatters the gradient) instead of once per chunk, cast to the hidden states'
    `dtype` as TRL does (the gathered weight of a mixed-precision model is the float32 master copy)."""
    weight, bias = head.weight, head.bias
    if isinstance(weight, DTensor):
        weight = weight.full_tensor().to(dtype)
        bias = None if bias is None else bias.full_tensor()
    return weight, bias


def logit_postprocess(logits: torch.Tensor, scale: float = 1.0, softcap: float | None = None) -> torch.Tensor:
    """The model's own post-processing of its lm_head output: ``softcap * tanh(scale * z / softcap)``, or
    ``scale * z`` without a softcap (Cohere/Granite ``logit_scale``-style scales, Gemma-2-style softcapping; the
    order is TRL's). Shapes are kept."""
    if scale != 1:
        logits = logits * scale
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def logit_postprocess_grad(processed: torch.Tensor, scale: float = 1.0, softcap: float | None = None):
    """``d processed / d z`` of `logit_postprocess`, from its output: ``scale * (1 - (processed / softcap)^2)``."""
    if softcap is None:
        return scale
    return (1 - (processed / softcap).square()).mul_(scale)


def head_logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, name: str) -> torch.Tensor:
    """Logits ``h @ W.T + b`` of a chunk of tokens, `(n, H)` -> `(n, V)`; recomputed in float32 when a 16-bit matmul
    overflowed (float16 stops at 65504), so large logits give the right loss instead of inf/NaN. ``-inf`` (a masked
    id, e.g. from the bias) is kept; NaN and +inf that survive are refused."""
    z = torch.nn.functional.linear(h, w, b)
    if z.dtype in (torch.float16, torch.bfloat16) and not bool(z.detach().amax() < math.inf):
        z = torch.nn.functional.linear(h.float(), w.float(), None if b is None else b.float())
    check_logits(z, f"{name} logits (hidden states @ lm_head weight)")
    return z
