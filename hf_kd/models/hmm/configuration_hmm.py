"""Configuration of the hidden-Markov-model toy language model.

Self-contained on purpose: this file is copied next to a saved checkpoint and loaded with ``trust_remote_code=True``
where hf_kd is not installed, so it imports nothing from hf_kd.
"""

from __future__ import annotations

from transformers import PreTrainedConfig


class HMMConfig(PreTrainedConfig):
    r"""Configuration of an [`HMMModel`]: `num_states` hidden states emitting token ids ``0 .. vocab_size - 1``.

    A sequence starts after the BOS token (the prompt, never emitted by the chain's start), and ends when the chain
    emits `eos_token_id` (kept as the last token, as a language model's completion keeps its EOS).

    Args:
        num_states (`int`, defaults to 4): number of hidden states K.
        vocab_size (`int`, defaults to 8): number of token ids V (special tokens included).
        bos_token_id (`int`, defaults to 1): the prompt every sequence is conditioned on.
        eos_token_id (`int`, defaults to 2): the token that ends a sequence.
        pad_token_id (`int`, defaults to 0): padding id of the matching tokenizer.

    Example:
        ```python
        >>> from hf_kd.models.hmm import HMMConfig, HMMModel
        >>> model = HMMModel(HMMConfig(num_states=3, vocab_size=10))
        ```
    """

    model_type = "hf_kd_hmm"

    def __init__(
        self,
        num_states: int = 4,
        vocab_size: int = 8,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        pad_token_id: int = 0,
        **kwargs,
    ):
        for name, value in (("num_states", num_states), ("vocab_size", vocab_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer (got {value!r}).")
        special = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id}
        for name, value in special.items():
            if not isinstance(value, int) or not 0 <= value < vocab_size:
                raise ValueError(f"{name} must be a token id in [0, vocab_size={vocab_size}) (got {value!r}).")
        if eos_token_id == bos_token_id:
            raise ValueError("eos_token_id and bos_token_id must differ: BOS starts a sequence, EOS ends it.")
        self.num_states = num_states
        self.vocab_size = vocab_size
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
