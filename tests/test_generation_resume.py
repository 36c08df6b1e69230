"""A resumed teacher-sample run must come from the same teacher: fingerprints, and no stray shards."""

import datasets
import pyarrow.parquet as pq
import pytest
import torch
from conftest import make_llama, make_tokenizer
from transformers import AutoModelForCausalLM

from hf_kd.fingerprint import state_dict_sha256, teacher_fingerprint, tokenizer_signature
from hf_kd.generation import generate_distillation_dataset

ARGS = {"prompt": "the", "max_new_tokens": 3, "batch_size": 2, "seed": 1, "progress": False}


def generate(teacher, out, tokenizer=None, n=6, **kwargs):
    return generate_distillation_dataset(teacher, tokenizer, str(out), n, **{**ARGS, **kwargs})


def test_state_dict_hash_sees_one_ulp_and_survives_a_reload(tmp_path, tokenizer):
    model = make_llama(len(tokenizer), seed=0)
    model.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert state_dict_sha256(reloaded) == state_dict_sha256(model)
    with torch.no_grad():
        w = model.lm_head.weight
        w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(float("inf")))  # the smallest possible change
    assert state_dict_sha256(model) != state_dict_sha256(reloaded)
    assert state_dict_sha256(model.to(torch.float64)) != state_dict_sha256(model.to(torch.float32))


def test_tokenizer_signature_tracks_vocabulary_specials_and_template():
    a, b = make_tokenizer(), make_tokenizer()
    assert tokenizer_signature(a) == tokenizer_signature(b)
    b.chat_template = "{{ messages[0]['content'] }}"
    assert tokenizer_signature(a) != tokenizer_signature(b)
    c = make_tokenizer()
    c.add_tokens(["zebra"])
    assert tokenizer_signature(a) != tokenizer_signature(c)


def test_same_teacher_resumes_another_is_refused(tmp_path, tokenizer):
    teacher = make_llama(len(tokenizer), seed=0)
    first = generate(teacher, tmp_path / "run", tokenizer)
    (tmp_path / "run" / "data" / "train-00002-of-00003.parquet").unlink()  # as if killed before the last shard
    assert generate(teacher, tmp_path / "run", tokenizer).to_dict() == first.to_dict()
    same_class = make_llama(len(tokenizer), seed=5)  # another LlamaForCausalLM: same name, same arguments
    with pytest.raises(ValueError, match=r"different teacher: its weights \([0-9a-f]{12} -> [0-9a-f]{12}\) changed"):
        generate(same_class, tmp_path / "run", tokenizer)
    other_tokenizer = make_tokenizer()
    other_tokenizer.chat_template = "{{ messages[0]['content'] }}"
    with pytest.raises(ValueError, match=r"its tokenizer \(.*\) changed"):
        generate(teacher, tmp_path / "run", other_tokenizer)


def test_overwritten_teacher_folder_and_new_dtype_are_refused(tmp_path, tokenizer):
    folder = tmp_path / "teacher"
    make_llama(len(tokenizer), seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    generate(folder, tmp_path / "run")
    record = (tmp_path / "run" / "generation_args.json").read_text()
    make_llama(len(tokenizer), seed=3).save_pretrained(folder)  # new weights, same path
    with pytest.raises(ValueError, match=r"its weights \(.*\) changed.*original teacher, or use a new output_dir"):
        generate(folder, tmp_path / "run")
    make_llama(len(tokenizer), seed=0).save_pretrained(folder)  # the original weights again
    with pytest.raises(ValueError, match=r"weights \(.*\), dtype \(float32 -> bfloat16\) changed"):
        generate(folder, tmp_path / "run", dtype="bfloat16")
    assert len(generate(folder, tmp_path / "run")) == 6  # the original teacher resumes
    assert (tmp_path / "run" / "generation_args.json").read_text() == record


def test_fingerprint_is_recorded_in_the_run(tmp_path, tokenizer):
    import json

    teacher = make_llama(len(tokenizer), seed=0)
    generate(teacher, tmp_path / "run", tokenizer)
    record = json.loads((tmp_path / "run" / "generation_args.json").read_text())
    assert record["teacher_fingerprint"] == teacher_fingerprint(teacher, tokenizer)
    assert record["teacher_fingerprint"]["dtype"] == "float32"


def test_stray_shard_is_refused_not_mixed_in(tmp_path, tokenizer):
    teacher = make_llama(len(tokenizer), seed=0)
    generate(teacher, tmp_path / "run", tokenizer)
    stray = tmp_path / "run" / "data" / "train-00000-of-00001.parquet"
    pq.write_table(pq.read_table(tmp_path / "run" / "data" / "train-00000-of-00003.parquet"), stray)
    # the reason: load_dataset reads every parquet file in data/, the API only its own shards. (A cache of our own:
    # `datasets` keys a local folder's cache by its name and file patterns, so another test's "run" would read ours.)
    loaded = datasets.load_dataset(str(tmp_path / "run"), split="train", cache_dir=str(tmp_path / "hf_cache"))
    assert len(loaded) == 8
    with pytest.raises(
        ValueError,
        match=r"1 parquet file\(s\) that are not shards of this run "
        r"\(train-00000-of-00001.parquet\).*Remove them",
    ):
        generate(teacher, tmp_path / "run", tokenizer)
    stray.unlink()
    assert len(generate(teacher, tmp_path / "run", tokenizer)) == 6
