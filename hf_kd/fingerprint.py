"""Fingerprints of a teacher: what must stay the same for samples to come from one distribution.

A teacher-sample dataset records its teacher's fingerprint (`teacher_fingerprint`) and a resumed run compares it
(`fingerprint_changes`), so a teacher folder overwritten with new weights, another model of the same class, a new
dtype or another tokenizer are refused instead of mixed into one dataset. [`tokenizer_signature`] is also what
tells whether two models' per-token scores are comparable.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .validation import dtype_name

# Written by hf_kd.generation next to every sample (`token_id_signature` of its tokenizer), checked by the trainer.
TOKEN_ID_SIGNATURE_COLUMN = "token_id_signature"

__all__ = [
    "fingerprint_changes",
    "state_dict_sha256",
    "teacher_fingerprint",
    "token_id_signature",
    "tokenizer_signature",
    "weights_sha256",
]

_WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.pt", "*.gguf")


def state_dict_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state dict: every entry's name, dtype, shape and bytes, in name order.

    Tensors shared by several names (tied embeddings) are hashed once, under each name. Costs one read of the
    weights (about a second per GB on a CPU).
    """
    digest, seen = hashlib.sha256(), {}
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        digest.update(f"{name}|{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}|{seen.get(key, '')}\n".encode())
        if key in seen:
            continue
        seen[key] = name
        data = t.contiguous().cpu().reshape(-1).view(torch.uint8)
        digest.update(memoryview(data.numpy()))
    return digest.hexdigest()


def weights_sha256(path: str | os.PathLike) -> str | None:
    """SHA-256 of the weight files in a local checkpoint folder (names and bytes), or None for a Hub id."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    files = sorted({f for pattern in _WEIGHT_FILES for f in folder.glob(pattern) if f.is_file()})
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\n".encode())
        with open(file, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest() if files else None


def tokenizer_signature(tokenizer) -> str:
    """SHA-256 of what decides a tokenizer's ids: its vocabulary, special-token ids and chat template."""
    specials = {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "pad", "unk")}
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special_ids": specials,
        "chat_template": getattr(tokenizer, "chat_template", None),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def token_id_signature(tokenizer) -> str:
    """16 hex digits of SHA-256 over what maps text to ids, and ids to text.

    Narrower than [`tokenizer_signature`]: a fast tokenizer's whole backend (model and merges, normalizer,
    pre-tokenizer, post-processor, added tokens) without the padding/truncation settings trainers change, otherwise
    the vocabulary; not the chat template nor which token plays EOS, so a base model and its instruct variant agree.
    `hf_kd.DistillationTrainer` compares it between teacher and student tokenizers and with the one recorded in a
    generated dataset's ``token_id_signature`` column. A processor is read through its `.tokenizer`.
    """
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("padding", None)
        state.pop("truncation", None)
    else:
        state = {"vocab": sorted(tokenizer.get_vocab().items())}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


def teacher_fingerprint(model, tokenizer, name_or_path: str | None = None, dtype=None) -> dict[str, str | None]:
    """The fingerprint recorded with a teacher-sample dataset.

    Args:
        model (`torch.nn.Module`, *optional*): the loaded teacher; `None` when another engine loads it (vLLM),
            then the weight files under `name_or_path` are hashed instead (`None` for a Hub id).
        tokenizer: the teacher's tokenizer.
        name_or_path (`str`, *optional*): the teacher's folder, for a teacher that is not loaded here.
        dtype (`str` or `torch.dtype`, *optional*): the dtype an engine loads it in, for a teacher not loaded here.

    Returns:
        `dict`: ``weights_sha256`` (of the state dict, or of the weight files), ``dtype`` and ``tokenizer_sha256``.
    """
    if model is not None:
        weights, dtype = state_dict_sha256(model), next(model.parameters()).dtype
    else:
        weights = weights_sha256(name_or_path) if name_or_path else None
    return {
        "weights_sha256": weights,
        "dtype": dtype_name(dtype),
        "tokenizer_sha256": tokenizer_signature(tokenizer),
    }


def fingerprint_changes(old: dict | None, new: dict) -> list[str]:
    """What differs between two [`teacher_fingerprint`]s, in words (empty when they match)."""
    if not old:
        return ["the fingerprint (none was recorded: the run predates teacher fingerprints)"]
    words = {"weights_sha256": "weights", "dtype": "dtype", "tokenizer_sha256": "tokenizer"}
    changes = []
    for key, word in words.items():
        before, after = old.get(key), new.get(key)
        if before != after:
            short = key.endswith("sha256")
            changes.append(
                f"{word} ({before[:12] if short and before else before} -> {after[:12] if short and after else after})"
            )
    return changes
