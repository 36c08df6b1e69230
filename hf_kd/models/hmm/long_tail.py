"""The miniature experiment's ground truth: a hidden Markov model with a long, learnable tail.

Why this p*. Sharpening a teacher (temperature tau < 1) removes low-probability continuations; a student trained on
its samples then covers less of p* (recall falls) and produces more typical text (precision rises). For that to show
at CPU scale the tail must be (a) a sizeable share of p*'s mass, so recall has something to lose, (b) made of many
individually rare tokens, which a temperature suppresses far more than the frequent ones (``p**(1/tau)``), and (c)
learnable by a small transformer from a few thousand sequences, so the teacher holds it before sharpening removes it.
Here every hidden state owns two frequent "head" tokens (the state is readable from the text) and draws rare tokens
from a shared pool with its own Zipf profile (the tail depends on the context, so it has to be learnt, not guessed);
states are sticky, so the context says which tail applies. A small floor on every id keeps any sequence possible
under p* (a student's odd sample costs precision instead of an infinite log-likelihood).
"""

from __future__ import annotations

import torch

from .configuration_hmm import HMMConfig
from .modeling_hmm import HMMModel

NUM_SPECIAL = 3  # <pad> = 0, <s> = 1, </s> = 2


def _zipf(n: int) -> torch.Tensor:
    weights = 1.0 / torch.arange(1, n + 1, dtype=torch.float64)
    return weights / weights.sum()


def long_tail_hmm(
    num_states: int = 8,
    head_probs: tuple[float, ...] = (0.45, 0.25),
    tail_pool: int = 16,
    tail_size: int = 8,
    tail_mass: float = 0.25,
    eos_prob: float = 0.04,
    floor_mass: float = 0.01,
    stay_prob: float = 0.8,
    seed: int = 0,
) -> HMMModel:
    """An [`HMMModel`] whose emissions are a per-state head plus a context-dependent Zipf tail (see module docstring).

    Token ids: 0 ``<pad>``, 1 ``<s>``, 2 ``</s>``, then ``len(head_probs)`` head tokens per state, then the
    `tail_pool` shared rare tokens. State k emits its head tokens with `head_probs`, `tail_size` pool tokens (a random
    subset in a random order) with Zipf weights summing to `tail_mass`, EOS with `eos_prob`, and `floor_mass` spread
    evenly over every id. It stays in its state with `stay_prob` and otherwise moves to another state with Zipf weights
    over a random order of the others (rare transitions are a tail too). The start is uniform.

    Returns:
        `HMMModel` (float64 parameters).
    """
    head = torch.tensor(head_probs, dtype=torch.float64)
    if not 0 < tail_size <= tail_pool:
        raise ValueError(f"tail_size must lie in [1, tail_pool={tail_pool}] (got {tail_size}).")
    if num_states < 2 or not 0 <= stay_prob < 1:
        raise ValueError(f"need num_states >= 2 and 0 <= stay_prob < 1 (got {num_states}, {stay_prob}).")
    leftover = 1.0 - float(head.sum()) - tail_mass - eos_prob - floor_mass
    if (head <= 0).any() or min(tail_mass, eos_prob) <= 0 or floor_mass < 0 or abs(leftover) > 1e-9:
        raise ValueError(
            "head_probs, tail_mass, eos_prob and floor_mass must be positive and sum to 1 "
            f"(they leave {leftover:+.3g})."
        )
    gen = torch.Generator().manual_seed(seed)
    num_head = len(head_probs) * num_states
    vocab = NUM_SPECIAL + num_head + tail_pool
    emission = torch.full((num_states, vocab), floor_mass / vocab, dtype=torch.float64)
    transition = torch.zeros(num_states, num_states, dtype=torch.float64)
    for k in range(num_states):
        first = NUM_SPECIAL + k * len(head_probs)
        emission[k, first : first + len(head_probs)] += head
        tail_ids = NUM_SPECIAL + num_head + torch.randperm(tail_pool, generator=gen)[:tail_size]
        emission[k, tail_ids] += tail_mass * _zipf(tail_size)
        emission[k, 2] += eos_prob
        others = [j for j in torch.randperm(num_states, generator=gen).tolist() if j != k]
        transition[k, others] = (1 - stay_prob) * _zipf(num_states - 1)
        transition[k, k] = stay_prob
    config = HMMConfig(num_states=num_states, vocab_size=vocab, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = HMMModel(config).double()
    return model.set_parameters(torch.ones(num_states), transition, emission).eval()
