"""Ways to initialise a student: a pretrained checkpoint, a fresh model from a config, or a slice of the teacher.

[`STUDENT_INITS`] is the one vocabulary for this choice: recipe configs (``student_init``), [`init_student`] and the
results/model card (``student_init_method``) all use it. torch and transformers are imported inside the functions so
that `hf-kd card` reads the vocabulary without loading them.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

__all__ = ["STUDENT_INITS", "init_student", "slice_layers"]

STUDENT_INITS = ("pretrained", "scratch", "slice")


def _decoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    import torch

    layers = getattr(model.get_decoder(), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no `model.layers` list to slice; use student_init='scratch'.")
    return layers


def slice_layers(model: PreTrainedModel, num_layers: int) -> PreTrainedModel:
    """A copy of `model` keeping `num_layers` decoder layers evenly spaced from first to last (DistilBERT-style).

    Embeddings, final norm and lm_head are copied too, so the student starts with the teacher's vocabulary and
    output space. The kept layer indices are ``round(linspace(0, L - 1, num_layers))``.

    Args:
        model (`PreTrainedModel`): a decoder-only causal LM with ``model.layers`` (Llama, Qwen2, Mistral, ...).
        num_layers (`int`): layers to keep, 1 <= num_layers <= L.

    Returns:
        `PreTrainedModel`: the sliced copy (``config.num_hidden_layers = num_layers``).
    """
    import torch

    total = len(_decoder_layers(model))
    if not 1 <= num_layers <= total:
        raise ValueError(f"num_layers must be in [1, {total}] for a {total}-layer teacher (got {num_layers}).")
    keep = sorted({round(float(i)) for i in torch.linspace(0, total - 1, num_layers)})
    student = copy.deepcopy(model)
    layers = _decoder_layers(student)
    kept = torch.nn.ModuleList(layers[i] for i in keep)
    for new_index, layer in enumerate(kept):
        attention = getattr(layer, "self_attn", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = new_index  # the KV cache is indexed by position in the new stack
    student.get_decoder().layers = kept
    student.config.num_hidden_layers = len(kept)
    if getattr(student.config, "layer_types", None) is not None:
        student.config.layer_types = [student.config.layer_types[i] for i in keep]
    return student


def init_student(
    init: str,
    teacher: PreTrainedModel | None = None,
    name_or_path: str | None = None,
    num_layers: int | None = None,
    config_overrides: dict | None = None,
    seed: int = 0,
    **from_pretrained_kwargs,
) -> PreTrainedModel:
    """Build a student the way a recipe asks.

    Args:
        init (`str`): ``"pretrained"`` (load `name_or_path`), ``"scratch"`` (random weights from the config of
            `name_or_path`, or of the teacher, with `config_overrides` and `num_layers` applied; the paper's students
            are trained from scratch) or ``"slice"`` (`num_layers` evenly spaced layers of the teacher).
        teacher (`PreTrainedModel`, *optional*): needed for ``"slice"`` and for ``"scratch"`` without `name_or_path`.
        name_or_path (`str`, *optional*): model id or local path.
        num_layers (`int`, *optional*): layers of a sliced or scratch student.
        config_overrides (`dict`, *optional*): config fields for a scratch student (e.g. ``{"hidden_size": 256}``).
        seed (`int`): seeds the random initialisation of a scratch student.

    Returns:
        `PreTrainedModel`: the student, in float32 unless `from_pretrained_kwargs` say otherwise.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if init not in STUDENT_INITS:
        raise ValueError(f"student_init={init!r} is unknown; choose one of {STUDENT_INITS}.")
    if init == "pretrained":
        if name_or_path is None:
            raise ValueError("student_init='pretrained' needs student_name_or_path (a model id or a local path).")
        return AutoModelForCausalLM.from_pretrained(name_or_path, **from_pretrained_kwargs)
    if teacher is None and (init == "slice" or name_or_path is None):
        raise ValueError(f"student_init={init!r} needs the teacher model.")
    if init == "slice":
        if num_layers is None:
            raise ValueError("student_init='slice' needs student_num_layers (layers kept from the teacher).")
        return slice_layers(teacher, num_layers)
    config = copy.deepcopy(teacher.config) if name_or_path is None else AutoConfig.from_pretrained(name_or_path)
    for key, value in (config_overrides or {}).items():
        if not hasattr(config, key):
            raise ValueError(f"config_overrides key {key!r} is not a field of {type(config).__name__}.")
        setattr(config, key, value)
    if num_layers is not None:
        config.num_hidden_layers = num_layers
        if getattr(config, "layer_types", None) is not None:
            config.layer_types = config.layer_types[:num_layers]
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)
