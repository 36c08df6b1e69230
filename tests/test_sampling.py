"""One sampling law on every path (hf_kd.sampling), checked against transformers' own logits warpers.

The anchor is independent code: float64 logits of the model put through transformers' `TemperatureLogitsWarper`,
`TopKLogitsWarper` and `TopPLogitsWarper` (the order of `generate`). The first tokens drawn by the trainer's online
teacher sampling, by `generate_distillation_dataset` and by `CausalLMAdapter.sample` must follow it (chi-square),
and never fall outside the top-k / top-p set.
"""

import copy
import logging
import math
import zlib

import pytest
import torch
import trl
from conftest import make_llama, make_tokenizer
from datasets import Dataset
from scipy.stats import chisquare
from transformers import (
    GenerationConfig,
    MinNewTokensLengthLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from hf_kd import fast_decode
from hf_kd.distillation_config import DistillationConfig
from hf_kd.distillation_trainer import DistillationTrainer
from hf_kd.generation import generate_distillation_dataset
from hf_kd.metrics.lm_adapter import CausalLMAdapter
from hf_kd.sampling import SamplingParams, from_generation_config, sample_batch, warp_logits
from hf_kd.sampling.decode import inverse_cdf

EOS = 3
PROMPT = "the cat"
# The trainer's TRL temperature T and selectivity beta; the other paths take the same law as one temperature T / beta.
T, BETA, TOP_K, TOP_P = 1.5, 2.0, 6, 0.8
N = 2000


def reference_log_probs(scores: torch.Tensor, temperature: float, top_k, top_p) -> torch.Tensor:
    """log_softmax of transformers' warpers applied in generate's order: temperature, top-k, top-p."""
    scores = TemperatureLogitsWarper(temperature)(None, scores.clone())
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p is not None:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.log_softmax(scores, dim=-1)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def teacher(tokenizer):
    model = make_llama(len(tokenizer), seed=0, hidden=32, layers=2)
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)  # peaky enough that top-k and top-p both remove ids
    return model


@pytest.fixture(scope="module")
def anchor(tokenizer, teacher):
    """First-token probabilities of the law, in float64 from transformers' warpers."""
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        z = copy.deepcopy(teacher).double()(ids).logits[0, -1:]
    probs = reference_log_probs(z, T / BETA, TOP_K, TOP_P).exp()[0]
    top_k_only = reference_log_probs(z, T / BETA, TOP_K, None).exp()[0]
    # both truncations bite: top-k keeps 6 ids, top-p fewer of them, and no id sits near the top-p boundary
    assert (top_k_only > 0).sum() == TOP_K and 2 < (probs > 0).sum() < TOP_K
    ascending = top_k_only[top_k_only > 0].sort().values.cumsum(0)
    assert (ascending - (1 - TOP_P)).abs().min() > 1e-3
    return probs


def assert_follows(first_tokens: list[int], probs: torch.Tensor) -> None:
    counts = torch.bincount(torch.tensor(first_tokens), minlength=len(probs)).double()
    support = probs > 0
    assert counts[~support].sum() == 0, f"ids outside top-k/top-p drawn: {(counts * ~support).nonzero().tolist()}"
    expected = probs[support] * counts.sum()
    assert expected.min() > 5  # the chi-square approximation holds
    p_value = chisquare(counts[support].numpy(), expected.numpy()).pvalue
    assert p_value > 1e-3, (p_value, counts[support].tolist(), expected.tolist())


def teacher_trainer(tmp_path, tokenizer, teacher, **config) -> DistillationTrainer:
    """A trainer whose completions the teacher samples (nll loss: only the sampling matters here)."""
    config = {"max_completion_length": 4, **config}
    args = DistillationConfig(
        str(tmp_path),
        per_device_train_batch_size=4,
        report_to="none",
        loss_type="nll",
        completion_source="teacher",
        **config,
    )
    data = Dataset.from_dict({"prompt": [PROMPT] * 4})
    student = make_llama(len(tokenizer), seed=1)
    return DistillationTrainer(student, teacher, args, train_dataset=data, processing_class=tokenizer)


def test_trainer_teacher_sampling_follows_the_law(tmp_path, tokenizer, teacher, anchor):
    law = {"temperature": T, "selectivity": BETA, "top_k": TOP_K, "top_p": TOP_P}
    trainer = teacher_trainer(tmp_path, tokenizer, teacher, max_completion_length=1, **law)
    out = trainer._generate_and_score_completions([{"prompt": PROMPT}] * N)
    prompt = out["prompt_ids"][0][out["prompt_mask"][0].bool()].tolist()
    assert prompt == tokenizer(PROMPT)["input_ids"]
    assert_follows(out["completion_ids"][:, 0].tolist(), anchor)


def student_trainer(tmp_path, tokenizer, student, trainer_cls=DistillationTrainer, **config):
    """An on-policy trainer whose student is `student` (TRL's own trainer with ``trainer_cls=trl...``)."""
    config = {"max_completion_length": 1, "per_device_train_batch_size": 4, "report_to": "none", **config}
    config_cls = DistillationConfig if trainer_cls is DistillationTrainer else trl.DistillationConfig
    extra = {} if config_cls is DistillationConfig else {"bf16": False, "gradient_checkpointing": False}
    args = config_cls(str(tmp_path), **extra, **config)
    data = Dataset.from_dict({"prompt": [PROMPT] * 4})
    teacher = make_llama(len(tokenizer), seed=1)
    return trainer_cls(student, teacher, args, train_dataset=data, processing_class=tokenizer)


def test_on_policy_sampling_follows_trls_law_without_generate(tmp_path, tokenizer, teacher, anchor, monkeypatch):
    """hf_kd's on-policy path (hf_kd.sampling, not `generate`) and TRL's `generate` both draw the anchor's law."""
    law = {"temperature": T / BETA, "top_k": TOP_K, "top_p": TOP_P}
    prompts = [{"prompt": PROMPT}] * N
    trl_trainer = student_trainer(tmp_path / "trl", tokenizer, teacher, trl.DistillationTrainer, **law)
    assert_follows(trl_trainer._generate_and_score_completions(prompts)["completion_ids"][:, 0].tolist(), anchor)
    ours = student_trainer(tmp_path / "ours", tokenizer, teacher, **law)
    assert ours._sample_student is not None
    monkeypatch.setattr(type(teacher), "generate", lambda *a, **k: pytest.fail("on-policy sampling called generate"))
    out = ours._generate_and_score_completions(prompts)
    assert_follows(out["completion_ids"][:, 0].tolist(), anchor)


def test_on_policy_sampling_is_reproducible_per_step(tmp_path, tokenizer, teacher):
    """The same seed and step redraw the same on-policy completions (a resumed run); another step draws others."""

    def draw(step, seed=0):
        trainer = student_trainer(tmp_path, tokenizer, copy.deepcopy(teacher), seed=seed, max_completion_length=6)
        trainer.state.global_step = step
        torch.manual_seed(step + 100)  # the global RNG does not matter
        return trainer._generate_and_score_completions([{"prompt": PROMPT}] * 16)["completion_ids"].tolist()

    assert draw(3) == draw(3)
    assert draw(3) != draw(4) and draw(3) != draw(3, seed=1)


def test_on_policy_settings_outside_the_layer_keep_trls_generate(tmp_path, tokenizer, teacher, monkeypatch, caplog):
    logger = logging.getLogger("hf_kd.fast_decode")
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(fast_decode, "_logged", set())
    with caplog.at_level(logging.INFO, logger="hf_kd.fast_decode"):
        trainer = student_trainer(tmp_path, tokenizer, teacher, repetition_penalty=1.3, max_completion_length=3)
    assert trainer._sample_student is None
    assert "on-policy student sampling: TRL's generate (hf_kd.sampling does not implement repetition_penalty" in (
        caplog.text
    )
    calls = []
    generate = type(teacher).generate
    monkeypatch.setattr(type(teacher), "generate", lambda *a, **k: calls.append(1) or generate(*a, **k))
    out = trainer._generate_and_score_completions([{"prompt": PROMPT}] * 4)
    assert calls and out["completion_ids"].shape[0] == 4
    monkeypatch.setenv("HF_KD_FAST_DECODE", "off")  # the eager path is TRL's own generate
    assert student_trainer(tmp_path, tokenizer, teacher)._sample_student is None


def test_offline_generation_follows_the_law(tmp_path, tokenizer, teacher, anchor):
    ds = generate_distillation_dataset(
        teacher,
        tokenizer,
        str(tmp_path),
        N,
        prompt=PROMPT,
        temperature=T / BETA,
        top_k=TOP_K,
        top_p=TOP_P,
        max_new_tokens=1,
        batch_size=N,
        seed=0,
        progress=False,
    )
    assert_follows([ids[0] for ids in ds["completion_ids"]], anchor)


def test_metrics_sampling_follows_the_law(tokenizer, teacher, anchor):
    adapter = CausalLMAdapter(teacher, tokenizer, batch_size=N, progress=False)
    draws = adapter.sample(
        N, prompt=PROMPT, max_new_tokens=1, selectivity=BETA / T, top_k=TOP_K, top_p=TOP_P, seed=0, return_tokens=True
    )
    assert_follows([d[0] for d in draws], anchor)
    again = adapter.sample(
        50,
        prompt=PROMPT,
        max_new_tokens=3,
        temperature=T / BETA,
        top_k=TOP_K,
        top_p=TOP_P,
        seed=0,
        batch_size=7,
        return_tokens=True,
    )
    # sample i depends on (seed, i) only: the batch size does not change it
    assert again[:50] == adapter.sample(
        50, prompt=PROMPT, max_new_tokens=3, selectivity=BETA / T, top_k=TOP_K, top_p=TOP_P, seed=0, return_tokens=True
    )


@pytest.mark.parametrize("temperature", [0.7, 1.0, 2.5])
@pytest.mark.parametrize("selectivity", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("top_k, top_p", [(None, None), (5, None), (None, 0.7), (12, 0.9), (1, 0.5), (60, 0.99)])
def test_warp_logits_equals_transformers_warpers(temperature, selectivity, top_k, top_p):
    gen = torch.Generator().manual_seed(zlib.crc32(repr((temperature, selectivity, top_k, top_p)).encode()))
    logits = 3 * torch.randn(16, 50, generator=gen, dtype=torch.float64)
    params = SamplingParams(temperature=temperature, selectivity=selectivity, top_k=top_k, top_p=top_p)
    ours = warp_logits(logits, params)
    ref = reference_log_probs(logits, temperature / selectivity, top_k, top_p)
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))  # the same ids removed
    finite = ~torch.isinf(ref)
    torch.testing.assert_close(ours[finite], ref[finite], atol=1e-6, rtol=1e-6)
    # in float32 (the decode loop's precision) the same ids are removed, up to float32 rounding of the logits
    ours32 = warp_logits(logits.float(), params)
    assert torch.equal(torch.isinf(ours32), torch.isinf(ref))
    torch.testing.assert_close(ours32[finite].double(), ref[finite], atol=1e-4, rtol=1e-5)


def test_warp_logits_greedy_is_the_argmax():
    logits = torch.randn(8, 30, generator=torch.Generator().manual_seed(0))
    log_s = warp_logits(logits, SamplingParams(selectivity=math.inf, top_k=3))
    assert torch.equal(log_s.argmax(-1), logits.argmax(-1))
    assert (log_s.exp().sum(-1) == 1).all() and (log_s.exp().max(-1).values == 1).all()


@pytest.mark.parametrize("per_token", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_target_entropy_rows_hit_the_target(per_token, temperature):
    logits = 4 * torch.randn(6, 40, generator=torch.Generator().manual_seed(1))
    params = SamplingParams(temperature=temperature, target_entropy=1.3, per_token=per_token)
    log_s, beta = warp_logits(logits, params, return_selectivity=True)
    p = torch.softmax(beta[:, None] * logits.double() / temperature, -1)  # the law written out in float64
    entropy = -(p * p.log()).sum(-1)
    torch.testing.assert_close(log_s.double().exp(), p, atol=1e-5, rtol=0)
    if per_token:
        torch.testing.assert_close(entropy, torch.full_like(entropy, 1.3), atol=1e-4, rtol=0)
    else:
        assert beta.unique().numel() == 1 and entropy.mean().item() == pytest.approx(1.3, abs=1e-4)


@pytest.fixture(scope="module")
def eos_teacher(tokenizer):
    """A teacher whose next token after PROMPT is EOS with probability ~1."""
    model = make_llama(len(tokenizer), seed=2, hidden=32, layers=2)
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        h = model.model(ids).last_hidden_state[0, -1]
        model.lm_head.weight[EOS] = 30 * h / h.norm() ** 2 + model.lm_head.weight[EOS]
    return model


def test_min_new_tokens_masks_eos(tokenizer, eos_teacher):
    prompt = tokenizer(PROMPT)["input_ids"]
    ids = {"eos_token_ids": [EOS], "pad_token_id": 0}
    free = sample_batch(eos_teacher, [prompt] * 200, list(range(200)), SamplingParams(max_new_tokens=5), **ids)
    assert sum(r["completion_ids"] == [EOS] for r in free) > 190  # EOS is the likely first token
    law = SamplingParams(max_new_tokens=5, min_new_tokens=3)
    held = sample_batch(eos_teacher, [prompt] * 200, list(range(200)), law, **ids)
    assert all(EOS not in r["completion_ids"][:3] and len(r["completion_ids"]) >= 3 for r in held)
    # greedy against transformers' MinNewTokensLengthLogitsProcessor inside generate
    greedy = SamplingParams(selectivity=math.inf, max_new_tokens=5, min_new_tokens=3)
    (row,) = sample_batch(eos_teacher, [prompt], [0], greedy, **ids)
    ref = eos_teacher.generate(
        torch.tensor([prompt]), do_sample=False, max_new_tokens=5, min_new_tokens=3, eos_token_id=EOS, pad_token_id=0
    )[0, len(prompt) :].tolist()
    assert row["completion_ids"] == ref[: len(row["completion_ids"])]
    # the first step's law is the teacher's with EOS removed (the processor transformers applies before warpers)
    with torch.no_grad():
        z = eos_teacher(torch.tensor([prompt])).logits[0, -1:].double()
    masked = MinNewTokensLengthLogitsProcessor(len(prompt), 3, EOS)(torch.tensor([prompt]), z.clone())
    assert_follows([r["completion_ids"][0] for r in held], torch.softmax(masked, -1)[0])


def test_trainer_honours_min_new_tokens_and_refuses_other_settings(tmp_path, tokenizer, eos_teacher):
    def build(**config):
        return teacher_trainer(tmp_path, tokenizer, eos_teacher, **config)

    trainer = build(generation_kwargs={"min_new_tokens": 2})
    out = trainer._generate_and_score_completions([{"prompt": PROMPT}] * 40)
    assert (out["completion_ids"][:, :2] != EOS).all() and out["completion_mask"][:, :2].all()
    with pytest.raises(ValueError, match="repetition_penalty=1.3"):
        build(repetition_penalty=1.3)
    with pytest.raises(ValueError, match="min_p=0.1"):
        build(min_p=0.1)
    with pytest.raises(ValueError, match="temperature"):
        build(generation_kwargs={"temperature": 0.5})


def test_trainer_samples_are_reproducible_per_step(tmp_path, tokenizer, teacher):
    """The same seed and step redraw the same completions (a resumed run); another step draws others."""

    def draw(step, seed=0):
        trainer = teacher_trainer(tmp_path, tokenizer, teacher, seed=seed)
        trainer.state.global_step = step
        torch.manual_seed(step + 100)  # the global RNG does not matter
        return trainer._generate_and_score_completions([{"prompt": PROMPT}] * 16)["completion_ids"].tolist()

    assert draw(3) == draw(3)
    assert draw(3) != draw(4) and draw(3) != draw(3, seed=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"selectivity": -1.0}, "selectivity must be > 0"),
        ({"temperature": 1e-100}, "beyond float32's range"),
        ({"target_entropy": 1.0, "selectivity": 2.0}, "not both"),
        ({"target_entropy": -1.0}, "target_entropy must be > 0"),
        ({"top_k": -1}, "top_k must be >= 0"),
        ({"top_k": 2.5}, "top_k must be an integer"),
        ({"top_p": 0.0}, "top_p must be in"),
        ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer"),
        ({"min_new_tokens": 9, "max_new_tokens": 4}, "min_new_tokens must be an integer in"),
    ],
)
def test_sampling_params_refuse_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def test_generation_config_settings_outside_the_layer_are_refused():
    config = GenerationConfig(max_new_tokens=4, top_k=3, top_p=0.5, min_new_tokens=1, temperature=2.0)
    params = from_generation_config(config, temperature=2.0, selectivity=3.0)
    assert (params.top_k, params.top_p, params.max_new_tokens, params.min_new_tokens) == (3, 0.5, 4, 1)
    for bad in ({"no_repeat_ngram_size": 2}, {"typical_p": 0.5}, {"do_sample": False}, {"num_beams": 2}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            from_generation_config(GenerationConfig(max_new_tokens=4, **bad))


def _sequential_inverse_cdf(log_s, u):
    """The plain inverse-CDF draw over the whole vocabulary (float64 cumulative sum), the reference."""
    cdf = log_s.double().exp().cumsum(-1)
    target = u.double() * cdf[:, -1]
    return torch.searchsorted(cdf, target[:, None], right=True).squeeze(-1).clamp_max(cdf.shape[-1] - 1)


@pytest.mark.parametrize("vocab, block", [(5000, 1024), (49152, 1024), (7, 4), (3, 1024)])
@pytest.mark.parametrize("scale", [0.5, 4.0, 20.0])
def test_blocked_inverse_cdf_draws_what_the_sequential_one_draws(vocab, block, scale):
    g = torch.Generator().manual_seed(vocab + int(scale))
    logits = torch.randn(64, vocab, generator=g) * scale
    logits[::3, : vocab // 2] = -float("inf")  # rows with whole blocks of zero mass
    log_s = torch.log_softmax(logits, -1)
    for _ in range(20):
        u = torch.rand(64, generator=g, dtype=torch.float64)
        drawn = inverse_cdf(log_s, u, block=block)
        assert torch.equal(drawn, _sequential_inverse_cdf(log_s, u))
        assert torch.isfinite(log_s.gather(1, drawn[:, None])).all()


def test_blocked_inverse_cdf_never_draws_zero_mass():
    """Boundaries exactly on a cumulative mass, and u at 0 and just below 1, with zero-mass ids and blocks around."""
    p = torch.zeros(4, 12, dtype=torch.float64)
    p[:, [1, 5, 6, 10]] = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    log_s = p.log()
    u = torch.tensor([0.0, 0.25, 0.5, 1 - 2**-53], dtype=torch.float64)
    for block in (1, 4, 5, 12, 64):
        assert inverse_cdf(log_s, u, block=block).tolist() == [1, 5, 6, 10]


def test_the_untempered_law_is_the_models_softmax_bit_for_bit():
    """`sample_batch` reuses ``log_softmax(z)`` as the law when `params.untempered`: warp_logits must give the same."""
    z = torch.randn(5, 300) * 3
    for params in (SamplingParams(), SamplingParams(top_p=1.0, top_k=0)):
        assert params.untempered
        assert torch.equal(warp_logits(z, params), torch.log_softmax(z, -1))
    for params in (SamplingParams(temperature=0.9), SamplingParams(top_k=5), SamplingParams(selectivity=2.0)):
        assert not params.untempered
