"""`SamplingParams`: the one description of a (sharpened, truncated) sampling law, and its converters.

The law, applied by `hf_kd.sampling.warp_logits` on every path (transformers loop, trainer, metrics, vLLM):
``z -> z / temperature -> beta * (.) -> top-k -> top-p -> softmax``, beta fixed (`selectivity`) or solved per step
for `target_entropy`. EOS ids are masked (``-inf``) before `min_new_tokens` tokens, as transformers'
`MinNewTokensLengthLogitsProcessor` does.
"""

from __future__ import annotations

import dataclasses
import math

from ..sharpening import check_selectivity

__all__ = ["UNSUPPORTED_GENERATION_SETTINGS", "SamplingParams", "from_generation_config", "to_vllm_sampling_params"]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """A sampling law and the length of a completion, validated once.

    Args:
        temperature (`float`, defaults to `1.0`): TRL's temperature T > 0: logits are divided by it first.
        selectivity (`float`, defaults to `1.0`): beta > 0 applied to ``z / T`` (``inf``: greedy decoding).
        target_entropy (`float`, *optional*): nats per token; beta is solved at each step instead (replaces
            `selectivity`, which must then stay 1).
        per_token (`bool`, defaults to `True`): with `target_entropy`, one beta per row and step (else one per step).
        top_k (`int`, *optional*): keep the k most likely ids (None or 0: off).
        top_p (`float`, *optional*): keep the smallest set of ids holding mass >= top_p (None or 1: off).
        max_new_tokens (`int`, defaults to `128`): length cap of a completion.
        min_new_tokens (`int`, defaults to `0`): EOS ids cannot be drawn before this many tokens.
    """

    temperature: float = 1.0
    selectivity: float = 1.0
    target_entropy: float | None = None
    per_token: bool = True
    top_k: int | None = None
    top_p: float | None = None
    max_new_tokens: int = 128
    min_new_tokens: int = 0

    def __post_init__(self):
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0 < t < math.inf):
            raise ValueError(f"temperature must be a finite number > 0 (got {t!r}); use selectivity=inf for greedy.")
        check_selectivity(1.0 / t)  # a temperature below 3e-39 is a beta beyond float32
        check_selectivity(self.selectivity)
        if self.target_entropy is not None:
            if not self.target_entropy > 0:
                raise ValueError(f"target_entropy must be > 0 nats per token (got {self.target_entropy}).")
            if self.selectivity != 1.0:
                raise ValueError("target_entropy replaces selectivity: give one of them, not both.")
        if self.top_k is not None and not _is_int(self.top_k):
            raise ValueError(f"top_k must be an integer (got {self.top_k!r}); 0 or None turns it off.")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (got {self.top_k}); 0 or None turns it off.")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p!r}); 1 or None turns it off.")
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer (got {self.max_new_tokens!r}).")
        if not _is_int(self.min_new_tokens) or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens must be an integer in [0, max_new_tokens={self.max_new_tokens}] "
                f"(got {self.min_new_tokens!r})."
            )

    @property
    def greedy(self) -> bool:
        """Argmax decoding: ``selectivity = inf`` without a target entropy."""
        return self.target_entropy is None and math.isinf(self.selectivity)

    @property
    def untempered(self) -> bool:
        """Whether the law is the model's own softmax: temperature 1, selectivity 1, no truncation."""
        return self.temperature == 1 and self.selectivity == 1 and self.target_entropy is None and not self.truncates

    @property
    def truncates(self) -> bool:
        """Whether top-k or top-p removes any id."""
        return bool(self.top_k) or (self.top_p is not None and self.top_p < 1.0)


# GenerationConfig settings that change the next-token law and that `warp_logits` does not implement, with the value
# that leaves the law unchanged.
UNSUPPORTED_GENERATION_SETTINGS = {
    "do_sample": True,
    "repetition_penalty": 1.0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None,
    "num_beams": 1,
    "min_length": 0,
    "guidance_scale": 1.0,
    "top_h": None,
    "watermarking_config": None,
}


def from_generation_config(generation_config, **law) -> SamplingParams:
    """`SamplingParams` from a transformers `GenerationConfig` (lengths, top-k, top-p) and the law's other fields.

    Refuses, naming them, the settings that change the next-token law but are not part of this layer
    (`UNSUPPORTED_GENERATION_SETTINGS`, e.g. ``repetition_penalty != 1`` or ``min_p``), rather than ignore them.

    Args:
        generation_config (`GenerationConfig`): e.g. TRL's ``trainer.generation_config``.
        law: `SamplingParams` fields given by the caller (temperature, selectivity, target_entropy, per_token).
    """
    values = {name: getattr(generation_config, name, None) for name in UNSUPPORTED_GENERATION_SETTINGS}
    bad = [
        f"{name}={value!r}"
        for name, value in values.items()
        if value is not None and value != UNSUPPORTED_GENERATION_SETTINGS[name]
    ]
    configured = getattr(generation_config, "temperature", None)
    if configured is not None and "temperature" in law and configured != law["temperature"]:
        bad.append(f"temperature={configured!r} (the law's is {law['temperature']!r})")
    if bad:
        raise ValueError(
            f"hf_kd.sampling does not implement {', '.join(bad)} (it applies temperature, selectivity, top-k, "
            "top-p and min_new_tokens only); remove them from the config / generation_kwargs."
        )
    return SamplingParams(
        top_k=generation_config.top_k or None,
        top_p=generation_config.top_p,
        max_new_tokens=generation_config.max_new_tokens,
        min_new_tokens=generation_config.min_new_tokens or 0,
        **law,
    )


def to_vllm_sampling_params(params: SamplingParams, *, seed: int, logprobs: int, stop_token_ids: list[int]):
    """The same law as a `vllm.SamplingParams` (vLLM applies temperature, then top-k, then top-p, as transformers).

    vLLM's single temperature is ``T / beta``: ``softmax(beta * z / T)`` is ``softmax(z / (T / beta))``; ``beta =
    inf`` is temperature 0 (greedy). `min_new_tokens` maps to vLLM's `min_tokens` (stop ids masked before it).

    Args:
        params (`SamplingParams`): the law; `target_entropy` needs a per-step solver and is refused.
        seed (`int`): the request's seed (vLLM's per-request generator).
        logprobs (`int`): raw log-probs of this many most likely ids per token.
        stop_token_ids (`list[int]`): EOS ids (kept in the output).
    """
    from vllm import SamplingParams as VllmSamplingParams

    if params.target_entropy is not None:
        raise ValueError("target_entropy needs a per-step solver: use backend='transformers'.")
    return VllmSamplingParams(
        temperature=0.0 if params.greedy else params.temperature / params.selectivity,
        top_k=params.top_k or 0,
        top_p=params.top_p or 1.0,
        max_tokens=params.max_new_tokens,
        min_tokens=params.min_new_tokens,
        seed=seed,
        logprobs=logprobs,
        stop_token_ids=stop_token_ids,
        ignore_eos=False,
        include_stop_str_in_output=True,
    )
