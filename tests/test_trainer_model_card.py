"""save_model, checkpoints and push_to_hub write hf_kd's model card (not TRL's GKD card), without local paths."""

from unittest import mock

import pytest
from conftest import make_llama, make_tokenizer
from datasets import Dataset
from transformers import LlamaForCausalLM

from hf_kd import DistillationConfig, DistillationTrainer
from hf_kd.metrics.callback import PrecisionRecallCallback


@pytest.fixture
def trainer(tmp_path):
    tok = make_tokenizer()
    for name, seed in (("student", 1), ("teacher", 0)):
        make_llama(len(tok), seed).save_pretrained(tmp_path / "models" / name)
    args = DistillationConfig(
        str(tmp_path / "out"),
        report_to="none",
        max_completion_length=3,
        max_steps=1,
        per_device_train_batch_size=2,
        selectivity=2.5,
        completion_source="teacher",
        loss_type="forward_kl",
        save_strategy="steps",
        save_steps=1,
    )
    return DistillationTrainer(
        model=LlamaForCausalLM.from_pretrained(tmp_path / "models" / "student"),  # loaded from a local path
        teacher_model=str(tmp_path / "models" / "teacher"),
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["the cat", "a dog"]}),
        processing_class=tok,
    )


def assert_hf_kd_card(text, tmp_path):
    assert "Cha, Sungmin and Cho, Kyunghyun" in text and "2505.13111" in text  # the paper hf_kd implements
    assert "2306.13649" not in text and "agarwal2024on-policy" not in text  # TRL's GKD card
    assert "selectivity" in text and "2.5" in text and "forward_kl" in text and "teacher" in text
    assert str(tmp_path) not in text and "/tmp" not in text  # local paths are not published


def test_save_model_and_checkpoints_write_our_card(trainer, tmp_path):
    trainer.save_model(str(tmp_path / "saved"))
    assert_hf_kd_card((tmp_path / "saved" / "README.md").read_text(), tmp_path)
    trainer.train()  # one step, one checkpoint: TRL's _save_checkpoint calls create_model_card
    assert (tmp_path / "out" / "checkpoint-1").is_dir()
    assert_hf_kd_card((tmp_path / "out" / "README.md").read_text(), tmp_path)


def test_push_to_hub_writes_and_uploads_our_card(trainer, tmp_path):
    trainer.args.hub_model_id = "someone/tiny-kd"
    api = mock.MagicMock()
    api.create_repo.return_value.repo_id = "someone/tiny-kd"
    uploaded = {}
    api.upload_folder.side_effect = lambda **kw: uploaded.update(kw, card=(tmp_path / "out" / "README.md").read_text())
    with mock.patch("transformers.trainer.hf_api", return_value=api):
        trainer.push_to_hub(commit_message="kd", blocking=True)
    assert uploaded["repo_id"] == "someone/tiny-kd" and uploaded["folder_path"] == str(tmp_path / "out")
    assert_hf_kd_card(uploaded["card"], tmp_path)
    assert "someone/tiny-kd" in uploaded["card"]  # the usage snippet names the repository


def test_card_includes_measured_precision_and_recall(trainer, tmp_path):
    callback = PrecisionRecallCallback((make_llama(25, 3), make_tokenizer()), num_samples=2)
    callback.attach(trainer)
    # What hf_kd.metrics.precision_recall returns (the callback keeps its last result).
    callback.last_result = {
        "precision": -3.25,
        "recall": -4.5,
        "precision_ci": (-3.5, -3.0),
        "recall_ci": (-4.75, -4.25),
        "unit": "token",
        "confidence": 0.95,
    }
    trainer.save_model(str(tmp_path / "saved"))
    text = (tmp_path / "saved" / "README.md").read_text()
    assert_hf_kd_card(text, tmp_path)
    assert "-3.25" in text and "-4.5" in text
    from huggingface_hub import ModelCard

    # samples of a reference model are no Hub dataset: the numbers sit under distillation.evaluation, not model-index
    evaluation = ModelCard(text).data.distillation["evaluation"]
    assert (evaluation["precision"], evaluation["recall"]) == (-3.25, -4.5)
    assert evaluation["precision_ci"] == [-3.5, -3.0] and evaluation["recall_ci"] == [-4.75, -4.25]
