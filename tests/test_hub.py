"""Pushing a distilled student: the exact upload folders, checked at the HfApi boundary (no network)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_llama, make_tokenizer
from datasets import Dataset, DatasetDict, load_dataset
from huggingface_hub import HfApi, ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_kd.hub import prepare_dataset_folder, prepare_model_folder, push_distilled_student
from hf_kd.model_card import DistillationResults
from hf_kd.sanitize import find_leaks

TOKEN = "hf_" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg" * 2
MODEL_FILES = [
    "README.md",
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
]


@pytest.fixture(scope="module")
def saved_student(tmp_path_factory):
    """A trainer-style output folder: the model and tokenizer, plus what must stay local."""
    out = tmp_path_factory.mktemp("run") / "student"
    tokenizer = make_tokenizer()
    make_llama(len(tokenizer), seed=1).save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "training_args.bin").write_bytes(b"pickled args with " + str(out).encode())
    (out / "trainer_state.json").write_text(json.dumps({"best_model_checkpoint": str(out / "checkpoint-2")}))
    (out / "optimizer.pt").write_bytes(b"\0" * 16)
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / "model.safetensors").write_bytes(b"\0")
    (out / "runs").mkdir()
    (out / "README.md").write_text(f"trl's draft card, trained in {out}")
    return out


def results(student_dir: Path, **overrides) -> DistillationResults:
    fields = {
        "student_init": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "teacher": str(student_dir.parent / "teacher"),
        "datasets": ["HuggingFaceTB/smoltalk"],
        "selectivity": 4.0,
        "completion_source": "teacher",
        "loss_type": "nll",
        "num_train_steps": 2,
        "precision": -2.5,
        "precision_ci": [-2.6, -2.4],
        "recall": -4.25,
        "recall_ci": [-4.5, -4.0],
        "reference_model": str(student_dir.parent / "reference"),
        "num_eval_samples": 32,
        "command": f"python recipes/smollm2_kd.py --output_dir {student_dir} --hub_token {TOKEN}",
    }
    return DistillationResults(**{**fields, **overrides})


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """Intercept HfApi.create_repo / upload_folder: record the calls and snapshot each uploaded folder."""
    calls = []

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, "repo_type": repo_type, "private": private}))
        return f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, commit_message=None, **kwargs):
        snapshot = tmp_path / "uploaded" / f"{repo_type}-{len(calls)}"
        shutil.copytree(folder_path, snapshot)
        files = sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())
        calls.append(("upload_folder", {"repo_id": repo_id, "repo_type": repo_type, "files": files, "at": snapshot}))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def assert_no_leak(folder: Path, *secrets: str) -> None:
    for path in folder.rglob("*"):
        if path.suffix in (".md", ".json", ".jinja"):
            text = path.read_text(encoding="utf-8")
            assert find_leaks(text) == [], path.name
            for secret in (TOKEN, *secrets):
                assert secret not in text, (path.name, secret)


def test_push_uploads_exactly_the_model_and_its_card(saved_student, hub, tmp_path):
    out = push_distilled_student(saved_student, "me/tiny-kd", results(saved_student), private=True, token="x")
    assert [c[0] for c in hub] == ["create_repo", "upload_folder"]
    assert hub[0][1] == {"repo_id": "me/tiny-kd", "repo_type": "model", "private": True}
    upload = hub[1][1]
    assert (upload["repo_id"], upload["repo_type"], upload["files"]) == ("me/tiny-kd", "model", MODEL_FILES)
    assert out == {"model_files": MODEL_FILES, "model_url": "https://huggingface.co/me/tiny-kd"}
    folder = upload["at"]
    assert_no_leak(folder, str(saved_student.parent), "/tmp/")

    card = ModelCard.load(folder / "README.md")
    evals = card.data.eval_results
    metrics = {r.metric_type: (r.metric_value, r.metric_args["ci_low"], r.metric_args["ci_high"]) for r in evals}
    assert metrics == {"kd_precision": (-2.5, -2.6, -2.4), "kd_recall": (-4.25, -4.5, -4.0)}
    assert card.data.model_name == "tiny-kd" and card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "`teacher` (a local checkpoint)" in card.text and "--output_dir student" in card.text

    # what was uploaded is the model: it loads and computes the same logits
    ids = torch.tensor([[2, 4, 5, 6]])
    original = AutoModelForCausalLM.from_pretrained(saved_student)
    uploaded = AutoModelForCausalLM.from_pretrained(folder)
    torch.testing.assert_close(uploaded(ids).logits, original(ids).logits, rtol=0, atol=0)
    assert AutoTokenizer.from_pretrained(folder)("the cat sat").input_ids == make_tokenizer()("the cat sat").input_ids


def generated_dataset(root: Path) -> Path:
    """What hf_kd.generation writes: parquet shards, a dataset card, and local bookkeeping."""
    ds = Dataset.from_dict({"prompt": ["the", "a"], "completion": ["cat sat", "dog ran"], "num_tokens": [2, 2]})
    (root / "data").mkdir(parents=True)
    ds.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    (root / "README.md").write_text(
        f"---\nlicense: apache-2.0\n---\nSampled from {root}/teacher with --token {TOKEN}\n"
    )
    (root / "generation_args.json").write_text(json.dumps({"teacher": str(root / "teacher")}))
    (root / ".lock").write_text("")
    return root


def test_push_with_dataset(saved_student, hub, tmp_path):
    data_dir = generated_dataset(tmp_path / "gen")
    card = results(saved_student)
    out = push_distilled_student(saved_student, "me/tiny-kd", card, dataset_dir=data_dir)
    assert [(c[0], c[1]["repo_id"], c[1]["repo_type"]) for c in hub] == [
        ("create_repo", "me/tiny-kd-teacher-samples", "dataset"),
        ("upload_folder", "me/tiny-kd-teacher-samples", "dataset"),
        ("create_repo", "me/tiny-kd", "model"),
        ("upload_folder", "me/tiny-kd", "model"),
    ]
    assert hub[0][1]["private"] is False
    dataset_upload, model_upload = hub[1][1], hub[3][1]
    assert dataset_upload["files"] == ["README.md", "data/train-00000-of-00001.parquet"] == out["dataset_files"]
    assert out["dataset_url"] == "https://huggingface.co/datasets/me/tiny-kd-teacher-samples"
    assert_no_leak(dataset_upload["at"], str(tmp_path))
    assert "Sampled from teacher with\n" in (dataset_upload["at"] / "README.md").read_text()
    rows = load_dataset("parquet", data_files=str(dataset_upload["at"] / "data" / "*.parquet"), split="train")
    assert rows["completion"] == ["cat sat", "dog ran"]
    model_card = ModelCard.load(model_upload["at"] / "README.md")
    assert model_card.data.datasets == ["HuggingFaceTB/smoltalk", "me/tiny-kd-teacher-samples"]


def test_save_to_disk_dataset_becomes_parquet(tmp_path):
    splits = DatasetDict(
        train=Dataset.from_dict({"text": ["a b", "c"]}), validation=Dataset.from_dict({"text": ["d"]})
    )
    splits.save_to_disk(str(tmp_path / "saved"))
    files = prepare_dataset_folder(tmp_path / "saved", tmp_path / "up")
    assert files == ["data/train-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet"]
    loaded = load_dataset("parquet", data_dir=str(tmp_path / "up" / "data"))
    assert loaded["train"]["text"] == ["a b", "c"] and loaded["validation"]["text"] == ["d"]


def test_peft_adapter_points_at_the_hub_base(tmp_path):
    from peft import LoraConfig, get_peft_model

    tokenizer = make_tokenizer()
    base_dir = tmp_path / "base"
    make_llama(len(tokenizer)).save_pretrained(base_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        base_dir
    )
    card = results(tmp_path / "adapter", adapter="LoRA r=2")
    files = prepare_model_folder(tmp_path / "adapter", card, tmp_path / "up", repo_id="me/tiny-lora")
    assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((tmp_path / "up" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert config["r"] == 2
    assert ModelCard.load(tmp_path / "up" / "README.md").data.base_model_relation == "adapter"


def test_a_given_card_is_sanitised_too(saved_student, tmp_path):
    card = ModelCard(f"---\nlicense: mit\n---\n# Mine\nTrained at {saved_student} with {TOKEN}\n")
    prepare_model_folder(saved_student, card, tmp_path / "up")
    text = (tmp_path / "up" / "README.md").read_text()
    assert text.endswith("# Mine\nTrained at student with <redacted>\n") and find_leaks(text) == []
    assert str(saved_student) in str(card)  # the caller's card object is left as it was


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repo_id": "tiny-kd"}, "'owner/name'"),
        ({"repo_id": "/work/me/kd"}, "'owner/name'"),
        ({"dataset_repo_id": "me/data"}, "dataset_dir is not"),
        ({"card": 3}, "card must be a ModelCard"),
    ],
)
def test_bad_arguments_fail_before_any_upload(saved_student, hub, kwargs, message):
    args = {"output_dir": saved_student, "repo_id": "me/tiny-kd", "card": results(saved_student), **kwargs}
    with pytest.raises(ValueError, match=message):
        push_distilled_student(**args)
    assert hub == []


def test_folder_without_weights_is_refused(saved_student, hub, tmp_path):
    empty = tmp_path / "not-saved"
    empty.mkdir()
    with pytest.raises(ValueError, match="save the student first"):
        push_distilled_student(empty, "me/tiny-kd", results(saved_student))
    (empty / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds no weights"):
        push_distilled_student(empty, "me/tiny-kd", results(saved_student))
    with pytest.raises(ValueError, match="holds no data files"):
        push_distilled_student(saved_student, "me/tiny-kd", results(saved_student), dataset_dir=empty)
    assert [c for c in hub if c[0] == "upload_folder"] == []
