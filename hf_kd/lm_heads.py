"""The pieces of a causal LM's output layer the chunked losses need: head weights and logit post-processing.

hf_kd's losses project hidden states through the `lm_head` themselves, so they must apply what the model's own
forward applies after it, exactly as `trl.DistillationTrainer` reads it from the (text) config:

- a scale: Cohere's ``logit_scale``, Muse Glimmer's ``output_multiplier``, Falcon-H1's ``lm_head_multiplier``, or
  ``1 / logits_scaling`` (Granite, MiniCPM3; HyperCLOVA X multiplies by ``logits_scaling``);
- then Gemma-2-style ``final_logit_softcapping``: ``softcap * tanh(z / softcap)``.
"""

from __future__ import annotations

import torch

if torch.distributed.is_available():
    from torch.distributed.tensor import DTensor
else:  # builds without distributed support have no DTensor
    DTensor = ()

__all__ = ["head_weight_and_bias", "logit_postprocessing"]


def logit_postprocessing(model) -> dict[str, float | None]:
    """``{"scale": s, "softcap": c}`` of `model` (a model, PeftModel or config), read as TRL 1.16 reads it."""
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
    return {"scale": 1.0 if scale is None else float(scale), "softcap": softcap}


def head_weight_and_bias(head: torch.nn.Module, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`head`'s weight and bias as plain tensors. Under FSDP2 they are DTensors: gather them once here (one
    all-gather, whose backward reduce-scatters the gradient) instead of once per chunk, cast to the hidden states'
    `dtype` as TRL does (the gathered weight of a mixed-precision model is the float32 master copy)."""
    weight, bias = head.weight, head.bias
    if isinstance(weight, DTensor):
        weight = weight.full_tensor().to(dtype)
        bias = None if bias is None else bias.full_tensor()
    return weight, bias
