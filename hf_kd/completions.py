"""Where a distillation batch's completions come from: a shared draw of the source, teacher sampling, dataset text.

Trainer-side helpers used by `hf_kd.DistillationTrainer`; none of them touches a trainer. The sampling itself, and
the generic `left_pad` / `trim_at_eos`, live in `hf_kd.sampling`.
"""

from __future__ import annotations

import torch

from .sampling import from_generation_config, sample_batch, stream_seed

__all__ = [
    "TEACHER_STATES",
    "CompletionSampler",
    "dataset_completion_ids",
    "draw_source",
    "pad_states",
    "reuses_sampling_states",
    "tokenize_completions",
]

TEACHER_STATES = "teacher_head_inputs"  # batch key: the teacher's hidden states from its sampling pass


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


class CompletionSampler:
    """The trainer's own sampling (the teacher's, and on-policy the student's), through `hf_kd.sampling.sample_batch`.

    The law is TRL's `temperature`, a sharpening (`selectivity` or `target_entropy`; the student samples at 1) and the
    trainer's `generation_config` (lengths, top-k, top-p, min_new_tokens); settings `hf_kd.sampling` does not
    implement (e.g. ``repetition_penalty``, ``min_p``) raise a `ValueError` naming them. Row r of a call draws its
    uniforms from ``stream_seed(seed, *stream, mode, step, process, call, r)`` (call: the how-many-th call at that
    step, as evaluation samples several batches a step), so rows, processes and steps have their own streams and a
    resumed run redraws the same completions.

    Args:
        generation_config (`GenerationConfig`): TRL's ``trainer.generation_config``.
        temperature (`float`): TRL's temperature.
        seed (`int`): the run's seed.
        selectivity (`float`): beta applied on top of the temperature.
        target_entropy (`float`, *optional*): solve beta per step for this entropy instead.
        per_token (`bool`): one beta per row (with `target_entropy`).
        stream (`tuple`): keys that separate this sampler's seeds from another's (the teacher's is empty).
    """

    def __init__(
        self,
        generation_config,
        temperature: float,
        seed: int,
        *,
        selectivity: float = 1.0,
        target_entropy: float | None = None,
        per_token: bool = True,
        stream: tuple = (),
    ):
        self.params = from_generation_config(
            generation_config,
            temperature=temperature,
            selectivity=selectivity,
            target_entropy=target_entropy,
            per_token=per_token,
        )
        self.seed, self.stream = seed, tuple(stream)
        self._calls: dict[tuple, int] = {}

    @classmethod
    def for_teacher(cls, generation_config, args, temperature: float) -> CompletionSampler:
        """The teacher's sampler: the config's `selectivity` or `target_entropy` on top of TRL's temperature."""
        return cls(
            generation_config,
            temperature,
            args.seed,
            selectivity=1.0 if args.target_entropy is not None else args.selectivity,
            target_entropy=args.target_entropy,
            per_token=args.per_token_selectivity,
        )

    def __call__(self, model, prompt_ids: list[list[int]], key: tuple, **kwargs) -> list[dict]:
        """`sample_batch`'s rows for the prompts: ``completion_ids`` (ending at the first EOS, kept) and the rest.

        Args:
            model (`PreTrainedModel`): the model that samples (put in eval mode for the call).
            prompt_ids (`list[list[int]]`): tokenized prompts, unpadded.
            key (`tuple`): (mode, global step, process index).
            kwargs: ``eos_token_ids``, ``pad_token_id`` and ``return_head_inputs`` of `sample_batch`.
        """
        calls = self._calls.get(key, 0)
        self._calls = {key: calls + 1}
        seeds = [stream_seed(self.seed, *self.stream, *key, calls, r) for r in range(len(prompt_ids))]
        was_training = model.training
        model.eval()
        try:
            return sample_batch(model, prompt_ids, seeds, self.params, **kwargs)
        finally:
            model.train(was_training)


def reuses_sampling_states(teacher, tools) -> bool:
    """Whether the loss can read the teacher's hidden states from its sampling pass instead of running it again.

    The sampling pass places each row's positions from its first real token; the loss's forward over the
    left-padded batch (TRL's ``_get_last_hidden_state``, no ``position_ids``) counts them from the padding. The two
    give the same states, to float rounding, when positions enter only through rotary embeddings (attention then
    sees relative positions), so reuse needs a rotary teacher; with `tools` a completion is built over several turns.
    """
    return (
        not tools
        and teacher.get_output_embeddings() is not None
        and any(name.endswith("rotary_emb") for name, _ in teacher.named_modules())
    )


def pad_states(states: list[torch.Tensor], width: int) -> torch.Tensor:
    """Per-row states `(T_i, H)` as a `(B, width, H)` batch aligned with the right-padded completions (zeros after)."""
    batch = torch.nn.utils.rnn.pad_sequence(states, batch_first=True)[:, :width]
    return torch.nn.functional.pad(batch, (0, 0, 0, width - batch.shape[1]))


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
