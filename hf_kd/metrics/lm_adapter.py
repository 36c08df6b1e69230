"""`CausalLMAdapter`: the sample / log-likelihood protocol for a (causal LM, tokenizer) pair.

Scoring is the expensive half of precision and recall, so it is written for throughput and bounded memory:
sequences are sorted by length and batched under a token budget (almost no compute goes to padding), the last
token of each sequence is never fed (it predicts nothing that is scored), and the output head is applied only to
the hidden states of scored positions, in chunks of `head_chunk_tokens`, with the log-softmax in float32. No
`(batch, length, vocab)` tensor is ever built.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..fast_decode import packed_weights
from ..sampling import SamplingParams, sample_batch, sample_seed

__all__ = ["CausalLMAdapter", "check_tokenizer_matches", "score_token_sequences"]


def _unwrap(model):
    # PEFT models keep their adapters inside the base model, so scoring the base model scores the adapted weights.
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _backbone_and_head(model):
    """(backbone returning last_hidden_state, head mapping hidden -> logits) or None when the layout is unknown."""
    model = _unwrap(model)
    backbone = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if backbone is None or backbone is model or head is None:
        return None
    config = model.config
    if getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        return None  # models that rescale logits after the head (e.g. Cohere) go through the full forward
    cap = getattr(config, "final_logit_softcapping", None)

    def head_fn(hidden: torch.Tensor) -> torch.Tensor:
        logits = head(hidden).float()
        return cap * torch.tanh(logits / cap) if cap else logits

    return backbone, head_fn


def _length_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped longest-first so that each batch's padded size ``len(batch) * max_len`` fits the budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        if current and (len(current) >= batch_size or (len(current) + 1) * lengths[current[0]] > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _padded_batch(sequences, starts, pad_token_id: int):
    """Right-padded inputs `(B, W)`, targets `(B, W)`, attention mask and scored positions for `sequences` minus
    their last token (``W = max length - 1``; position t predicts token t + 1)."""
    width = len(sequences[0]) - 1  # sequences come longest first
    ids = torch.full((len(sequences), width + 1), pad_token_id, dtype=torch.long)
    scored = torch.zeros(len(sequences), width, dtype=torch.bool)
    for r, (seq, start) in enumerate(zip(sequences, starts)):
        ids[r, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        scored[r, start - 1 : len(seq) - 1] = True
    mask = (torch.arange(width)[None, :] < torch.tensor([len(seq) - 1 for seq in sequences])[:, None]).long()
    return ids[:, :-1], ids[:, 1:], mask, scored


def _score_batch(model, split, sequences, starts, pad_token_id: int, head_chunk_tokens: int, device) -> torch.Tensor:
    """Sum of the scored tokens' log-probabilities of one length batch, float64 `(B,)` on `device`."""
    inputs, targets, mask, scored = (t.to(device) for t in _padded_batch(sequences, starts, pad_token_id))
    seg = torch.arange(len(sequences), device=device)[:, None].expand_as(scored)[scored]
    tgt = targets[scored]
    if split is None:
        logits = model(input_ids=inputs, attention_mask=mask).logits[scored].float()
        chunks = [(logits, tgt, seg)]
    else:
        backbone, head_fn = split
        hidden = backbone(input_ids=inputs, attention_mask=mask).last_hidden_state[scored]
        step = head_chunk_tokens
        chunks = (
            (head_fn(hidden[c : c + step]), tgt[c : c + step], seg[c : c + step])
            for c in range(0, hidden.shape[0], step)
        )
    out = torch.zeros(len(sequences), dtype=torch.float64, device=device)
    for logits, t, s in chunks:
        logp = logits.gather(-1, t[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        out.index_add_(0, s, logp.double())
    return out


@torch.no_grad()
def score_token_sequences(
    model,
    sequences: Sequence[Sequence[int]],
    starts: Sequence[int],
    batch_size: int = 64,
    max_batch_tokens: int = 16384,
    head_chunk_tokens: int = 1024,
    pad_token_id: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of token log-probabilities of each sequence from position `starts[i]` on.

    ``total_i = sum_{t = s_i}^{L_i - 1} log p(x_t | x_{<t})`` and ``units_i = max(L_i - s_i, 0)``, with the
    log-softmax in float32 over the scored positions only.

    Args:
        model: a causal LM (transformers `PreTrainedModel`, optionally PEFT-wrapped).
        sequences (`Sequence[Sequence[int]]`): N token id sequences without padding.
        starts (`Sequence[int]`): N indices of the first scored token (>= 1).
        batch_size (`int`): most sequences in a forward pass.
        max_batch_tokens (`int`): most padded tokens in a forward pass (bounds activation memory).
        head_chunk_tokens (`int`): scored positions per output-head chunk (bounds logit memory to
            ``head_chunk_tokens * vocab`` floats).
        pad_token_id (`int`): id used to fill batches (never scored, never attended to).
        progress (`bool`): show a progress bar over batches.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: totals (float64, shape `(N,)`) and scored-token counts (int64, `(N,)`).
    """
    if len(sequences) != len(starts):
        raise ValueError(f"got {len(sequences)} sequences but {len(starts)} start positions; give one per sequence.")
    if any(s < 1 for s in starts):
        raise ValueError("start positions must be >= 1: the first token has no context and cannot be scored.")
    if batch_size < 1 or max_batch_tokens < 1 or head_chunk_tokens < 1:
        raise ValueError("batch_size, max_batch_tokens and head_chunk_tokens must be positive integers.")
    n = len(sequences)
    totals = torch.zeros(n, dtype=torch.float64)
    units = torch.tensor([max(len(s) - st, 0) for s, st in zip(sequences, starts)], dtype=torch.int64)
    # Inputs are the sequence minus its last token: the last hidden state would predict nothing that is scored.
    todo = [i for i in range(n) if units[i] > 0]
    if not todo:
        return totals, units
    split = _backbone_and_head(model)
    device = next(_unwrap(model).parameters()).device
    batches = _length_batches([len(sequences[i]) - 1 for i in todo], batch_size, max_batch_tokens)
    for batch in tqdm(batches, desc="scoring", disable=not progress, leave=False):
        rows = [todo[j] for j in batch]
        totals[rows] = _score_batch(
            model,
            split,
            [sequences[i] for i in rows],
            [starts[i] for i in rows],
            pad_token_id,
            head_chunk_tokens,
            device,
        ).cpu()
    return totals, units


def check_tokenizer_matches(model, tokenizer) -> None:
    """Refuse a tokenizer that is not `model`'s: more ids than the model has rows, or another EOS id.

    Scoring with another model's tokenizer gives numbers, but meaningless ones (or an index error deep in torch).
    Only what can be read off both is compared: the vocabulary size against the output embedding, and the
    tokenizer's EOS id against the model's config and generation config (when both are set).
    """
    base = _unwrap(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    rows = head.weight.shape[0] if head is not None and hasattr(head, "weight") else None
    rows = rows or getattr(getattr(base, "config", None), "vocab_size", None)
    if rows is not None and len(tokenizer) > rows:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary only {rows}: it is not this "
            "model's tokenizer. Load both from the same checkpoint (AutoTokenizer.from_pretrained(model_path))."
        )
    eos = tokenizer.eos_token_id
    model_eos = set()
    for config in (getattr(base, "config", None), getattr(base, "generation_config", None)):
        value = getattr(config, "eos_token_id", None)
        model_eos |= set(value if isinstance(value, (list, tuple)) else [] if value is None else [value])
    if eos is not None and model_eos and eos not in model_eos:
        raise ValueError(
            f"the tokenizer's EOS id {eos} is not the model's ({sorted(model_eos)}): it is not this model's "
            "tokenizer. Load both from the same checkpoint, or set model.generation_config.eos_token_id if the "
            "pairing is intended."
        )


class CausalLMAdapter:
    """Gives a causal language model the generative-model protocol: `sample` and `log_likelihood`.

    Samples are texts (or token id lists with ``return_tokens=True``). Without a prompt a sequence is scored from
    its second token on (the first token has no context, as in the paper); with a prompt, the completion is scored
    conditioned on it and the prompt itself is not scored.

    Args:
        model: a transformers causal LM (optionally PEFT-wrapped); put it on the device you want it to run on.
        tokenizer: its tokenizer.
        prompt (`str` or `list[int]`, *optional*): default prompt of `sample` and `log_likelihood`.
        batch_size (`int`): sequences per batch, for sampling and scoring.
        max_batch_tokens (`int`): most (padded) tokens per scoring batch.
        head_chunk_tokens (`int`): scored positions per output-head chunk.
        progress (`bool`): show progress bars.
    """

    def __init__(
        self,
        model,
        tokenizer,
        prompt: str | list[int] | None = None,
        batch_size: int = 32,
        max_batch_tokens: int = 16384,
        head_chunk_tokens: int = 1024,
        progress: bool = True,
    ):
        if tokenizer is None:
            raise ValueError("CausalLMAdapter needs the model's tokenizer (got None).")
        sizes = {
            "batch_size": batch_size,
            "max_batch_tokens": max_batch_tokens,
            "head_chunk_tokens": head_chunk_tokens,
        }
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CausalLMAdapter {name} must be a positive integer (got {value!r}).")
        check_tokenizer_matches(model, tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.head_chunk_tokens = head_chunk_tokens
        self.progress = progress

    @property
    def device(self) -> torch.device:
        return next(_unwrap(self.model).parameters()).device

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
            if candidate is not None:
                return candidate
        return 0

    def tokenizer_signature(self) -> str:
        """A hash of the vocabulary: equal signatures mean per-token averages are comparable."""
        vocab = sorted(self.tokenizer.get_vocab().items())
        return hashlib.sha1(repr(vocab).encode()).hexdigest()

    # ------------------------------------------------------------------ encoding
    def _prompt_ids(self, prompt, n: int) -> list[list[int]] | None:
        prompt = self.prompt if prompt is None else prompt
        if prompt is None:
            return None
        if isinstance(prompt, str) or (len(prompt) > 0 and isinstance(prompt[0], int)) or len(prompt) == 0:
            ids = self._encode_prompt(prompt)
            return [ids] * n
        if len(prompt) != n:
            raise ValueError(f"got {len(prompt)} prompts for {n} samples; give one prompt, or one per sample.")
        return [self._encode_prompt(p) for p in prompt]

    def _encode_prompt(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        return [int(t) for t in prompt]

    def encode(self, samples: Any, prompt=None, attention_mask=None) -> tuple[list[list[int]], list[int]]:
        """Token ids of each sample (prompt included) and the index of its first scored token.

        Args:
            samples: texts, token id lists / 1-D tensors, a padded `(N, T)` id tensor (left or right padding) with
                `attention_mask`, or a dict / `BatchEncoding` holding ``input_ids`` and ``attention_mask``.
            prompt (`str`, `list[int]` or one per sample, *optional*): condition on it (defaults to ``self.prompt``).
            attention_mask (`torch.Tensor` of shape `(N, T)`, *optional*): marks real tokens of a padded tensor.

        Returns:
            `tuple[list[list[int]], list[int]]`: sequences and first scored positions.
        """
        if isinstance(samples, dict) or hasattr(samples, "keys"):
            attention_mask = samples.get("attention_mask", attention_mask)
            samples = samples["input_ids"]
        if isinstance(samples, torch.Tensor):
            if samples.dim() != 2:
                raise ValueError(f"a tensor of samples must be (N, T) token ids; got shape {tuple(samples.shape)}.")
            if attention_mask is None:
                raise ValueError("a padded (N, T) tensor of ids needs its attention_mask to tell padding apart.")
            samples = [row[m.bool()].tolist() for row, m in zip(samples, attention_mask)]
        samples = list(samples)
        if samples and isinstance(samples[0], str):
            with_prompt = (self.prompt if prompt is None else prompt) is not None
            samples = self.tokenizer(samples, add_special_tokens=not with_prompt)["input_ids"]
        else:
            samples = [s.tolist() if isinstance(s, torch.Tensor) else [int(t) for t in s] for s in samples]
        prompts = self._prompt_ids(prompt, len(samples))
        if prompts is None:
            return samples, [1] * len(samples)
        return [p + s for p, s in zip(prompts, samples)], [max(len(p), 1) for p in prompts]

    # ------------------------------------------------------------------ protocol
    def log_likelihood(
        self, samples: Any, prompt=None, attention_mask=None, progress: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sequence total log-probability (nats) and number of scored tokens.

        Args:
            samples: see [`~CausalLMAdapter.encode`].
            prompt: condition on it; the prompt is not scored (defaults to ``self.prompt``).
            attention_mask (`torch.Tensor`, *optional*): for a padded id tensor.
            progress (`bool`, *optional*): override ``self.progress``.

        Returns:
            `tuple[torch.Tensor, torch.Tensor]`: ``total`` (float64, `(N,)`) and ``num_tokens`` (int64, `(N,)`).
        """
        sequences, starts = self.encode(samples, prompt=prompt, attention_mask=attention_mask)
        was_training = self.model.training
        self.model.eval()
        try:
            return score_token_sequences(
                self.model,
                sequences,
                starts,
                batch_size=self.batch_size,
                max_batch_tokens=self.max_batch_tokens,
                head_chunk_tokens=self.head_chunk_tokens,
                pad_token_id=self.pad_token_id,
                progress=self.progress if progress is None else progress,
            )
        finally:
            self.model.train(was_training)

    def num_bytes(self, samples: Any, prompt=None, attention_mask=None) -> torch.Tensor:
        """UTF-8 bytes of the scored part of each sample (its decoded text from the first scored token on)."""
        sequences, starts = self.encode(samples, prompt=prompt, attention_mask=attention_mask)
        texts = self.tokenizer.batch_decode([s[st:] for s, st in zip(sequences, starts)], skip_special_tokens=True)
        return torch.tensor([len(t.encode("utf-8")) for t in texts], dtype=torch.int64)

    def _sampling_params(self, selectivity, temperature, top_k, top_p, max_new_tokens, min_new_tokens):
        """The law of `sample`: beta from `selectivity` or ``1 / temperature`` (0: greedy), then top-k / top-p."""
        if selectivity is not None and temperature is not None:
            raise ValueError("give selectivity (beta) or temperature (1 / beta), not both.")
        if temperature is not None:
            if not float(temperature) >= 0:
                raise ValueError(f"temperature must be >= 0 (got {temperature}); 0 means greedy decoding.")
            selectivity = math.inf if temperature == 0 else 1.0 / float(temperature)
        return SamplingParams(
            selectivity=1.0 if selectivity is None else float(selectivity),
            top_k=top_k,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
        )

    def _start_prompts(self, prompt, n: int) -> list[list[int]]:
        prompts = self._prompt_ids(prompt, n)
        if prompts is None:
            tok = self.tokenizer
            start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            if start is None:
                raise ValueError("the tokenizer has neither a BOS nor an EOS token to start from; give a prompt.")
            prompts = [[start]] * n
        if any(len(p) == 0 for p in prompts):
            raise ValueError("an empty prompt leaves nothing to condition on; give a prompt with at least one token.")
        return prompts

    @torch.no_grad()
    def sample(
        self,
        n: int,
        prompt=None,
        max_new_tokens: int = 64,
        selectivity: float | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        return_tokens: bool = False,
        progress: bool | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_new_tokens: int = 0,
    ) -> list[str] | list[list[int]]:
        """Draw `n` completions by ancestral sampling through `hf_kd.sampling` (the law every hf_kd path uses).

        Sample i draws its uniforms from ``sample_seed(seed, i)``, so it does not depend on the batch size, and the
        global RNG state is left untouched.

        Args:
            n (`int`): number of samples.
            prompt (`str`, `list[int]` or one per sample, *optional*): defaults to ``self.prompt``, else the BOS
                token (EOS when there is no BOS).
            max_new_tokens (`int`): length cap of each completion.
            selectivity (`float`, *optional*): sample from ``p**beta`` renormalised per token (temperature
                ``1 / beta``); ``inf`` is greedy decoding. Give this or `temperature`, not both (default 1).
            temperature (`float`, *optional*): sampling temperature ``1 / beta`` (0: greedy).
            seed (`int`, *optional*) / generator (`torch.Generator`, *optional*): make the draw reproducible (the
                generator gives the seed).
            batch_size (`int`, *optional*): overrides ``self.batch_size``.
            return_tokens (`bool`): return completion token ids (EOS kept when generated) instead of texts.
            progress (`bool`, *optional*): override ``self.progress``.
            top_k (`int`, *optional*), top_p (`float`, *optional*): truncation after sharpening (None: off).
            min_new_tokens (`int`): EOS cannot be drawn before this many tokens.

        Returns:
            `list[str]` or `list[list[int]]`: the completions, without the prompt.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0 (got {n}).")
        params = self._sampling_params(selectivity, temperature, top_k, top_p, max_new_tokens, min_new_tokens)
        prompts = self._start_prompts(prompt, n)
        if seed is None:
            gen = generator if generator is not None else torch.Generator().manual_seed(secrets.randbits(62))
            seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        bs, eos = batch_size or self.batch_size, self.tokenizer.eos_token_id
        ids = {"eos_token_ids": [] if eos is None else [eos], "pad_token_id": self.pad_token_id}
        out: list = []
        was_training = self.model.training
        self.model.eval()
        show = self.progress if progress is None else progress
        try:
            with packed_weights(self.model, "metrics sampling"):
                for b in tqdm(range(0, n, bs), desc="sampling", disable=not show, leave=False):
                    seeds = [sample_seed(seed, i) for i in range(b, min(b + bs, n))]
                    out.extend(
                        row["completion_ids"]
                        for row in sample_batch(self.model, prompts[b : b + bs], seeds, params, **ids)
                    )
        finally:
            self.model.train(was_training)
        if return_tokens:
            return out
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)
