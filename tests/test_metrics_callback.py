"""PrecisionRecallCallback inside a plain transformers.Trainer on tiny models."""

import pytest
import torch
from conftest import make_llama
from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_kd.metrics import CausalLMAdapter, PrecisionRecallCallback, precision_recall

TEXTS = ["the cat sat on the mat", "a dog ran fast", "the big red dog was happy", "a small cat was sad"] * 4


class Recorder(TrainerCallback):
    """Stands in for a report_to integration: keeps what on_log receives."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def _dataset(tokenizer):
    enc = tokenizer(TEXTS, padding="max_length", max_length=8)
    labels = [
        [t if m else -100 for t, m in zip(ids, mask)] for ids, mask in zip(enc["input_ids"], enc["attention_mask"])
    ]
    return Dataset.from_dict({**enc, "labels": labels})


def test_callback_logs_precision_recall_through_trainer(tmp_path, tokenizer, teacher_model):
    student = make_llama(len(tokenizer), seed=7)
    reference = CausalLMAdapter(teacher_model, tokenizer, progress=False)
    reference_samples = reference.sample(24, prompt="the", max_new_tokens=6, seed=11)
    kwargs = {"num_samples": 24, "prompt": "the", "sample_kwargs": {"max_new_tokens": 6}, "n_boot": 200, "seed": 3}
    callback = PrecisionRecallCallback(reference, reference_samples=reference_samples, **kwargs)
    recorder = Recorder()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        eval_strategy="steps",
        eval_steps=1,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    data = _dataset(tokenizer)
    trainer = Trainer(
        model=student,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        processing_class=tokenizer,
        callbacks=[recorder],
    )
    callback.attach(trainer)
    trainer.train()

    evals = [log for log in recorder.logs if "eval_precision" in log]
    assert len(evals) == 2  # one per evaluation, seen by the logging callbacks
    for log in evals:
        assert set(log) >= {
            "eval_precision",
            "eval_recall",
            "eval_precision_ci_half_width",
            "eval_recall_ci_half_width",
        }
        assert log["eval_precision_ci_half_width"] > 0 and log["eval_recall_ci_half_width"] > 0
    assert evals[0]["eval_recall"] != evals[1]["eval_recall"]  # the student changed between evaluations

    metrics = trainer.evaluate()
    direct = precision_recall(
        CausalLMAdapter(student, tokenizer, progress=False),
        reference,
        reference_samples=reference_samples,
        prompt="the",
        sample_kwargs={"max_new_tokens": 6},
        num_samples=24,
        n_boot=200,
        seed=3 + trainer.state.global_step,
    )
    assert metrics["eval_precision"] == pytest.approx(direct["precision"], abs=1e-9)
    assert metrics["eval_recall"] == pytest.approx(direct["recall"], abs=1e-9)
    half = (direct["recall_ci"][1] - direct["recall_ci"][0]) / 2
    assert metrics["eval_recall_ci_half_width"] == pytest.approx(half)


def test_callback_without_attach_warns_and_fills_metrics(tokenizer, teacher_model):
    callback = PrecisionRecallCallback((teacher_model, tokenizer), tokenizer=tokenizer, num_samples=8, n_boot=50)

    class State:
        is_world_process_zero, global_step, log_history = True, 5, []

    metrics = {"eval_loss": 1.0}
    with pytest.warns(UserWarning, match="attach"):
        callback.on_evaluate(None, State, None, model=make_llama(len(tokenizer), seed=9), metrics=metrics)
    assert {"eval_precision", "eval_recall"} <= set(metrics) and State.log_history[-1]["step"] == 5
    assert len(callback.reference_samples) == 8  # drawn once from the reference
    first = list(callback.reference_samples)
    callback.on_evaluate(None, State, None, model=make_llama(len(tokenizer), seed=9), metrics={})
    assert callback.reference_samples == first
    with pytest.raises(ValueError, match="at least 2"):
        PrecisionRecallCallback((teacher_model, tokenizer), num_samples=1)
    assert torch.isfinite(torch.tensor(metrics["eval_precision"]))
