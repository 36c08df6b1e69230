"""Exact resume: a sampler whose order depends on (seed, epoch) only, and skipping half-written checkpoints."""

from __future__ import annotations

import json
import os
import re
import warnings

from trl.trainer.utils import RepeatSampler

__all__ = ["EpochSeededRepeatSampler", "is_complete_checkpoint", "last_complete_checkpoint"]

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.bin",
)


class EpochSeededRepeatSampler(RepeatSampler):
    """TRL's `RepeatSampler` with the shuffle of epoch ``e`` drawn from ``seed + e``.

    TRL seeds one generator at construction and draws every epoch from it, so a run resumed in epoch ``e > 0`` (a
    fresh sampler) replays epoch 0's order. The Trainer calls `set_epoch` before each epoch; the order is then a
    function of (seed, epoch) alone, and epoch 0 is TRL's order.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        if self.shuffle and self.seed is not None:
            self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` holds weights and a readable ``trainer_state.json`` (the Trainer writes that file last)."""
    try:
        with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError):
        return False
    return any(os.path.isfile(os.path.join(path, name)) for name in _WEIGHTS)


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete ``checkpoint-N`` in `output_dir` (None if none); incomplete newer ones (a run killed
    while saving) are skipped with a warning. `transformers.trainer_utils.get_last_checkpoint` would return them."""
    if not os.path.isdir(output_dir):
        return None
    found = sorted(
        (int(m.group(1)), name)
        for name in os.listdir(output_dir)
        if (m := _CHECKPOINT.match(name)) and os.path.isdir(os.path.join(output_dir, name))
    )
    for _, name in reversed(found):
        path = os.path.join(output_dir, name)
        if is_complete_checkpoint(path):
            return path
        warnings.warn(
            f"skipping {path}: it is incomplete (no readable trainer_state.json or no weights; the run was probably "
            "killed while saving it). Resuming from an earlier checkpoint; delete it to silence this warning.",
            stacklevel=2,
        )
    return None
