"""CausalLMAdapter: scoring against an independent brute force, memory bounds, and sampling."""

import pytest
import torch

from hf_kd.metrics import CausalLMAdapter
from hf_kd.metrics.lm_adapter import _length_batches

TEXTS = [
    "the cat sat on the mat",
    "a dog",
    "the big red dog ran fast and then it was very happy",
    "cat",
    "small blue cat sat",
    "the dog was sad and the cat was happy then a big dog ran on the mat",
]


def brute_force(model, ids, start):
    """One sequence, full logits, float64 log-softmax: sum_{t >= start} log p(x_t | x_<t)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids))), max(len(ids) - start, 0)


@pytest.fixture(scope="module")
def adapter(teacher_model, tokenizer):
    return CausalLMAdapter(teacher_model, tokenizer, batch_size=4, max_batch_tokens=40, progress=False)


def test_texts_match_brute_force_first_token_unscored(adapter, teacher_model, tokenizer):
    total, units = adapter.log_likelihood(TEXTS)
    assert total.shape == units.shape == (len(TEXTS),)
    for i, text in enumerate(TEXTS):
        ids = tokenizer(text)["input_ids"]
        ref_total, ref_units = brute_force(teacher_model, ids, 1)
        assert units[i].item() == ref_units == len(ids) - 1
        assert total[i].item() == pytest.approx(ref_total, abs=1e-4)
    assert total[3].item() == 0.0 and units[3].item() == 0  # a one-token text has nothing to score


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batches_match_brute_force(adapter, teacher_model, tokenizer, side):
    tokenizer.padding_side = side
    try:
        batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = "right"
    total, units = adapter.log_likelihood(batch)
    total2, _ = adapter.log_likelihood(batch["input_ids"], attention_mask=batch["attention_mask"])
    for i, text in enumerate(TEXTS):
        ref_total, ref_units = brute_force(teacher_model, tokenizer(text)["input_ids"], 1)
        assert units[i].item() == ref_units
        assert total[i].item() == pytest.approx(ref_total, abs=1e-4)
        assert total2[i].item() == pytest.approx(ref_total, abs=1e-4)


def test_prompt_conditioning_scores_completion_only(adapter, teacher_model, tokenizer):
    prompt = "the cat"
    completions = ["sat on the mat", "ran", "was very happy and then sad"]
    total, units = adapter.log_likelihood(completions, prompt=prompt)
    p_ids = tokenizer(prompt)["input_ids"]
    for i, c in enumerate(completions):
        ids = p_ids + tokenizer(c, add_special_tokens=False)["input_ids"]
        ref_total, ref_units = brute_force(teacher_model, ids, len(p_ids))
        assert units[i].item() == ref_units == len(ids) - len(p_ids)
        assert total[i].item() == pytest.approx(ref_total, abs=1e-4)
    # token ids and texts give the same result; per-sample prompts too
    tok_total, _ = adapter.log_likelihood([tokenizer(c)["input_ids"] for c in completions], prompt=p_ids)
    torch.testing.assert_close(tok_total, total)
    per_total, _ = adapter.log_likelihood(completions, prompt=[prompt] * 3)
    torch.testing.assert_close(per_total, total)


def test_head_sees_only_scored_positions_in_chunks(teacher_model, tokenizer):
    seen = []
    hook = teacher_model.lm_head.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    try:
        adapter = CausalLMAdapter(teacher_model, tokenizer, head_chunk_tokens=5, progress=False)
        total, units = adapter.log_likelihood(TEXTS)
    finally:
        hook.remove()
    assert all(len(s) == 2 and s[0] <= 5 for s in seen), seen  # (tokens, hidden): never (B, T, hidden)
    assert sum(s[0] for s in seen) == units.sum().item()
    ref, _ = CausalLMAdapter(teacher_model, tokenizer, progress=False).log_likelihood(TEXTS)
    torch.testing.assert_close(total, ref, atol=1e-5, rtol=0)


def test_length_batches_sorted_and_within_budget():
    lengths = [5, 50, 7, 33, 50, 1, 20, 19]
    batches = _length_batches(lengths, batch_size=3, max_batch_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat, reverse=True)
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * lengths[b[0]] <= 100)
    assert [[lengths[i] for i in b] for b in batches] == [[50, 50], [33, 20, 19], [7, 5, 1]]
    padding = sum(len(b) * lengths[b[0]] - sum(lengths[i] for i in b) for b in batches)
    assert padding == 27 + 8  # against 8 * 50 - 185 = 215 when everything is padded to the longest


def test_bad_inputs_raise(adapter, tokenizer):
    with pytest.raises(ValueError, match="attention_mask"):
        adapter.log_likelihood(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="one per sample"):
        adapter.log_likelihood(["a cat", "a dog"], prompt=["the", "a", "the"])
    with pytest.raises(ValueError, match="not both"):
        adapter.sample(2, selectivity=2.0, temperature=0.5)
    with pytest.raises(ValueError, match="selectivity"):
        adapter.sample(2, selectivity=0.0)
    with pytest.raises(ValueError, match="beyond float32's range"):
        adapter.sample(2, selectivity=1e39)
    with pytest.raises(ValueError, match="beyond float32's range"):
        adapter.sample(2, temperature=1e-100)


def test_sample_reproducible_and_greedy(adapter, teacher_model, tokenizer):
    a = adapter.sample(6, prompt="the", max_new_tokens=5, seed=3, return_tokens=True)
    b = adapter.sample(6, prompt="the", max_new_tokens=5, seed=3, return_tokens=True)
    c = adapter.sample(6, prompt="the", max_new_tokens=5, seed=4, return_tokens=True)
    g1 = adapter.sample(6, prompt="the", max_new_tokens=5, generator=torch.Generator().manual_seed(0))
    g2 = adapter.sample(6, prompt="the", max_new_tokens=5, generator=torch.Generator().manual_seed(0))
    assert a == b and a != c and g1 == g2
    assert all(1 <= len(s) <= 5 for s in a) and all(isinstance(t, str) for t in g1)
    greedy = adapter.sample(2, prompt="the", max_new_tokens=4, selectivity=float("inf"), return_tokens=True)
    ids = tokenizer("the", return_tensors="pt")["input_ids"]
    expected = teacher_model.generate(ids, do_sample=False, max_new_tokens=4, pad_token_id=0)[0, 1:].tolist()
    eos = tokenizer.eos_token_id
    expected = expected[: expected.index(eos) + 1] if eos in expected else expected
    assert greedy == [expected, expected]


@pytest.mark.parametrize("beta", [1.0, 3.0])
def test_sample_frequencies_follow_sharpened_likelihood(teacher_model, tokenizer, beta):
    """First-token frequencies of 3,000 samples match softmax(beta * logits) of the scored single tokens."""
    adapter = CausalLMAdapter(teacher_model, tokenizer, batch_size=1000, progress=False)
    draws = adapter.sample(3000, prompt="the", max_new_tokens=1, selectivity=beta, seed=0, return_tokens=True)
    counts = torch.bincount(torch.tensor([d[0] for d in draws]), minlength=len(tokenizer)).double()
    every = [[v] for v in range(len(tokenizer))]
    logp, units = adapter.log_likelihood(every, prompt="the")
    assert (units == 1).all()
    probs = torch.softmax(beta * logp, dim=0)  # p**beta renormalised
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-6) and torch.exp(logp).sum().item() == pytest.approx(1.0)
    freq = counts / counts.sum()
    tol = 4 * torch.sqrt(probs * (1 - probs) / 3000) + 1e-3
    assert ((freq - probs).abs() <= tol).all(), (freq - probs).abs().max()


def test_full_logits_fallback_matches(monkeypatch, teacher_model, tokenizer):
    """Models whose head cannot be split off (e.g. logits rescaled after the head) take the full forward."""
    import hf_kd.metrics.lm_adapter as lm_adapter

    fast, _ = CausalLMAdapter(teacher_model, tokenizer, progress=False).log_likelihood(TEXTS)
    monkeypatch.setattr(lm_adapter, "_backbone_and_head", lambda model: None)
    slow, _ = CausalLMAdapter(teacher_model, tokenizer, progress=False).log_likelihood(TEXTS)
    torch.testing.assert_close(slow, fast, atol=1e-5, rtol=0)
