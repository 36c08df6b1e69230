"""A short fingerprint of what a tokenizer does, to tell two tokenizers apart even when their sizes agree."""

from __future__ import annotations

import hashlib
import json

__all__ = ["TOKENIZER_SIGNATURE_COLUMN", "describe_tokenizer", "tokenizer_signature"]

# Written by hf_kd.generation next to every sample; checked by hf_kd.DistillationTrainer at construction.
TOKENIZER_SIGNATURE_COLUMN = "tokenizer_signature"


def tokenizer_signature(tokenizer) -> str:
    """16 hex digits of SHA-256 over what maps text to ids: for a fast tokenizer its whole backend (model and merges,
    normalizer, pre-tokenizer, post-processor, added tokens) without the padding/truncation settings trainers change;
    otherwise the vocabulary. Which token plays EOS is left out (a base model and its instruct variant share ids but
    not their EOS). A processor is read through its `.tokenizer`."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("padding", None)
        state.pop("truncation", None)
    else:
        state = {"vocab": sorted(tokenizer.get_vocab().items())}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


def describe_tokenizer(tokenizer) -> str:
    """``name (signature, N tokens)`` for error messages."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    return f"{name!r} (signature {tokenizer_signature(tokenizer)}, {len(tokenizer)} tokens)"
