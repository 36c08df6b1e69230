"""Offline teacher-sample datasets: columns against independent scorers, sampler law, resume, two ranks, card, CLI."""

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from conftest import make_llama, make_tokenizer

from hf_kd import generation
from hf_kd.cli import parse_command
from hf_kd.generation import generate_distillation_dataset, generate_from_args
from hf_kd.metrics.lm_adapter import CausalLMAdapter
from hf_kd.sampling import SamplingParams, sample_seed
from hf_kd.sampling import sample_batch as sample_law

SCRIPT = Path(__file__).parent / "scripts" / "generate_tiny.py"
sys.path.insert(0, str(SCRIPT.parent))
from generate_tiny import ARGS, TEACHER  # noqa: E402

EOS = 3


def sample_batch(model, prompts, sample_ids, *, seed, eos_token_ids, pad_token_id, store_topk=0, **law):
    """`hf_kd.sampling.sample_batch` with the rows seeded as generate_distillation_dataset seeds them."""
    seeds = [sample_seed(seed, i) for i in sample_ids]
    ids = {"eos_token_ids": eos_token_ids, "pad_token_id": pad_token_id, "store_topk": store_topk}
    return sample_law(model, prompts, seeds, SamplingParams(**law), **ids)


def assert_same_samples(a, b):
    """Same ids, prompts and tokens exactly; log-probs up to float rounding (torchrun runs 1 BLAS thread a rank)."""
    floats = {"teacher_logprob", "sampling_logprob", "topk_logprobs", "mean_selectivity"}
    a, b = a.to_dict(), b.to_dict()
    assert a.keys() == b.keys()
    assert {k: a[k] for k in a.keys() - floats} == {k: b[k] for k in b.keys() - floats}

    def flat(x):
        return [v for item in x for v in flat(item)] if isinstance(x, list) else [x]

    for k in floats & a.keys():
        torch.testing.assert_close(
            torch.tensor(flat(a[k])), torch.tensor(flat(b[k])), atol=1e-5, rtol=1e-5, equal_nan=True
        )


@pytest.fixture(scope="module")
def sharp_teacher(tokenizer):
    """Tiny teacher with larger logits, so sharpening, top-k and EOS matter."""
    model = make_llama(len(tokenizer), seed=0, hidden=32, layers=2)
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model


def brute_force_scores(model, prompt_ids, completion, selectivity, top_k=None, top_p=None):
    """Sum of log-probs of `completion` under the teacher and under its sharpened/truncated law (full forward)."""
    ids = torch.tensor([prompt_ids + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].double()
    target = torch.tensor(completion)
    teacher = torch.log_softmax(logits, -1).gather(-1, target[:, None]).sum()
    probs = torch.softmax(selectivity * logits, -1)
    keep = torch.ones_like(probs, dtype=torch.bool)
    if top_k:
        keep &= probs >= probs.topk(top_k, -1).values[:, -1:]
    if top_p is not None:
        order = probs.argsort(-1, descending=True)
        mass_before = probs.gather(-1, order).cumsum(-1) - probs.gather(-1, order)
        keep &= torch.zeros_like(keep).scatter(-1, order, mass_before < top_p)
    law = torch.where(keep, probs, 0.0)
    law = law / law.sum(-1, keepdim=True)
    assert keep.gather(-1, target[:, None]).all(), "a token outside the top-k / nucleus was sampled"
    return float(teacher), float(law.gather(-1, target[:, None]).log().sum())


@pytest.mark.parametrize("selectivity, top_k, top_p", [(2.0, None, None), (1.0, 4, None), (1.5, None, 0.8)])
def test_columns_match_independent_scorers(tmp_path, tokenizer, sharp_teacher, selectivity, top_k, top_p):
    prompts = ["the cat", "a dog ran", "red"]
    ds = generate_distillation_dataset(
        sharp_teacher,
        tokenizer,
        str(tmp_path),
        12,
        prompts=prompts,
        selectivity=selectivity,
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=7,
        batch_size=5,
        seed=3,
        progress=False,
    )
    assert ds["sample_id"] == list(range(12))
    assert ds["prompt"] == [prompts[i % 3] for i in range(12)]
    prompt_ids = [tokenizer(p)["input_ids"] for p in ds["prompt"]]
    # teacher_logprob against hf_kd.metrics' scorer (unpadded, one pass per sequence set)
    scored, units = CausalLMAdapter(sharp_teacher, tokenizer, progress=False).log_likelihood(
        ds["completion_ids"], prompt=prompt_ids
    )
    torch.testing.assert_close(scored, torch.tensor(ds["teacher_logprob"], dtype=torch.float64), atol=1e-4, rtol=0)
    assert units.tolist() == ds["num_tokens"]
    finished = 0
    for row, p_ids in zip(ds, prompt_ids):
        ids = row["completion_ids"]
        teacher, sampling = brute_force_scores(sharp_teacher, p_ids, ids, selectivity, top_k, top_p)
        assert row["teacher_logprob"] == pytest.approx(teacher, abs=1e-4)
        assert row["sampling_logprob"] == pytest.approx(sampling, abs=1e-4)
        assert row["num_tokens"] == len(ids) and row["mean_selectivity"] == selectivity
        assert EOS not in ids[:-1]  # a completion stops at its first EOS ...
        assert row["finished"] == (ids[-1] == EOS)  # ... and keeps it
        assert row["finished"] or len(ids) == 7
        assert row["completion"] == tokenizer.decode(ids, skip_special_tokens=True)
        finished += row["finished"]
    assert 0 < finished < 12  # both kinds occur, so the EOS handling above was exercised


def test_first_token_follows_the_sharpened_law(tokenizer, sharp_teacher):
    """Chi-square of 4000 first tokens against softmax(beta * z) (the inverse-CDF draw with per-sample seeds)."""
    n, beta, prompt = 4000, 0.5, tokenizer("the cat")["input_ids"]
    rows = sample_batch(
        sharp_teacher,
        [prompt] * n,
        list(range(n)),
        seed=1,
        max_new_tokens=1,
        eos_token_ids=[EOS],
        pad_token_id=0,
        selectivity=beta,
    )
    counts = torch.bincount(torch.tensor([r["completion_ids"][0] for r in rows]), minlength=len(tokenizer)).double()
    with torch.no_grad():
        probs = torch.softmax(beta * sharp_teacher(torch.tensor([prompt])).logits[0, -1].double(), -1)
    expected = n * probs
    stat = float(((counts - expected) ** 2 / expected).sum())
    dof = len(tokenizer) - 1
    assert stat < dof + 5 * math.sqrt(2 * dof), (stat, dof)  # ~5 sigma of the chi-square's spread
    assert counts.min() >= 0 and (counts > 0).sum() > 10


def test_a_sample_depends_on_seed_and_id_only(tokenizer, sharp_teacher):
    prompt = tokenizer("the")["input_ids"]
    kwargs = {"max_new_tokens": 6, "eos_token_ids": [EOS], "pad_token_id": 0, "selectivity": 1.0, "store_topk": 3}
    alone = sample_batch(sharp_teacher, [prompt] * 2, [11, 5], seed=4, **kwargs)
    batch = sample_batch(sharp_teacher, [prompt] * 6, [3, 4, 5, 9, 10, 11], seed=4, **kwargs)
    for a, b in ((alone[0], batch[5]), (alone[1], batch[2])):
        assert a["completion_ids"] == b["completion_ids"]
        assert a["topk_ids"] == b["topk_ids"]
        assert a["teacher_logprob"] == pytest.approx(b["teacher_logprob"], abs=1e-5)
    other_seed = sample_batch(sharp_teacher, [prompt] * 6, [3, 4, 5, 9, 10, 11], seed=5, **kwargs)
    assert [r["completion_ids"] for r in other_seed] != [r["completion_ids"] for r in batch]


def test_greedy_matches_generate_and_has_zero_sampling_logprob(tokenizer, sharp_teacher):
    prompt = tokenizer("a dog")["input_ids"]
    (row,) = sample_batch(
        sharp_teacher,
        [prompt],
        [0],
        seed=0,
        max_new_tokens=5,
        eos_token_ids=[EOS],
        pad_token_id=0,
        selectivity=math.inf,
    )
    ref = sharp_teacher.generate(
        torch.tensor([prompt]), do_sample=False, max_new_tokens=5, eos_token_id=EOS, pad_token_id=0
    )[0, len(prompt) :].tolist()
    assert row["completion_ids"] == ref[: len(row["completion_ids"])]
    assert row["sampling_logprob"] == 0.0 and row["mean_selectivity"] == math.inf


def test_target_entropy_records_the_solved_selectivity(tokenizer, sharp_teacher):
    prompt = tokenizer("the cat")["input_ids"]
    common = {"max_new_tokens": 4, "eos_token_ids": [EOS], "pad_token_id": 0}
    low = sample_batch(sharp_teacher, [prompt] * 3, [0, 1, 2], seed=0, target_entropy=0.3, **common)
    high = sample_batch(sharp_teacher, [prompt] * 3, [0, 1, 2], seed=0, target_entropy=2.5, **common)
    # entropy of softmax(beta z) falls as beta grows, so the lower target needs the larger beta, at every sample
    assert all(lo["mean_selectivity"] > hi["mean_selectivity"] > 0 for lo, hi in zip(low, high))
    # one row, one step: the recorded beta gives exactly the target entropy (closed form check of the solver's use)
    (one,) = sample_batch(sharp_teacher, [prompt], [0], seed=0, target_entropy=1.2, **{**common, "max_new_tokens": 1})
    with torch.no_grad():
        z = sharp_teacher(torch.tensor([prompt])).logits[0, -1].double()
    p = torch.softmax(one["mean_selectivity"] * z, -1)
    assert float(-(p * p.log()).sum()) == pytest.approx(1.2, abs=1e-3)


def test_kill_and_resume_gives_the_uninterrupted_dataset(tmp_path):
    killed = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "run"), "--kill-before-shard", "2"], capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    data = tmp_path / "run" / "data"
    assert [f for f in os.listdir(data) if f.startswith(".train-00002-of-00004.parquet.tmp-")]  # half-written
    assert len([f for f in os.listdir(data) if f.endswith(".parquet") and not f.startswith(".")]) == 2
    tok = make_tokenizer()
    teacher = make_llama(len(tok), **TEACHER)
    resumed = generate_distillation_dataset(teacher, tok, str(tmp_path / "run"), 10, progress=False, **ARGS)
    straight = generate_distillation_dataset(teacher, tok, str(tmp_path / "straight"), 10, progress=False, **ARGS)
    assert resumed["sample_id"] == list(range(10))
    assert resumed.to_dict() == straight.to_dict()
    assert not [f for f in os.listdir(data) if f.startswith(".")]  # the half-written shard was cleaned up
    with pytest.raises(ValueError, match="different arguments.*seed"):
        generate_distillation_dataset(teacher, tok, str(tmp_path / "run"), 10, progress=False, **{**ARGS, "seed": 8})


def test_two_ranks_give_the_one_process_dataset(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    run = subprocess.run([*torchrun, str(SCRIPT), str(tmp_path / "two")], capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    assert b"rank 0: 10 rows" in run.stdout and b"rank 1: 10 rows" in run.stdout
    tok = make_tokenizer()
    one = generate_distillation_dataset(
        make_llama(len(tok), **TEACHER), tok, str(tmp_path / "one"), 10, progress=False, **ARGS
    )
    two = datasets.load_dataset(str(tmp_path / "two"), split="train").sort("sample_id")
    assert_same_samples(two, one)


def test_card_and_load_dataset(tmp_path, tokenizer, sharp_teacher):
    ds = generate_distillation_dataset(
        sharp_teacher,
        tokenizer,
        str(tmp_path),
        7,
        prompt="the",
        temperature=0.5,
        max_new_tokens=5,
        batch_size=4,
        seed=9,
        progress=False,
        command="hf-kd generate x",
    )
    text = (tmp_path / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    info = meta["hf_kd"]
    assert info["teacher"] == "LlamaForCausalLM" and info["seed"] == 9 and info["command"] == "hf-kd generate x"
    assert info["selectivity"] == 2.0 and info["temperature"] == 0.5 and info["target_entropy"] is None
    assert info["num_samples"] == 7 and info["num_tokens"] == sum(ds["num_tokens"])
    assert info["mean_selectivity"] == pytest.approx(2.0)
    loaded = datasets.load_dataset(str(tmp_path), split="train")
    assert loaded.to_dict() == ds.to_dict()
    assert sorted(os.listdir(tmp_path / "data")) == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]


def test_cli_loads_a_teacher_by_path(tmp_path, tokenizer, sharp_teacher):
    sharp_teacher.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    (tmp_path / "prompts.txt").write_text("the cat\n\nred\n")
    argv = [
        str(tmp_path / "teacher"),
        "--output-dir",
        str(tmp_path / "out"),
        "--num-samples",
        "4",
        "--prompts-file",
        str(tmp_path / "prompts.txt"),
        "--selectivity",
        "3",
        "--max-new-tokens",
        "4",
        "--store-topk",
        "2",
        "--no-progress",
    ]
    ds = generate_from_args(*parse_command("generate", argv))
    assert ds["prompt"] == ["the cat", "red", "the cat", "red"]
    assert all(len(t) == n and all(len(k) == 2 for k in t) for t, n in zip(ds["topk_ids"], ds["num_tokens"]))
    by_path = generate_distillation_dataset(
        tmp_path / "teacher",
        None,
        str(tmp_path / "by_path"),
        4,
        prompts=["the cat", "red"],
        selectivity=3.0,
        max_new_tokens=4,
        store_topk=2,
        progress=False,
    )
    assert by_path.to_dict() == ds.to_dict()  # a pathlib.Path teacher loads like its string
    direct = generate_distillation_dataset(
        sharp_teacher,
        tokenizer,
        str(tmp_path / "direct"),
        4,
        prompts=["the cat", "red"],
        selectivity=3.0,
        max_new_tokens=4,
        store_topk=2,
        batch_size=32,
        progress=False,
    )
    assert_same_samples(ds, direct)  # the reloaded teacher runs sdpa attention, the fixture eager: float rounding
    with pytest.raises(ValueError, match="not several"):  # selectivity and temperature are exclusive
        generate_from_args(*parse_command("generate", [*argv, "--temperature", "0.5"]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_samples": 0}, "num_samples must be a positive integer"),
        ({"selectivity": 2.0, "temperature": 0.5}, "not several"),
        ({"selectivity": -1.0}, "selectivity must be > 0"),
        ({"selectivity": 1e39}, "beyond float32's range"),
        ({"temperature": 1e-100}, "beyond float32's range"),
        ({"top_p": 1.5}, "top_p must be in"),
        ({"store_topk": 10_000}, "exceeds the vocabulary"),
        ({"prompt": "a", "prompts": ["b"]}, "not both"),
        ({"backend": "vllm"}, "vLLM"),
        ({"backend": "onnx"}, "backend='onnx' is unknown"),
    ],
)
def test_bad_arguments_fail_early(tmp_path, tokenizer, sharp_teacher, kwargs, match):
    args = {"num_samples": 2, **kwargs}
    n = args.pop("num_samples")
    try:
        import vllm  # noqa: F401

        if kwargs.get("backend") == "vllm":
            match = "pass a model id or path"  # with vLLM present, a loaded model is what is refused
    except ImportError:
        pass
    with pytest.raises(ValueError, match=match):
        generate_distillation_dataset(sharp_teacher, tokenizer, str(tmp_path), n, progress=False, **args)
    assert not (tmp_path / "data").exists() or not os.listdir(tmp_path / "data")


def test_sample_seeds_are_distinct_63_bit_integers():
    assert len({generation.sample_seed(s, i) for s in range(3) for i in range(100)}) == 300
    assert 0 <= generation.sample_seed(2**40, 10**12) < 2**63
