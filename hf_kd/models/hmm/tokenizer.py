"""A word-level tokenizer whose ids are an [`HMMModel`]'s token ids, for the transformers that learn from it."""

from __future__ import annotations

from .configuration_hmm import HMMConfig


def hmm_tokenizer(config: HMMConfig):
    """A `PreTrainedTokenizerFast` with one word per token id: ``<pad>``, ``<s>``, ``</s>`` at the config's special
    ids and ``t<i>`` for every other id ``i``. Text is space-separated words; ``"<s>"`` encodes to ``[bos]``.

    Args:
        config (`HMMConfig`): the model whose ids the tokenizer must match.

    Returns:
        `PreTrainedTokenizerFast`.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = {config.pad_token_id: "<pad>", config.bos_token_id: "<s>", config.eos_token_id: "</s>"}
    if len(special) < 3:
        raise ValueError("the HMM's pad, bos and eos ids must be three distinct ids to build its tokenizer.")
    vocab = {special.get(i, f"t{i}"): i for i in range(config.vocab_size)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
