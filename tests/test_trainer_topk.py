"""hf_kd.DistillationTrainer on generated teacher-sample datasets: stored ids, stored top-k (no teacher loaded)."""

import copy
import math

import pytest
import torch
from conftest import make_llama
from datasets import Dataset

from hf_kd.distillation_config import DistillationConfig
from hf_kd.distillation_trainer import DistillationTrainer
from hf_kd.generation import generate_distillation_dataset
from hf_kd.topk import chunked_topk_distillation_loss, topk_distillation_loss

TOPK = ["topk_ids", "topk_logprobs"]


def make_trainer(tmp_path, tokenizer, dataset, teacher=None, student=None, **config):
    config = {"max_completion_length": 8, "per_device_train_batch_size": 4, "report_to": "none", **config}
    return DistillationTrainer(
        model=student if student is not None else make_llama(len(tokenizer), seed=1),
        teacher_model=teacher,
        args=DistillationConfig(str(tmp_path), **config),
        train_dataset=dataset,
        processing_class=tokenizer,
    )


@pytest.fixture(scope="module")
def full_topk_dataset(tmp_path_factory, tokenizer, teacher_model):
    """8 teacher samples with the whole vocabulary stored (K = V); prompts of equal length (no left padding)."""
    return generate_distillation_dataset(
        teacher_model,
        tokenizer,
        str(tmp_path_factory.mktemp("data")),
        8,
        prompts=["the cat", "a dog"],
        max_new_tokens=6,
        batch_size=8,
        store_topk=len(tokenizer),
        progress=False,
    )


def completions_of(out):
    return [ids[m.bool()].tolist() for ids, m in zip(out["completion_ids"], out["completion_mask"])]


# ------------------------------------------------------------------------------------------- stored completion ids
def test_stored_ids_are_used_and_cut_off_samples_get_no_eos(tmp_path, tokenizer):
    eos = tokenizer.eos_token_id
    # The texts disagree with the ids on purpose: only the ids may be used.
    ds = Dataset.from_dict(
        {
            "prompt": ["the cat", "a", "red", "it was"],
            "completion": ["dog", "dog", "dog", "dog"],
            "completion_ids": [[6, 7, eos], [8, 9, 10], [11, 12], [13] * 12],
            "finished": [True, False, True, False],
        }
    )
    trainer = make_trainer(tmp_path, tokenizer, ds, loss_type="nll", completion_source="dataset")
    out = trainer._generate_and_score_completions(list(ds))
    # finished: kept (EOS appended only if missing); cut off: no EOS; longer than max_completion_length: clipped
    assert completions_of(out) == [[6, 7, eos], [8, 9, 10], [11, 12, eos], [13] * 8]


def test_plain_text_datasets_are_still_tokenized_with_eos(tmp_path, tokenizer):
    ds = Dataset.from_dict({"prompt": ["the cat", "a"], "completion": ["sat on the mat", "dog"]})
    trainer = make_trainer(tmp_path, tokenizer, ds, loss_type="nll", completion_source="dataset")
    out = trainer._generate_and_score_completions(list(ds))
    want = [tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for c in ds["completion"]]
    assert completions_of(out) == want


def test_generated_dataset_ids_round_trip(tmp_path, tokenizer, full_topk_dataset):
    ds = full_topk_dataset
    assert set(ds["finished"]) == {True, False}  # both kinds of sample are exercised
    trainer = make_trainer(tmp_path, tokenizer, ds, loss_type="nll", completion_source="dataset")
    out = trainer._generate_and_score_completions(list(ds))
    assert completions_of(out) == ds["completion_ids"]
    for ids, done in zip(ds["completion_ids"], ds["finished"]):
        assert (ids[-1] == tokenizer.eos_token_id) == done


# ------------------------------------------------------------------------------------------------ stored top-k loss
def test_chunked_topk_loss_equals_the_dense_loss_and_its_gradient():
    g = torch.Generator().manual_seed(0)
    h, w, b = torch.randn(7, 5, generator=g), torch.randn(13, 5, generator=g), torch.randn(13, generator=g)
    top_lp, top_ids = torch.log_softmax(torch.randn(7, 13, generator=g) * 2, -1).topk(4, -1)
    kwargs = {"loss_type": "reverse_kl", "tail": "renormalize", "selectivity": 1.7, "temperature": 1.3}
    dense_params = [t.clone().requires_grad_() for t in (h, w, b)]
    dense = topk_distillation_loss(dense_params[0] @ dense_params[1].T + dense_params[2], top_ids, top_lp, **kwargs)
    dense.backward()
    chunk_params = [t.clone().requires_grad_() for t in (h, w, b)]
    chunked = chunked_topk_distillation_loss(
        chunk_params[0], chunk_params[1], top_ids, top_lp, student_bias=chunk_params[2], chunk_size=3, **kwargs
    )
    chunked.backward()
    torch.testing.assert_close(chunked, dense, atol=1e-6, rtol=1e-6)
    for a, d in zip(chunk_params, dense_params):
        torch.testing.assert_close(a.grad, d.grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "loss_type, tail, selectivity",
    [("forward_kl", "bucket", 1.0), ("reverse_kl", "bucket", 1.0), ("generalized_jsd", "renormalize", 2.0)],
)
def test_full_vocab_topk_trainer_loss_equals_the_live_teacher_loss(
    tmp_path, tokenizer, teacher_model, full_topk_dataset, loss_type, tail, selectivity
):
    config = {"loss_type": loss_type, "completion_source": "dataset", "selectivity": selectivity, "beta": 0.3}
    student = make_llama(len(tokenizer), seed=1)
    offline = make_trainer(
        tmp_path / "a", tokenizer, full_topk_dataset, student=copy.deepcopy(student), topk_tail=tail, **config
    )
    live = make_trainer(
        tmp_path / "b",
        tokenizer,
        full_topk_dataset.remove_columns(TOPK),
        teacher=teacher_model,
        student=copy.deepcopy(student),
        **config,
    )
    assert offline.use_topk and offline.teacher_model is None and not live.use_topk
    inputs = list(full_topk_dataset.select(range(4)))
    batches = [t._generate_and_score_completions(inputs) for t in (offline, live)]
    assert "topk_ids" in batches[0] and "topk_ids" not in batches[1]
    assert torch.equal(batches[0]["completion_ids"], batches[1]["completion_ids"])
    losses = []
    for trainer, batch in zip((offline, live), batches):
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        losses.append(loss)
    assert losses[1].item() > 1e-3
    assert losses[0].item() == pytest.approx(losses[1].item(), abs=1e-5)
    for (name, p_off), p_live in zip(offline.model.named_parameters(), live.model.parameters()):
        torch.testing.assert_close(p_off.grad, p_live.grad, atol=1e-5, rtol=1e-4, msg=name)
    m_off, m_live = offline._metrics["train"], live._metrics["train"]
    for name in ("teacher_entropy", "teacher_entropy_sharpened", "selectivity"):  # K = V: the same teacher
        assert m_off[name][-1] == pytest.approx(m_live[name][-1], abs=1e-4), name


def test_two_steps_without_a_teacher_model(tmp_path, tokenizer, teacher_model):
    ds = generate_distillation_dataset(
        teacher_model,
        tokenizer,
        str(tmp_path / "data"),
        8,
        prompts=["the cat", "a dog ran", "red", "it was"],
        max_new_tokens=6,
        batch_size=8,
        store_topk=4,
        progress=False,
    )
    student = make_llama(len(tokenizer), seed=1)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    trainer = make_trainer(
        tmp_path / "out",
        tokenizer,
        ds,
        student=student,
        loss_type="forward_kl",
        completion_source="dataset",
        max_steps=2,
        learning_rate=5e-2,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in logs)
    assert all(0 < h["teacher_entropy"] <= math.log(5) + 1e-6 for h in logs)  # K = 4 outcomes + the tail bucket
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_errors_without_a_teacher_or_with_an_impossible_sharpening(tmp_path, tokenizer, full_topk_dataset):
    plain = full_topk_dataset.remove_columns(TOPK)
    with pytest.raises(ValueError, match=r"needs a teacher_model.*store_topk"):
        make_trainer(tmp_path, tokenizer, plain, loss_type="forward_kl", completion_source="dataset")
    with pytest.raises(ValueError, match="needs a teacher_model"):  # the teacher source samples with the teacher
        make_trainer(
            tmp_path,
            tokenizer,
            full_topk_dataset,
            loss_type="forward_kl",
            completion_source={"dataset": 0.5, "teacher": 0.5},
        )
    with pytest.raises(ValueError, match="topk_tail='bucket' cannot sharpen"):
        make_trainer(
            tmp_path,
            tokenizer,
            full_topk_dataset,
            loss_type="forward_kl",
            completion_source="dataset",
            selectivity=2.0,
        )
    with pytest.raises(ValueError, match="topk_tail='drop' is unknown"):
        DistillationConfig(str(tmp_path), topk_tail="drop", report_to="none")


@pytest.mark.parametrize(
    "column, value, match",
    [
        ("topk_logprobs", math.nan, r"sample_id 5: .*log-probabilities contain NaN \(first at position \(2, 1\)\)"),
        ("topk_logprobs", 0.25, r"sample_id 5: .*positive value \(0\.25 > 0\)"),
        ("topk_ids", "duplicate", r"sample_id 5: .*repeat an id at one position \(first at position \(2,\)\)"),
    ],
)
def test_corrupt_stored_topk_is_refused_naming_the_row(tmp_path, tokenizer, full_topk_dataset, column, value, match):
    """NaN or positive stored log-probs and duplicate ids are refused when the batch is read (they were zeroed or
    accepted silently), naming the dataset row."""

    def damage(row):
        if row["sample_id"] == 5:
            stored = [list(r) for r in row[column]]
            stored[2][1] = stored[2][0] if value == "duplicate" else value
            row = {**row, column: stored}
        return row

    ds = full_topk_dataset.map(damage)
    trainer = make_trainer(
        tmp_path, tokenizer, ds, loss_type="forward_kl", completion_source="dataset", remove_unused_columns=True
    )
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    assert "sample_id" in batch[0]  # kept so that the message can name the row
    with pytest.raises(ValueError, match=match):
        trainer._generate_and_score_completions(list(ds))


def test_dataset_columns_survive_remove_unused_columns(tmp_path, tokenizer, full_topk_dataset):
    trainer = make_trainer(
        tmp_path,
        tokenizer,
        full_topk_dataset,
        loss_type="forward_kl",
        completion_source="dataset",
        remove_unused_columns=True,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert {"prompt", "completion", "completion_ids", "finished", *TOPK} <= set(batch[0])
    assert "teacher_logprob" not in batch[0]  # the other columns are still removed


def test_target_entropy_is_solved_on_the_renormalized_topk(tmp_path, tokenizer, full_topk_dataset):
    ds = full_topk_dataset.map(lambda r: {k: [row[:3] for row in r[k]] for k in TOPK})  # keep K = 3
    trainer = make_trainer(
        tmp_path,
        tokenizer,
        ds,
        loss_type="forward_kl",
        completion_source="dataset",
        topk_tail="renormalize",
        target_entropy=0.5,
    )
    trainer.model.train()
    batch = trainer._generate_and_score_completions(list(ds))
    assert batch["topk_ids"].shape[-1] == 3
    trainer.compute_loss(trainer.model, batch)
    metrics = trainer._metrics["train"]
    assert metrics["teacher_entropy_sharpened"][-1] == pytest.approx(0.5, abs=1e-3)
    assert metrics["teacher_entropy"][-1] <= math.log(3) and metrics["selectivity"][-1] > 1
