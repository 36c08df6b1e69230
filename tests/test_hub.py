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
    evaluation = card.data.distillation["evaluation"]  # samples of a reference model: not a model-index dataset
    metrics = {side: (evaluation[side], *evaluation[f"{side}_ci"]) for side in ("precision", "recall")}
    assert metrics == {"precision": (-2.5, -2.6, -2.4), "recall": (-4.25, -4.5, -4.0)}
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
    expected = ["README.md", "data/train-00000-of-00001.parquet", "generation_args.json"]
    assert dataset_upload["files"] == expected == out["dataset_files"]
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


# ------------------------------------------------------------------------------------- planted secrets, allow-list
SECRETS = {
    "token": TOKEN,
    "api_key": "--api_key=sk" + "-live4d3f2a1b0c9e8d7f6a5b4c3d2e1",
    "password": "--password hunter2-Secret",
    "wandb": "--wandb-api-key 0123456789abcdef0123456789abcdef01234567",
    "url": "https://alice:s3cr3t-pw@git.example.com/me/repo.git",
    "home": "/home/alice/private-runs/kd-7",
    "temp": "/tmp/tmpq8x_4z1/teacher",
}
# what each plant must not leave behind in an uploaded file
NEEDLES = [TOKEN, "sk-live4d3f", "api_key", "hunter2", "0123456789abcdef0123", "alice", "s3cr3t", "/home/", "/tmp/"]


def planted(text_of: str) -> str:
    return f"{text_of}: " + " ".join(SECRETS.values())


def test_planted_secrets_never_reach_the_hub(tmp_path, hub):
    """A token, secret options, URL credentials, a home and a temp path planted in every kind of file stay local."""
    tokenizer = make_tokenizer()
    out = tmp_path / "student"
    model = make_llama(len(tokenizer), seed=1)
    model.config.update({"custom_note": planted("config"), "hub_token": TOKEN, "run_dir": SECRETS["home"]})
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "train.py").write_text(f"# {planted('script')}\nHF_TOKEN = '{TOKEN}'\n")
    (out / "notes.txt").write_text(planted("notes"))
    (out / "wandb-metadata.json").write_text(json.dumps({"args": planted("wandb")}))
    gen = tmp_path / "gen"
    (gen / "data").mkdir(parents=True)
    Dataset.from_dict({"completion": ["the cat"]}).to_parquet(str(gen / "data" / "train-00000-of-00001.parquet"))
    (gen / "generation_args.json").write_text(
        json.dumps({"teacher": SECRETS["home"], "num_samples": 1, "batch_size": 1, "command": planted("cmd")})
    )
    (gen / "README.md").write_text(f"---\nlicense: mit\n---\n{planted('dataset card')}\n")
    (gen / "samples.jsonl").write_text(json.dumps({"text": planted("stray jsonl")}))
    (gen / "extra.csv").write_text(f"a\n{TOKEN}\n")
    card = ModelCard(f"---\nlicense: mit\n---\n# Card\n{planted('card')}\n")

    push_distilled_student(out, "me/kd", card, dataset_dir=gen)
    model_files = hub[3][1]["files"]
    dataset_files = hub[1][1]["files"]
    # the allow-lists: no script, notes, wandb file, jsonl or csv
    assert model_files == [
        "README.md",
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert dataset_files == ["README.md", "data/train-00000-of-00001.parquet", "generation_args.json"]
    for upload in (hub[1][1]["at"], hub[3][1]["at"]):
        for path in upload.rglob("*"):
            if path.is_file() and path.suffix != ".parquet" and path.name != "model.safetensors":
                text = path.read_text(encoding="utf-8")
                leaked = [n for n in NEEDLES if n in text]
                assert leaked == [] and find_leaks(text) == [], (path.name, leaked)
    config = json.loads((hub[3][1]["at"] / "config.json").read_text())
    assert config["hub_token"] == "<redacted>" and config["run_dir"] == "kd-7"
    assert (
        config["custom_note"].startswith("config: <redacted>")
        and "git.example.com/me/repo.git" in config["custom_note"]
    )
    record = json.loads((hub[1][1]["at"] / "generation_args.json").read_text())
    assert record["teacher"] == "kd-7" and record["num_samples"] == 1
    # sanitising did not touch what makes the model and tokenizer work
    uploaded = AutoModelForCausalLM.from_pretrained(hub[3][1]["at"])
    ids = torch.tensor([[2, 4, 5, 6]])
    original = AutoModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(uploaded(ids).logits, original(ids).logits, rtol=0, atol=0)
    assert AutoTokenizer.from_pretrained(hub[3][1]["at"]).get_vocab() == tokenizer.get_vocab()


def test_remote_code_named_by_auto_map_goes_up_unchanged(tmp_path):
    """The GMM's modeling files are the only *.py allowed, and sanitising leaves them byte for byte."""
    from hf_kd.models.gmm import GMMConfig, GMMModel

    out = tmp_path / "gmm"
    GMMConfig.register_for_auto_class()
    GMMModel.register_for_auto_class("AutoModel")
    GMMModel(GMMConfig(num_components=2, dim=2)).save_pretrained(out)
    (out / "train.py").write_text(f"token = '{TOKEN}'\n")
    code = sorted(p.name for p in out.glob("*.py") if p.name != "train.py")
    assert code, "save_pretrained wrote no remote code"
    files = prepare_model_folder(out, ModelCard("---\nlicense: mit\n---\n# GMM\n"), tmp_path / "up")
    assert "train.py" not in files and set(code) <= set(files)
    assert "kmeans.py" in files  # modeling_gmm.py imports it (`from .kmeans import`): no load without it
    for name in code:
        assert (tmp_path / "up" / name).read_bytes() == (out / name).read_bytes()


def test_stray_shard_is_refused_before_a_dataset_push(tmp_path, hub, saved_student):
    gen = tmp_path / "gen"
    (gen / "data").mkdir(parents=True)
    for name in ("train-00000-of-00001.parquet", "train-00000-of-00003.parquet"):
        Dataset.from_dict({"completion": ["x"]}).to_parquet(str(gen / "data" / name))
    (gen / "generation_args.json").write_text(json.dumps({"num_samples": 1, "batch_size": 1}))
    with pytest.raises(ValueError, match=r"train-00000-of-00003.parquet\); remove them before pushing"):
        push_distilled_student(saved_student, "me/kd", results(saved_student), dataset_dir=gen)
    assert hub == []
