"""Where a distillation batch's completions come from: a shared draw of the source, teacher sampling, dataset text.

Pure helpers used by `hf_kd.DistillationTrainer`; none of them touches a trainer.
"""

from __future__ import annotations

import copy
import math

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from .sharpening import solve_selectivity

__all__ = [
    "EntropyTargetLogitsProcessor",
    "dataset_completion_ids",
    "draw_source",
    "left_pad",
    "sample_completions",
    "tokenize_completions",
    "trim_at_eos",
]


def draw_source(probabilities: dict[str, float], seed: int, step: int) -> str:
    """Draw a completion source from `probabilities` with a generator seeded by ``(seed, step)``.

    Every rank calls this with the same arguments, so every rank draws the same source without communicating (an
    unsynchronised coin flip would mix sources inside one global batch). Resuming at `step` redraws the same source.

    Args:
        probabilities (`dict[str, float]`): source name -> probability (summing to one).
        seed (`int`): run seed (`args.seed`).
        step (`int`): optimizer step (`state.global_step`).

    Returns:
        `str`: the source drawn.
    """
    names = sorted(probabilities)  # the dict order must not matter
    if len(names) == 1:
        return names[0]
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    u = torch.rand((), generator=generator, dtype=torch.float64).item()
    cumulative = 0.0
    for name in names:
        cumulative += probabilities[name]
        if u < cumulative:
            return name
    return [n for n in names if probabilities[n] > 0][-1]  # u within rounding of 1


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


class EntropyTargetLogitsProcessor(LogitsProcessor):
    """Scale next-token scores by the selectivity that gives them a target entropy (per batch or per row).

    At each generation step ``scores (B, V) -> beta * scores`` with beta from `solve_selectivity`: one beta making the
    mean entropy over the rows equal `target_entropy`, or one beta per row with `per_token`. The last betas used are
    kept in `last_selectivity` for logging.
    """

    def __init__(self, target_entropy: float, per_token: bool = False):
        self.target_entropy = target_entropy
        self.per_token = per_token
        self.last_selectivity: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        beta = solve_selectivity(scores.float(), self.target_entropy, per_token=self.per_token)
        self.last_selectivity = beta.detach()
        beta = beta.to(scores.dtype)
        return scores * (beta[:, None] if self.per_token else beta)


def sample_completions(
    model: torch.nn.Module,
    prompt_ids: list[list[int]],
    generation_config: GenerationConfig,
    *,
    pad_token_id: int,
    eos_token_ids: list[int],
    selectivity: float = 1.0,
    temperature: float = 1.0,
    target_entropy: float | None = None,
    per_token: bool = False,
) -> list[list[int]]:
    """Sample completions from `model` (the teacher) sharpened by `selectivity` or to a `target_entropy`.

    Sampling temperature is ``temperature / selectivity`` (``selectivity = inf``: greedy decoding); with
    `target_entropy` the temperature is 1 (beta absorbs any) and an `EntropyTargetLogitsProcessor` solves beta at
    every step. Other sampling settings of `generation_config` (top-k, top-p, ...) are kept; their defaults leave
    the sharpened distribution untouched.

    Args:
        model (`PreTrainedModel`): the model that samples (unwrapped, in eval mode).
        prompt_ids (`list[list[int]]`): tokenized prompts, unpadded.
        generation_config (`GenerationConfig`): base configuration (max_new_tokens, eos, ...); it is not modified.
        pad_token_id (`int`), eos_token_ids (`list[int]`): padding id and the ids that end a completion.
        selectivity (`float`): beta > 0 (or ``inf``), on top of `temperature`.
        temperature (`float`): the trainer's softmax temperature (TRL's `temperature`).
        target_entropy (`float`, *optional*): nats per token; replaces `selectivity`.
        per_token (`bool`): with `target_entropy`, one beta per row and step.

    Returns:
        `list[list[int]]`: completion ids per prompt, cut after the first EOS (kept).
    """
    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad(prompt_ids, pad_token_id)
    width = input_ids.shape[1]
    config = copy.deepcopy(generation_config)
    processors = LogitsProcessorList()
    if target_entropy is not None:
        config.temperature = 1.0
        processors.append(EntropyTargetLogitsProcessor(target_entropy, per_token))
    elif math.isinf(selectivity):
        config.do_sample, config.temperature = False, 1.0
    else:
        config.temperature = temperature / selectivity
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=config,
            logits_processor=processors,
        )
    model.train(was_training)
    return trim_at_eos(out[:, width:], eos_token_ids)


def tokenize_completions(
    tokenizer,
    prompts: list,
    completions: list,
    prompt_ids: list[list[int]],
    *,
    eos_token_id: int,
    max_length: int | None,
    chat_template_kwargs: dict | None = None,
) -> list[list[int]]:
    """Token ids of dataset completions, ending in EOS, truncated to `max_length` (like a clipped generation).

    Plain-text completions are tokenized without special tokens. Conversational completions (lists of messages) are
    rendered with the chat template after their prompt, and the ids past `prompt_ids` (the prompt as rendered with
    the generation prompt) are kept; the two renderings must agree on the prompt part.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the student's tokenizer.
        prompts (`list`): the raw prompts (text or messages).
        completions (`list`): the raw completions, same format as the prompts.
        prompt_ids (`list[list[int]]`): the prompts as the trainer tokenized them.
        eos_token_id (`int`): appended when a completion does not already end with it.
        max_length (`int`, *optional*): `max_completion_length`.
        chat_template_kwargs (`dict`, *optional*): passed to `apply_chat_template`.

    Returns:
        `list[list[int]]`: completion ids per example.
    """
    out = []
    for prompt, completion, p_ids in zip(prompts, completions, prompt_ids, strict=True):
        if completion is None:
            raise ValueError("a dataset completion is None; every example needs a non-empty 'completion'.")
        if isinstance(completion, str):
            ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        else:
            full = tokenizer.apply_chat_template(
                list(prompt) + list(completion), tokenize=True, return_dict=False, **(chat_template_kwargs or {})
            )
            if list(full[: len(p_ids)]) != list(p_ids):
                raise ValueError(
                    "the chat template renders the prompt differently with and without its completion, so the "
                    "completion tokens cannot be separated; pass plain-text prompt/completion columns instead."
                )
            ids = list(full[len(p_ids) :])
        if not ids or ids[-1] != eos_token_id:
            ids = list(ids) + [eos_token_id]
        out.append(ids[:max_length] if max_length is not None else ids)
    return out


def dataset_completion_ids(
    completion_ids: list,
    finished: list | None,
    *,
    eos_token_id: int,
    max_length: int | None,
    eos_token_ids: list[int] | None = None,
) -> list[list[int]]:
    """Completion ids stored in a generated dataset (`hf_kd.generation`), used as they are: no re-tokenisation.

    Re-tokenising the decoded text would not give back the sampled ids in general (merges, skipped special tokens),
    and the stored top-k log-probs are aligned with the sampled ids. A sample that ended (``finished=True``) ends
    with EOS (appended if missing); a sample cut off at the generation length (``finished=False``) gets no EOS, so
    the student is not taught to stop where the teacher did not. Without a `finished` column the ids are kept as
    stored.

    Args:
        completion_ids (`list[list[int]]`): the `completion_ids` column of the batch.
        finished (`list[bool]`, *optional*): the `finished` column (the teacher emitted EOS).
        eos_token_id (`int`): appended to finished samples that do not already end with an EOS.
        eos_token_ids (`list[int]`, *optional*): every id that counts as EOS (the generation config may list more).
        max_length (`int`, *optional*): `max_completion_length` (longer samples are clipped, like a generation).

    Returns:
        `list[list[int]]`: completion ids per example.
    """
    finished = [None] * len(completion_ids) if finished is None else finished
    eos = {eos_token_id, *(eos_token_ids or [])}
    out = []
    for ids, done in zip(completion_ids, finished, strict=True):
        if ids is None or len(ids) == 0:
            raise ValueError("a dataset row has empty 'completion_ids'; every example needs at least one token.")
        ids = [int(t) for t in ids]
        if done and ids[-1] not in eos:
            ids.append(eos_token_id)
        out.append(ids[:max_length] if max_length is not None else ids)
    return out
