"""A hidden Markov model as a transformers model: a toy language model with exact likelihoods and free samples.

The chain starts in state ``s_1 ~ pi``, emits ``x_t ~ B[s_t, :]`` and moves on ``s_{t+1} ~ A[s_t, :]``; a sequence
ends when it emits EOS. ``pi = softmax(initial_logits)``, ``A = softmax(transition_logits)`` row-wise and
``B = softmax(emission_logits)`` row-wise. The probability of a sequence (or of a prefix cut off before its EOS) is
exact by the forward algorithm, so the model can serve as the ground truth p* of precision and recall.

Sampling with a *selectivity* beta works like a language model's temperature 1/beta: at each step the next-token
distribution given the prefix, ``p(x_t | x_<t) = sum_k P(s_t = k | x_<t) B[k, x_t]`` (the filtered state belief
times the emissions), is raised to the power beta and renormalised. At beta = 1 this is ancestral sampling.

Self-contained on purpose: this file (with its sibling configuration_hmm.py) is copied next to a saved checkpoint and
loaded with ``trust_remote_code=True`` where hf_kd is not installed, so it imports only torch and transformers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_hmm import HMMConfig


@dataclass
class HMMOutput(ModelOutput):
    """Output of [`HMMModel.forward`].

    Args:
        loss (`torch.Tensor`, a scalar): negative log-likelihood per token of the batch, in nats.
        log_prob (`torch.Tensor` of shape `(N,)`): ``log p(x)`` of every sequence.
    """

    loss: torch.Tensor | None = None
    log_prob: torch.Tensor | None = None


def forward_log_likelihood(
    ids: torch.Tensor, lengths: torch.Tensor, log_pi: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor
) -> torch.Tensor:
    """Log-probability of each (prefix of a) sequence by the forward algorithm, in log space.

    ``alpha_1 = log pi + log B[:, x_1]``, ``alpha_t = logsumexp_j(alpha_{t-1, j} + log A[j, :]) + log B[:, x_t]`` and
    ``log p(x_1..x_L) = logsumexp(alpha_L)`` (0 for an empty sequence).

    Args:
        ids (`torch.LongTensor` of shape `(N, T)`): token ids, right-padded with any valid id.
        lengths (`torch.LongTensor` of shape `(N,)`): real lengths, ``0 <= L_i <= T``.
        log_pi (`torch.Tensor` of shape `(K,)`), log_a (`(K, K)`), log_b (`(K, V)`): log initial, transition and
            emission probabilities.

    Returns:
        `torch.Tensor` of shape `(N,)`.
    """
    n, width = ids.shape
    alpha = log_pi.expand(n, -1)
    total = torch.zeros(n, dtype=log_pi.dtype, device=log_pi.device)
    for t in range(width):
        emit = log_b[:, ids[:, t]].T  # (N, K)
        alpha = (alpha if t == 0 else torch.logsumexp(alpha[:, :, None] + log_a, dim=1)) + emit
        done = lengths == t + 1
        total = torch.where(done, torch.logsumexp(alpha, dim=-1), total)
    return total


class HMMModel(PreTrainedModel):
    r"""A hidden Markov model over token ids: the ground-truth language model p* of hf_kd's miniature experiment.

    It offers hf_kd's generative-model protocol: [`~HMMModel.sample`] returns completions (token id lists, ending
    with EOS when the chain stopped) and [`~HMMModel.log_likelihood`] scores such lists exactly, one unit per token,
    the same units as [`hf_kd.CausalLMAdapter`] with the BOS token as prompt.

    Example:
        ```python
        >>> import torch
        >>> from hf_kd.models.hmm import HMMConfig, HMMModel
        >>> model = HMMModel(HMMConfig(num_states=3, vocab_size=10))
        >>> samples = model.sample(4, max_new_tokens=5, generator=torch.Generator().manual_seed(0))
        >>> total, units = model.log_likelihood(samples)
        ```
    """

    config_class = HMMConfig
    base_model_prefix = "hmm"
    main_input_name = "input_ids"

    def __init__(self, config: HMMConfig):
        super().__init__(config)
        k, v = config.num_states, config.vocab_size
        self.initial_logits = nn.Parameter(torch.zeros(k))
        self.transition_logits = nn.Parameter(torch.zeros(k, k))
        self.emission_logits = nn.Parameter(torch.zeros(k, v))
        self.post_init()

    def _init_weights(self, module):
        # Uniform start and transitions, random emissions (distinct rows break the symmetry between states);
        # `set_parameters` overwrites them. torch.nn.init is guarded by transformers, so loaded weights are kept.
        if isinstance(module, HMMModel):
            nn.init.zeros_(module.initial_logits)
            nn.init.zeros_(module.transition_logits)
            nn.init.normal_(module.emission_logits)

    # ----- the distribution -----

    def log_tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log pi (K,), log A (K, K), log B (K, V))``, each row normalised."""
        return (
            torch.log_softmax(self.initial_logits, dim=-1),
            torch.log_softmax(self.transition_logits, dim=-1),
            torch.log_softmax(self.emission_logits, dim=-1),
        )

    @torch.no_grad()
    def set_parameters(self, initial=None, transition=None, emission=None) -> HMMModel:
        """Set the chain from probabilities (rows are renormalised; any left `None` is kept).

        Args:
            initial (`torch.Tensor` of shape `(K,)`), transition (`(K, K)`), emission (`(K, V)`): non-negative, each
                row with a positive sum. A zero emission probability makes sequences with that token impossible
                (log-likelihood ``-inf``); keep a floor if other models' samples will be scored.

        Returns:
            The model itself.
        """
        k, v = self.config.num_states, self.config.vocab_size
        for name, value, shape, param in (
            ("initial", initial, (k,), self.initial_logits),
            ("transition", transition, (k, k), self.transition_logits),
            ("emission", emission, (k, v), self.emission_logits),
        ):
            if value is None:
                continue
            value = torch.as_tensor(value, dtype=torch.float64)
            if value.shape != shape or not torch.isfinite(value).all() or (value < 0).any():
                raise ValueError(f"{name} must be finite non-negative probabilities of shape {shape}, got {value}.")
            if not (value.sum(-1) > 0).all():
                raise ValueError(f"every row of {name} needs a positive sum.")
            param.copy_((value / value.sum(-1, keepdim=True)).log().to(param.dtype))
        return self

    def _as_batch(self, samples) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (N, T) right-padded with EOS, lengths (N,)) of a list of id sequences, checked."""
        if isinstance(samples, torch.Tensor) and samples.dim() == 2:
            samples = list(samples)
        if (
            isinstance(samples, (str, bytes))
            or not isinstance(samples, Sequence)
            or (len(samples) and isinstance(samples[0], str))
        ):
            raise ValueError(
                "samples must be a list of token id sequences (e.g. from HMMModel.sample or "
                "CausalLMAdapter.sample(..., return_tokens=True)), not text."
            )
        rows = [s.tolist() if isinstance(s, torch.Tensor) else [int(t) for t in s] for s in samples]
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        width = int(lengths.max()) if rows else 0
        ids = torch.full((len(rows), width), self.config.eos_token_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            raise ValueError(f"token ids must lie in [0, vocab_size={self.config.vocab_size}); got one outside.")
        return ids.to(self.initial_logits.device), lengths.to(self.initial_logits.device)

    def forward(self, input_ids, attention_mask=None, return_dict: bool | None = None, **kwargs) -> HMMOutput | tuple:
        """Negative log-likelihood per token of a batch (so `transformers.Trainer` can fit the chain by gradients).

        Args:
            input_ids (`torch.LongTensor` of shape `(N, T)`): completions (no BOS), right-padded.
            attention_mask (`torch.Tensor` of shape `(N, T)`, *optional*): 1 on real tokens (all real if omitted).
            return_dict (`bool`, *optional*): return a tuple ``(loss, log_prob)`` when `False`.
            **kwargs: ignored (e.g. ``num_items_in_batch`` passed by the Trainer).

        Returns:
            [`HMMOutput`] with ``loss`` (scalar) and ``log_prob`` `(N,)`.
        """
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        lengths = mask.long().sum(-1)
        log_prob = forward_log_likelihood(input_ids, lengths, *self.log_tables())
        output = HMMOutput(loss=-log_prob.sum() / lengths.sum().clamp_min(1), log_prob=log_prob)
        use_dict = return_dict if return_dict is not None else self.config.use_return_dict
        return output if use_dict else output.to_tuple()

    # ----- the generative-model protocol -----

    @torch.no_grad()
    def log_likelihood(self, samples) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact log-probability of each completion (forward algorithm) and its number of tokens.

        Args:
            samples (`list[list[int]]`): completions without the BOS prompt; one ending before its EOS is scored as a
                prefix (its probability marginalises over every continuation).

        Returns:
            `tuple(torch.Tensor, torch.Tensor)`: totals (float64, `(N,)`) and token counts (int64, `(N,)`).
        """
        ids, lengths = self._as_batch(samples)
        tables = [t.double() for t in self.log_tables()]
        return forward_log_likelihood(ids, lengths, *tables).cpu(), lengths.cpu()

    @torch.no_grad()
    def sample(
        self,
        n: int,
        selectivity: float = 1.0,
        generator: torch.Generator | None = None,
        max_new_tokens: int = 32,
    ) -> list[list[int]]:
        """Draw `n` completions token by token from the next-token distribution raised to the power beta.

        At each step ``q_t = softmax(beta * log p(. | x_<t))`` with ``p(. | x_<t) = b_t @ B`` for the filtered belief
        ``b_t = P(s_t | x_<t)``; after drawing ``x_t`` the belief becomes ``b_{t+1} ∝ (b_t * B[:, x_t]) @ A``.

        Args:
            n (`int`): number of completions.
            selectivity (`float`): beta > 0 (temperature 1 / beta); 1 samples the model itself.
            generator (`torch.Generator`, *optional*): for reproducible draws.
            max_new_tokens (`int`): length cap; a completion stops earlier at EOS (kept).

        Returns:
            `list[list[int]]`: token ids of each completion.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer number of samples (got {n!r}).")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer (got {max_new_tokens!r}).")
        beta = float(selectivity)
        if math.isnan(beta) or beta <= 0 or math.isinf(beta):
            raise ValueError(f"selectivity must be a finite number > 0 (got {selectivity}); 1 samples the model.")
        log_pi, log_a, log_b = (t.double().cpu() for t in self.log_tables())
        belief = log_pi.expand(n, -1).clone()  # log P(s_t | x_<t), (n, K)
        out = [[] for _ in range(n)]
        active = torch.arange(n)
        eos = self.config.eos_token_id
        for _ in range(max_new_tokens):
            if not len(active):
                break
            next_log_p = torch.logsumexp(belief[:, :, None] + log_b, dim=1)  # (n, V)
            token = torch.multinomial(torch.softmax(beta * next_log_p, dim=-1), 1, generator=generator).squeeze(-1)
            for i, t in zip(active.tolist(), token.tolist()):
                out[i].append(t)
            posterior = belief + log_b[:, token].T
            belief = torch.logsumexp(posterior[:, :, None] + log_a, dim=1)
            belief = belief - torch.logsumexp(belief, dim=-1, keepdim=True)
            keep = token != eos
            active, belief = active[keep], belief[keep]
        return out
