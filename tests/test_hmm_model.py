"""The HMM toy language model: exact likelihoods against brute-force path sums, its sampling law, registration."""

import itertools
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from scipy import stats
from transformers import AutoConfig, AutoModel

from hf_kd import CausalLMAdapter
from hf_kd.models.hmm import HMMConfig, HMMModel, hmm_tokenizer, long_tail_hmm, register_hmm

K, V, EOS = 3, 6, 2


def random_hmm(seed: int = 0) -> HMMModel:
    gen = torch.Generator().manual_seed(seed)
    model = HMMModel(HMMConfig(num_states=K, vocab_size=V, pad_token_id=0, bos_token_id=1, eos_token_id=EOS)).double()
    rand = lambda *shape: torch.rand(*shape, generator=gen, dtype=torch.float64) + 0.05  # noqa: E731
    return model.set_parameters(rand(K), rand(K, K), rand(K, V))


def brute_force_log_prob(model: HMMModel, seq: list[int]) -> float:
    """log sum over every state path of pi[s1] B[s1, x1] prod_t A[s_{t-1}, s_t] B[s_t, x_t] (float64)."""
    pi, a, b = (t.detach().exp() for t in model.log_tables())
    if not seq:
        return 0.0
    total = 0.0
    for path in itertools.product(range(K), repeat=len(seq)):
        p = pi[path[0]] * b[path[0], seq[0]]
        for t in range(1, len(seq)):
            p = p * a[path[t - 1], path[t]] * b[path[t], seq[t]]
        total += float(p)
    return float(torch.tensor(total, dtype=torch.float64).log())


def test_log_likelihood_matches_brute_force_path_sums():
    model = random_hmm()
    gen = torch.Generator().manual_seed(1)
    seqs = [[], [EOS], [3], [4, 5, EOS]] + [torch.randint(0, V, (n,), generator=gen).tolist() for n in (1, 2, 3, 5)]
    total, units = model.log_likelihood(seqs)
    assert units.tolist() == [len(s) for s in seqs]
    expected = torch.tensor([brute_force_log_prob(model, s) for s in seqs], dtype=torch.float64)
    torch.testing.assert_close(total, expected, rtol=0, atol=1e-10)
    # forward() reports the same sequences' NLL per token (right-padded batch with a mask)
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    out = model(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(out.log_prob, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(out.loss, -expected.sum() / units.sum(), rtol=0, atol=1e-10)


def exact_two_token_law(model: HMMModel, beta: float) -> dict[tuple[int, ...], float]:
    """Law of completions capped at 2 tokens under per-token sharpening, from brute-force prefix probabilities."""
    law = {}
    p1 = torch.tensor([brute_force_log_prob(model, [x]) for x in range(V)], dtype=torch.float64).exp()
    q1 = p1**beta / (p1**beta).sum()
    for x1 in range(V):
        if x1 == EOS:
            law[(x1,)] = float(q1[x1])
            continue
        p2 = torch.tensor([brute_force_log_prob(model, [x1, x]) for x in range(V)], dtype=torch.float64).exp() / p1[x1]
        q2 = p2**beta / (p2**beta).sum()
        for x2 in range(V):
            law[(x1, x2)] = float(q1[x1] * q2[x2])
    return law


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_sampling_law_chi_square(beta):
    model = random_hmm(seed=2)
    n = 20_000
    samples = model.sample(n, selectivity=beta, max_new_tokens=2, generator=torch.Generator().manual_seed(3))
    law = exact_two_token_law(model, beta)
    assert sum(law.values()) == pytest.approx(1.0, abs=1e-12)
    counts = {key: 0 for key in law}
    for s in samples:
        counts[tuple(s)] += 1  # every sample is a key: an impossible one would raise KeyError
    keys = sorted(law)
    observed = torch.tensor([counts[k] for k in keys], dtype=torch.float64)
    expected = torch.tensor([law[k] for k in keys], dtype=torch.float64) * n
    assert stats.chisquare(observed.numpy(), expected.numpy()).pvalue > 1e-3


def test_units_match_causal_lm_adapter_with_bos_prompt():
    model = long_tail_hmm(num_states=3, tail_pool=4, tail_size=2)
    tok = hmm_tokenizer(model.config)
    assert tok("<s>")["input_ids"] == [model.config.bos_token_id]
    assert tok.decode([3, 4, model.config.eos_token_id]) == "t3 t4 </s>"
    samples = model.sample(6, max_new_tokens=5, generator=torch.Generator().manual_seed(0))
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=model.config.vocab_size,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
    )
    lm = CausalLMAdapter(LlamaForCausalLM(config).eval(), tok, prompt="<s>", progress=False)
    assert torch.equal(lm.log_likelihood(samples)[1], model.log_likelihood(samples)[1])


def test_long_tail_hmm_structure():
    model = long_tail_hmm(seed=0)
    pi, a, b = (t.exp() for t in model.log_tables())
    torch.testing.assert_close(pi, torch.full((8,), 1 / 8, dtype=torch.float64))
    torch.testing.assert_close(a.diagonal(), torch.full((8,), 0.8, dtype=torch.float64))
    torch.testing.assert_close(b.sum(-1), torch.ones(8, dtype=torch.float64))
    floor = 0.01 / model.config.vocab_size
    torch.testing.assert_close(b[:, 2], torch.full((8,), 0.04 + floor, dtype=torch.float64))  # EOS
    for k in range(8):  # own head tokens, then a Zipf tail of 8 shared pool tokens summing to 0.25
        torch.testing.assert_close(b[k, 3 + 2 * k : 5 + 2 * k] - floor, torch.tensor([0.45, 0.25], dtype=b.dtype))
        tail = (b[k, 19:] - floor).sort(descending=True).values
        zipf = 1.0 / torch.arange(1, 9, dtype=torch.float64)
        torch.testing.assert_close(tail[:8], 0.25 * zipf / zipf.sum())
        torch.testing.assert_close(tail[8:], torch.zeros(8, dtype=torch.float64), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="sum to 1"):
        long_tail_hmm(tail_mass=0.5)
    with pytest.raises(ValueError, match="tail_size"):
        long_tail_hmm(tail_size=20)


def test_registration_and_save_load_round_trip(tmp_path):
    register_hmm()
    register_hmm()  # idempotent
    assert type(AutoConfig.for_model("hf_kd_hmm")) is HMMConfig
    model = random_hmm().float()
    model.save_pretrained(tmp_path / "ckpt")
    assert {"configuration_hmm.py", "modeling_hmm.py"} <= set(os.listdir(tmp_path / "ckpt"))
    loaded = AutoModel.from_pretrained(tmp_path / "ckpt")
    seqs = [[3, 4, EOS], [5]]
    assert type(loaded) is HMMModel and torch.equal(loaded.log_likelihood(seqs)[0], model.log_likelihood(seqs)[0])


@pytest.mark.slow
def test_remote_code_load_without_hf_kd(tmp_path):
    model = random_hmm().float()
    model.save_pretrained(tmp_path / "ckpt")
    seqs = [[3, 4, EOS], [5]]
    script = textwrap.dedent(
        """
        import importlib.abc, sys
        class BlockHfKd(importlib.abc.MetaPathFinder):  # hide the installed hf_kd
            def find_spec(self, name, path=None, target=None):
                if name == "hf_kd" or name.startswith("hf_kd."):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, BlockHfKd())
        from transformers import AutoModel
        model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        print(model.log_likelihood([[3, 4, 2], [5]])[0].tolist())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "ckpt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert eval(proc.stdout.strip().splitlines()[-1]) == pytest.approx(model.log_likelihood(seqs)[0].tolist())


def test_bad_inputs_raise_clear_errors():
    model = random_hmm()
    with pytest.raises(ValueError, match="not text"):
        model.log_likelihood(["t3 t4"])
    with pytest.raises(ValueError, match=r"\[0, vocab_size=6\)"):
        model.log_likelihood([[3, 6]])
    for beta in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="selectivity must be a finite number > 0"):
            model.sample(2, selectivity=beta)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.sample(2, max_new_tokens=0)
    with pytest.raises(ValueError, match="eos_token_id and bos_token_id must differ"):
        HMMConfig(vocab_size=4, bos_token_id=1, eos_token_id=1)
    with pytest.raises(ValueError, match="token id in"):
        HMMConfig(vocab_size=4, eos_token_id=7)
    with pytest.raises(ValueError, match="shape"):
        model.set_parameters(transition=torch.ones(2, 2))
