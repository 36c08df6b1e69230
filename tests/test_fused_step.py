"""`hf_kd.sampling.FusedStep` computes the model's own decode step: logits equal a full forward over prompt + tokens
(left padding, grouped query heads, biases, rows leaving the batch), and sampling through it draws the same ids as
the model's forward for the same seeds."""

import logging

import pytest
import torch
from conftest import make_llama
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from hf_kd import fast_decode
from hf_kd.sampling import SamplingParams, sample_batch
from hf_kd.sampling.fused_step import FusedStep, fused_step_support

VOCAB = 40


def _llama():
    return make_llama(
        VOCAB,
        seed=1,
        hidden=32,
        layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attention_bias=True,
        mlp_bias=True,
    )


def _qwen2():
    torch.manual_seed(2)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config).eval()


def _full_forward_logits(model, ids, mask):
    """Logits at every position of a left-padded batch by one forward without a cache (the independent reference)."""
    position = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=position).logits


@pytest.mark.parametrize("build", [_llama, _qwen2], ids=["llama-gqa-biases", "qwen2-tied"])
def test_fused_steps_equal_a_full_forward_with_padding_and_rows_leaving(build):
    model = build()
    assert fused_step_support(model) is None
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(4, VOCAB, (3, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    prompt = prompt.masked_fill(mask == 0, 0)
    new = torch.randint(4, VOCAB, (3, 6), generator=g)  # teacher-forced tokens fed one step at a time
    ids, full_mask = torch.cat([prompt, new], 1), torch.cat([mask, torch.ones_like(new)], 1)
    expected = _full_forward_logits(model, ids, full_mask)[:, 5:]  # logits after each new token

    position = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        out = model(input_ids=prompt, attention_mask=mask, position_ids=position, use_cache=True)
    step = FusedStep(model, out.past_key_values, mask, max_new_tokens=6)
    rows, next_pos = torch.arange(3), position[:, -1] + 1
    for t in range(6):
        if t == 3:  # row 1 finishes: the cache, the bias and the positions shrink with it
            rows, next_pos = rows[[0, 2]], next_pos[[0, 2]]
            step.keep(torch.tensor([0, 2]))
        logits = step(new[rows, t], next_pos)
        torch.testing.assert_close(logits, expected[rows, t], rtol=1e-5, atol=1e-5)
        next_pos = next_pos + 1


def test_sampling_through_the_fused_step_draws_what_the_forward_draws(monkeypatch, caplog):
    """Same seeds: identical ids (rows stopping at EOS at different steps) and per-row log-probs within 1e-4."""
    model = _llama()
    prompts = [[2, 5, 6, 7], [2, 9], [2, 11, 12], [2, 13, 14, 15, 16]]
    params = SamplingParams(max_new_tokens=20, temperature=1.3)

    def sample(mode):
        monkeypatch.setenv("HF_KD_FAST_DECODE", mode)
        return sample_batch(model, prompts, [11, 12, 13, 14], params, eos_token_ids=[3, 4], pad_token_id=0)

    calls = []
    original = FusedStep.__call__
    monkeypatch.setattr(FusedStep, "__call__", lambda self, *a: calls.append(1) or original(self, *a))
    eager = sample("off")
    assert not calls
    logger = logging.getLogger("hf_kd.fast_decode")
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(fast_decode, "_logged", set())  # the path is logged once per process
    with caplog.at_level(logging.INFO, logger="hf_kd.fast_decode"):
        fused = sample("on")
    assert calls and "LlamaForCausalLM decodes through hf_kd.sampling.FusedStep" in caplog.text
    lengths = [len(r["completion_ids"]) for r in eager]
    assert len(set(lengths)) > 1 and min(lengths) < 20  # rows left the batch at different steps
    for a, b in zip(fused, eager, strict=True):
        assert a["completion_ids"] == b["completion_ids"]
        assert a["teacher_logprob"] == pytest.approx(b["teacher_logprob"], abs=1e-4)
        assert a["sampling_logprob"] == pytest.approx(b["sampling_logprob"], abs=1e-4)


def test_models_the_fused_step_does_not_compute_keep_their_own_forward():
    peft = pytest.importorskip("peft")
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2))
    assert "GPT2LMHeadModel is not one of" in fused_step_support(gpt2)
    lora = peft.get_peft_model(_llama(), peft.LoraConfig(r=2, target_modules=["q_proj"]))
    assert fused_step_support(lora) is not None
    assert fused_step_support(lora.get_base_model()) == "adapter or quantized linear layers"
    sliding = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=VOCAB,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            use_sliding_window=True,
            sliding_window=4,
            max_window_layers=0,
        )
    )
    assert fused_step_support(sliding) == "sliding-window attention"
