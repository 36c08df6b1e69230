"""Batch plumbing around sampling: left padding of prompts, cutting completions at EOS."""

from __future__ import annotations

import torch

__all__ = ["left_pad", "trim_at_eos"]


def left_pad(prompt_ids: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists into a batch, as decoder-only generation needs (every row's next token aligned).

    Args:
        prompt_ids (`list[list[int]]`): unpadded prompts.
        pad_token_id (`int`): the filler id.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: ``input_ids`` and ``attention_mask``, both `(B, max length)` int64.
    """
    width = max(len(p) for p in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, ids in enumerate(prompt_ids):
        input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, width - len(ids) :] = 1
    return input_ids, attention_mask


def trim_at_eos(completion_ids: torch.Tensor, eos_token_ids: list[int]) -> list[list[int]]:
    """Cut each generated row after its first EOS (the EOS is kept) and return plain id lists.

    Args:
        completion_ids (`torch.Tensor` of shape `(B, T)`): generated tokens, prompt removed.
        eos_token_ids (`list[int]`): ids that end a completion.

    Returns:
        `list[list[int]]`: one list per row, of length ``min(T, first_eos + 1)``.
    """
    completion_ids = completion_ids.cpu()
    is_eos = torch.isin(completion_ids, torch.tensor(eos_token_ids))
    out = []
    for row, eos in zip(completion_ids.tolist(), is_eos, strict=True):
        end = int(eos.int().argmax()) + 1 if eos.any() else len(row)
        out.append(row[:end])
    return out
