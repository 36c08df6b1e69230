"""One sampling layer for every path that draws tokens: offline generation, the trainer's teacher, metrics, vLLM.

The law (`SamplingParams`, applied by `warp_logits`): ``z -> z / temperature -> beta * (.) -> top-k -> top-p ->
softmax``, beta fixed (`selectivity`) or solved per step for a `target_entropy`; EOS is masked before
`min_new_tokens`. `sample_batch` is the KV-cache decode loop with per-row seeded uniforms (Llama and Qwen2 models
decode through `FusedStep`); `to_vllm_sampling_params` states the same law for vLLM. This package imports only hf_kd's
math and kernels (`hf_kd.sharpening`, `hf_kd.fast_decode`).
"""

from .decode import sample_batch, sample_seed, stream_seed, uniform_streams
from .fused_step import FusedStep, fused_step_support
from .padding import left_pad, trim_at_eos
from .params import UNSUPPORTED_GENERATION_SETTINGS, SamplingParams, from_generation_config, to_vllm_sampling_params
from .warp import mask_eos, top_k_filter, top_p_filter, warp_logits

__all__ = [
    "UNSUPPORTED_GENERATION_SETTINGS",
    "FusedStep",
    "SamplingParams",
    "from_generation_config",
    "fused_step_support",
    "left_pad",
    "mask_eos",
    "sample_batch",
    "sample_seed",
    "stream_seed",
    "to_vllm_sampling_params",
    "top_k_filter",
    "top_p_filter",
    "trim_at_eos",
    "uniform_streams",
    "warp_logits",
]
