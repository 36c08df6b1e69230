"""Model cards: results schema, rendering through huggingface_hub, model-index, sanitising, CLI, trainer hook."""

import argparse
import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import make_llama, make_tokenizer
from datasets import Dataset
from huggingface_hub import ModelCard
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_kd.model_card import (
    CITATION,
    LOSS_DESCRIPTIONS,
    SOURCE_DESCRIPTIONS,
    DistillationResults,
    add_card_arguments,
    card_from_args,
    render_model_card,
    render_model_card_from_json,
    template_path,
    write_trainer_model_card,
)
from hf_kd.sanitize import current_command, find_leaks, is_hub_id, sanitize_text

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_" + "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7" * 2


def full_results(**overrides) -> dict:
    results = {
        "student_init": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "teacher": "HuggingFaceTB/SmolLM2-360M-Instruct",
        "datasets": ["HuggingFaceTB/smoltalk"],
        "selectivity": 2.0,
        "completion_source": "teacher",
        "loss_type": "forward_kl",
        "num_train_steps": 1200,
        "num_train_tokens": 4_915_200,
        "num_train_samples": 38_400,
        "precision": -1.8734,
        "precision_ci": [-1.9012, -1.8451],
        "recall": -3.2207,
        "recall_ci": [-3.2688, -3.1731],
        "reference_model": "HuggingFaceTB/SmolLM2-1.7B",
        "num_eval_samples": 512,
        "seeds": [0, 1, 2],
        "command": "accelerate launch recipes/smollm2_kd.py --config recipes/configs/smollm2_1.7b_to_135m_paper.yaml",
    }
    results.update(overrides)
    return results


def load_card(card: ModelCard, tmp_path) -> ModelCard:
    """Round-trip through a README on disk, as the Hub would read it."""
    path = tmp_path / "README.md"
    card.save(path)
    return ModelCard.load(path)


# ------------------------------------------------------------------------------------------ template and drift
def test_repository_template_is_the_packaged_template():
    packaged = template_path("model_card.md").read_text(encoding="utf-8")
    copy = (ROOT / "model_cards" / "template.md").read_text(encoding="utf-8")
    assert copy == packaged, "edit hf_kd/templates/model_card.md, then: cp hf_kd/templates/model_card.md model_cards/"


def test_descriptions_cover_every_loss_and_source():
    from hf_kd.distillation_config import COMPLETION_SOURCES
    from hf_kd.losses import LOSS_TYPES

    assert set(LOSS_DESCRIPTIONS) == set(LOSS_TYPES)
    assert set(SOURCE_DESCRIPTIONS) == set(COMPLETION_SOURCES)


def test_unknown_template_name_is_refused():
    with pytest.raises(ValueError, match="model_card.md"):
        template_path("nope.md")


# ------------------------------------------------------------------------------------------------ rendering
def test_card_loads_with_metadata_and_model_index(tmp_path):
    fields = full_results(eval_dataset="HuggingFaceTB/smoltalk")  # a Hub dataset: the numbers go into model-index
    card = load_card(render_model_card(fields, repo_id="someone/smollm2-135m-kd"), tmp_path)
    data = card.data
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert data.datasets == ["HuggingFaceTB/smoltalk"]
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation"
    assert {"hf_kd", "knowledge-distillation"} <= set(data.tags)
    assert data.model_name == "smollm2-135m-kd"
    assert data.distillation == {
        "teacher": "HuggingFaceTB/SmolLM2-360M-Instruct",
        "selectivity": 2.0,
        "completion_source": "teacher",
        "loss_type": "forward_kl",
        "student_init_method": "pretrained",
        "reference_model": "HuggingFaceTB/SmolLM2-1.7B",
    }
    by_type = {r.metric_type: r for r in data.eval_results}
    assert set(by_type) == {"kd_precision", "kd_recall"}
    expected = {"precision": (-1.8734, -1.9012, -1.8451), "recall": (-3.2207, -3.2688, -3.1731)}
    for side, (value, low, high) in expected.items():
        result = by_type[f"kd_{side}"]
        assert result.task_type == "text-generation"
        assert result.metric_value == value
        assert result.metric_args == {
            "unit": "token",
            "metric": "likelihood",
            "confidence": 0.95,
            "ci_low": low,
            "ci_high": high,
        }
        assert result.dataset_args == {"reference_model": "HuggingFaceTB/SmolLM2-1.7B", "num_samples": 512}
    text = card.text
    assert "| Precision | -1.873 | [-1.901, -1.845] |" in text
    assert "| Recall | -3.221 | [-3.269, -3.173] |" in text
    assert "| 95% CI |" in text
    command = "accelerate launch recipes/smollm2_kd.py --config recipes/configs/smollm2_1.7b_to_135m_paper.yaml"
    assert f"```bash\n{command}\n```" in text
    assert CITATION in text and "2505.13111" in text and "Cha, Sungmin and Cho, Kyunghyun" in text
    assert "selectivity beta = 2 (teacher temperature 0.5)" in text
    assert "1,200 steps, 4,915,200 tokens, 38,400 samples" in text
    assert "| Seeds | 0, 1, 2 |" in text
    assert 'pipeline("text-generation", model="someone/smollm2-135m-kd")' in text
    assert "https://huggingface.co/datasets/HuggingFaceTB/smoltalk" in text
    assert "{{" not in str(card) and "{%" not in str(card)


def test_card_without_evaluation_has_no_model_index(tmp_path):
    fields = full_results(student_init_method="from_scratch", target_entropy=1.5, selectivity=None)
    for key in ("precision", "precision_ci", "recall", "recall_ci"):
        fields.pop(key)
    card = load_card(render_model_card(fields), tmp_path)
    assert card.data.eval_results is None and "model-index" not in str(card)
    assert card.data.base_model is None  # random weights: nothing is fine-tuned from the named architecture
    assert "This checkpoint has not been evaluated yet" in card.text
    assert "from scratch (random weights, architecture of" in card.text
    assert "mean token entropy is 1.5 nats" in card.text
    assert card.data.distillation["target_entropy"] == 1.5


def test_sharpening_and_sources_in_words():
    greedy = render_model_card(full_results(selectivity="inf", loss_type="nll")).text
    assert "greedy teacher (selectivity beta = inf" in greedy
    mixture = render_model_card(full_results(completion_source={"teacher": 0.7, "dataset": 0.3})).text
    assert "a mixture drawn per generation batch: `teacher` 70%, `dataset` 30%" in mixture
    plain = render_model_card(full_results(selectivity=1.0, loss_type="generalized_jsd", loss_params={"beta": 0.5}))
    assert "none (selectivity beta = 1: the teacher as is)" in plain.text
    assert "generalized Jensen-Shannon divergence per token (beta=0.5)" in plain.text
    # TRL's temperature divides both sides; the teacher's effective temperature is temperature / selectivity.
    tempered = render_model_card(full_results(selectivity=2.0, loss_params={"temperature": 1.5})).text
    assert "selectivity beta = 2 (teacher temperature 0.75)" in tempered
    shared = render_model_card(full_results(selectivity=1.0, loss_params={"temperature": 2.0})).text
    assert "none (selectivity beta = 1: the teacher as is, both models at temperature 2)" in shared


def test_adapter_and_extra_metrics(tmp_path):
    fields = full_results(adapter="LoRA r=16, alpha=32", extra_metrics={"density": 0.91, "coverage": 0.42})
    fields["eval_dataset"] = "HuggingFaceTB/smoltalk"
    card = load_card(render_model_card(fields), tmp_path)
    assert card.data.base_model_relation == "adapter"
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {
        "kd_precision": -1.8734,
        "kd_recall": -3.2207,
        "kd_density": 0.91,
        "kd_coverage": 0.42,
    }
    assert "| Adapter | LoRA r=16, alpha=32 |" in card.text


def test_embedding_metric_without_intervals(tmp_path):
    fields = full_results(metric="embedding", precision=0.81, recall=0.37, precision_ci=None, recall_ci=None)
    fields["eval_dataset"] = "HuggingFaceTB/smoltalk"
    card = load_card(render_model_card(fields), tmp_path)
    assert {r.metric_type: (r.metric_value, r.metric_args) for r in card.data.eval_results} == {
        "kd_precision": (0.81, {"unit": "token", "metric": "embedding"}),
        "kd_recall": (0.37, {"unit": "token", "metric": "embedding"}),
    }
    assert "| Precision | 0.810 | not computed |" in card.text and "| Recall | 0.370 | not computed |" in card.text
    assert "k-nearest-neighbour manifolds" in card.text and "bootstrap" not in card.text


def test_custom_template_receives_the_variables(tmp_path):
    custom = tmp_path / "mine.md"
    rows = "{% for r in eval_rows %}{{ r.name }}={{ r.ci }};{% endfor %}"
    custom.write_text("---\n{{ card_data }}\n---\n# {{ title }}\n" + rows)
    card = render_model_card(full_results(model_name="Mine"), template=custom)
    assert card.text.strip() == "# Mine\nPrecision=[-1.901, -1.845];Recall=[-3.269, -3.173];"


# ------------------------------------------------------------------------------------------------ sanitising
@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("--config /work/main/recipes/configs/q.yaml", "--config q.yaml"),
        ("--output_dir=/tmp/run-3/out/", "--output_dir=out"),
        ("saved to C:\\Users\\me\\kd\\student", "saved to student"),
        ("saved to D:/runs/student", "saved to student"),
        ("from ~/models/teacher and \\\\nas\\share\\t5", "from teacher and t5"),
        ("'/home/me/x y'", "'x y'"),
        (
            "see https://huggingface.co/HuggingFaceTB/SmolLM2-1.7B",
            "see https://huggingface.co/HuggingFaceTB/SmolLM2-1.7B",
        ),
        ("precision/recall of recipes/configs/a.yaml", "precision/recall of recipes/configs/a.yaml"),
        ("ends with </s>; <details>x</details> 1/2", "ends with </s>; <details>x</details> 1/2"),
        (f"python x.py --hub_token {TOKEN} --max_new_tokens 64", "python x.py --max_new_tokens 64"),
        (f"python x.py --token={TOKEN} --hub-token abc --push_to_hub", "python x.py --push_to_hub"),
        (f"HF_TOKEN={TOKEN} python x.py", "python x.py"),
        (f"token: {TOKEN}.", "token: <redacted>."),
    ],
)
def test_sanitize_text(raw, clean):
    assert sanitize_text(raw) == clean
    assert find_leaks(clean) == []


_PIECES = st.sampled_from(
    ["/home/me/run", "/tmp/x/", "C:\\Users\\a", "~/m", TOKEN, "--hub_token", "=", "/", "a", "b/c", "'", "-", ".", ":"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_PIECES, st.sampled_from([" ", "=", "\n", "'", ","])), max_size=12))
def test_sanitize_is_idempotent_and_leaves_no_leak(pieces):
    text = "".join(piece + sep for piece, sep in pieces)
    clean = sanitize_text(text)
    assert find_leaks(clean) == []
    assert sanitize_text(clean) == clean
    assert TOKEN not in clean and "/home/me" not in clean and "Users" not in clean


def test_no_local_path_or_token_leaks_into_a_card(tmp_path):
    local = str(tmp_path / "ckpts")
    fields = full_results(
        student_init=f"{local}/student-init",
        student_init_method="layer_slice",
        student_init_details=f"every 2nd layer of {local}/teacher",
        teacher="/work/smollm2",
        datasets=["/home/alice/data/prompts.jsonl", "HuggingFaceTB/smoltalk"],
        reference_model="C:\\models\\smollm2-1.7b",
        eval_dataset="/data/eval_prompts.jsonl",
        adapter=f"LoRA from {local}/lora",
        model_name=f"{local}/pretty-name",
        command=f"HF_TOKEN={TOKEN} python {local}/smollm2_kd.py --output_dir /tmp/out --hub_token {TOKEN}",
        extra={"where": local},
    )
    card = render_model_card(fields)
    text = str(load_card(card, tmp_path))
    assert find_leaks(text) == []
    for secret in (str(tmp_path), "/work/", "/home/", "/tmp/", "C:\\", "/data/", TOKEN, "hf_aB3"):
        assert secret not in text
    assert "`smollm2` (a local checkpoint)" in text
    assert "`prompts.jsonl` (local data)" in text
    assert "a layer slice of `student-init` (a local checkpoint), every 2nd layer of teacher" in text
    assert "```bash\npython smollm2_kd.py --output_dir out\n```" in text
    assert card.data.base_model is None and card.data.datasets == ["HuggingFaceTB/smoltalk"]
    assert card.data.distillation["teacher"] == "smollm2"
    assert card.data.model_name == "pretty-name"


def test_is_hub_id(tmp_path, monkeypatch):
    assert is_hub_id("HuggingFaceTB/SmolLM2-135M") and is_hub_id("gpt2")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "student").mkdir(parents=True)
    for name in ("/work/smollm2", "./student", "../x", "~/m", "out/student", "a/b/c", "C:\\m", "", None):
        assert not is_hub_id(name), name


def test_current_command_is_relative_and_clean(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    argv = [str(tmp_path / "recipes" / "kd.py"), "--config", "/etc/x/c.yaml", "--hub_token", TOKEN]
    monkeypatch.setattr("sys.argv", argv)
    assert current_command() == "python recipes/kd.py --config c.yaml"


# --------------------------------------------------------------------------------------------------- schema
def test_results_json_round_trip(tmp_path):
    results = DistillationResults.from_dict(full_results(selectivity="inf", loss_type="nll"))
    assert results.selectivity == math.inf and results.precision_ci == (-1.9012, -1.8451)
    path = results.to_json(tmp_path / "results.json")
    raw = json.loads(Path(path).read_text())
    assert raw["selectivity"] == "inf" and raw["precision_ci"] == [-1.9012, -1.8451]
    assert DistillationResults.from_json(path) == results
    assert str(render_model_card_from_json(path)) == str(render_model_card(results))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": 1e-4}, "unknown results keys \\['lr'\\]"),
        ({"loss_type": "kl"}, "loss_type='kl' is unknown"),
        ({"completion_source": "human"}, "completion_source='human' is unknown"),
        ({"completion_source": {"teacher": 0.5, "dataset": 0.4}}, "sum to 1"),
        ({"selectivity": 0}, "selectivity must be > 0"),
        ({"target_entropy": 1.0}, "either selectivity or target_entropy"),
        ({"precision_ci": [-1.8, -1.9]}, "low <= high"),
        ({"recall_ci": [-3.3]}, "field .recall_ci. must be a list of 2 numbers or null"),
        ({"precision": float("nan")}, "precision must be a finite number"),
        ({"num_train_steps": -1}, "num_train_steps must be a non-negative integer"),
        ({"student_init_method": "distilbert"}, "student_init_method='distilbert' is unknown"),
        ({"confidence": 95}, "confidence must be in \\(0, 1\\)"),
        ({"schema_version": 99}, "newer"),
    ],
)
def test_bad_results_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        DistillationResults.from_dict(full_results(**change))


def test_with_precision_recall_takes_the_metric_output():
    from hf_kd.metrics import precision_recall
    from hf_kd.models.gmm import GMMConfig, GMMModel

    torch.manual_seed(0)
    student, reference = GMMModel(GMMConfig(num_components=2)), GMMModel(GMMConfig(num_components=3))
    pr = precision_recall(student, reference, num_samples=64, n_boot=200, seed=3)
    results = DistillationResults(student_init="scratch", student_init_method="scratch", teacher="t")
    results = results.with_precision_recall(pr, reference_model="gmm-3")
    assert (results.precision, results.recall) == (pr["precision"], pr["recall"])
    assert results.precision_ci == tuple(pr["precision_ci"]) and results.recall_ci == tuple(pr["recall_ci"])
    assert (results.unit, results.num_eval_samples, results.reference_model) == (pr["unit"], 64, "gmm-3")
    evaluation = render_model_card(results).data.distillation["evaluation"]  # samples of a model: no model-index
    assert (evaluation["precision"], evaluation["recall"]) == (pr["precision"], pr["recall"])
    assert evaluation["precision_ci"] == list(pr["precision_ci"]) and evaluation["num_samples"] == 64


# ------------------------------------------------------------------------------------------------------ CLI
def test_card_command(tmp_path, capsys):
    path = DistillationResults.from_dict(full_results()).to_json(tmp_path / "results.json")
    parser = add_card_arguments(argparse.ArgumentParser())
    out = tmp_path / "card" / "README.md"
    card_from_args(parser.parse_args([path, "-o", str(out), "--repo-id", "me/kd", "--tag", "smollm2"]))
    card = ModelCard.load(out)
    assert "smollm2" in card.data.tags and card.data.model_name == "kd"
    assert capsys.readouterr().out.strip() == f"model card: {out}"
    card_from_args(parser.parse_args([path]))
    assert capsys.readouterr().out.strip() == str(render_model_card_from_json(path)).strip()


# -------------------------------------------------------------------------------------------------- trainer
def test_trainer_card_after_training(tmp_path, monkeypatch):
    from hf_kd.distillation_config import DistillationConfig
    from hf_kd.distillation_trainer import DistillationTrainer

    monkeypatch.setattr("sys.argv", ["train.py", "--output_dir", str(tmp_path), "--hub_token", TOKEN])
    tokenizer = make_tokenizer()
    teacher, student = make_llama(len(tokenizer), seed=0, hidden=32, layers=2), make_llama(len(tokenizer), seed=1)
    teacher.config._name_or_path, student.config._name_or_path = "/work/teacher-ckpt", "HuggingFaceTB/SmolLM2-135M"
    args = DistillationConfig(
        str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=2,
        max_completion_length=4,
        completion_source="dataset",
        loss_type="generalized_jsd",
        beta=0.25,
        target_entropy=1.0,
        report_to="none",
        save_strategy="no",
        seed=7,
        hub_model_id="me/tiny-kd",
    )
    data = Dataset.from_dict({"prompt": ["the cat", "a dog"] * 2, "completion": ["sat on the mat", "ran fast"] * 2})
    trainer = DistillationTrainer(student, teacher, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    path = write_trainer_model_card(trainer, dataset_name="me/prompts", tags=["tiny"])
    assert path == str(tmp_path / "out" / "README.md")
    card = ModelCard.load(path)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M" and card.data.datasets == ["me/prompts"]
    assert card.data.eval_results is None and "tiny" in card.data.tags
    assert card.data.distillation == {
        "teacher": "teacher-ckpt",
        "target_entropy": 1.0,
        "completion_source": "dataset",
        "loss_type": "generalized_jsd",
        "student_init_method": "pretrained",
    }
    text = card.text
    # 2 steps x batch 2 x 1 process = the 4 rows once; tokens = prompt words + completion words and EOS, clipped at 4
    tokens = sum(len(p.split()) + min(len(c.split()) + 1, 4) for p, c in zip(data["prompt"], data["completion"]))
    assert tokens == trainer.state.num_input_tokens_seen == 22
    assert "| Training size | 2 steps, 22 tokens, 4 samples |" in text
    assert "| Seeds | 7 |" in text and "(beta=0.25)" in text
    assert "```bash\npython train.py --output_dir " in text and TOKEN not in text and find_leaks(str(card)) == []
    assert re.search(r"- transformers: \d", text)
