"""Token-level KD from stored top-k teacher log-probs (hf_kd.topk), and training a student on a generated dataset."""

import math

import pytest
import torch
from conftest import make_llama

from hf_kd.generation import generate_distillation_dataset
from hf_kd.losses import LOSS_TYPES, distillation_loss
from hf_kd.topk import topk_distillation_loss

DIVERGENCES = [t for t in LOSS_TYPES if t != "nll"]


def random_case(seed=0, shape=(3, 5), vocab=11):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(*shape, vocab, generator=g, dtype=torch.float64) * 2
    teacher = torch.randn(*shape, vocab, generator=g, dtype=torch.float64) * 3
    mask = torch.rand(shape, generator=g) > 0.3
    return student, teacher, mask


@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
@pytest.mark.parametrize("loss_type", DIVERGENCES)
def test_full_vocab_topk_equals_the_live_teacher_loss(loss_type, tail):
    student, teacher, mask = random_case()
    top_lp, top_ids = torch.log_softmax(teacher, -1).topk(teacher.shape[-1], -1)
    # The temperature divides both sides; only renormalize can temper the stored teacher.
    kwargs = {"loss_type": loss_type, "mask": mask, "temperature": 1.5 if tail == "renormalize" else 1.0}
    live = distillation_loss(student, teacher, **kwargs)
    stored = topk_distillation_loss(student, top_ids, top_lp, tail=tail, **kwargs)
    torch.testing.assert_close(stored, live, atol=1e-10, rtol=1e-10)
    s1, s2 = student.clone().requires_grad_(), student.clone().requires_grad_()
    distillation_loss(s1, teacher, **kwargs).backward()
    topk_distillation_loss(s2, top_ids, top_lp, tail=tail, **kwargs).backward()
    torch.testing.assert_close(s2.grad, s1.grad, atol=1e-10, rtol=1e-10)  # no NaN from the empty tail


def test_renormalized_topk_sharpens_exactly_with_full_vocab():
    student, teacher, mask = random_case(1)
    top_lp, top_ids = torch.log_softmax(teacher, -1).topk(teacher.shape[-1], -1)
    live = distillation_loss(student, teacher, loss_type="forward_kl", mask=mask, selectivity=2.5)
    stored = topk_distillation_loss(student, top_ids, top_lp, mask=mask, tail="renormalize", selectivity=2.5)
    torch.testing.assert_close(stored, live, atol=1e-10, rtol=1e-10)


def test_partial_topk_against_brute_force_and_data_processing_inequality():
    student, teacher, _ = random_case(2, shape=(4,), vocab=9)
    k = 3
    log_p, log_q = torch.log_softmax(teacher, -1), torch.log_softmax(student, -1)
    top_lp, top_ids = log_p.topk(k, -1)
    bucket = topk_distillation_loss(student, top_ids, top_lp, tail="bucket", num_items_in_batch=1)
    renorm = topk_distillation_loss(student, top_ids, top_lp, tail="renormalize", num_items_in_batch=1)
    want_bucket = want_renorm = 0.0
    for row in range(4):  # explicit sums over outcomes, one position at a time
        p, q = log_p[row].exp(), log_q[row].exp()
        ids = top_ids[row].tolist()
        rest = [v for v in range(9) if v not in ids]
        p_b = [p[v] for v in ids] + [sum(p[v] for v in rest)]
        q_b = [q[v] for v in ids] + [sum(q[v] for v in rest)]
        want_bucket += sum(a * math.log(a / b) for a, b in zip(p_b, q_b))
        zp, zq = sum(p[v] for v in ids), sum(q[v] for v in ids)
        want_renorm += sum(p[v] / zp * math.log((p[v] / zp) / (q[v] / zq)) for v in ids)
    assert float(bucket) == pytest.approx(float(want_bucket), rel=1e-10)
    assert float(renorm) == pytest.approx(float(want_renorm), rel=1e-10)
    full = distillation_loss(student, teacher, loss_type="forward_kl", num_items_in_batch=1)
    assert 0 < float(bucket) < float(full)  # coarse-graining never increases a KL


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss_type": "nll"}, "not a divergence"),
        ({"tail": "drop"}, "tail='drop' is unknown"),
        ({"selectivity": 2.0}, "cannot sharpen"),
        ({"temperature": 2.0}, "cannot sharpen or temper"),
        ({"temperature": 0.0}, "temperature must be"),
    ],
)
def test_topk_loss_bad_input(kwargs, match):
    student, teacher, _ = random_case()
    top_lp, top_ids = torch.log_softmax(teacher, -1).topk(4, -1)
    with pytest.raises(ValueError, match=match):
        topk_distillation_loss(student, top_ids, top_lp, **kwargs)
    with pytest.raises(ValueError, match="shapes disagree"):
        topk_distillation_loss(student, top_ids[..., :2], top_lp)


def assert_stored_topk_gives_the_live_teacher_kl(dataset, teacher, student, tokenizer, atol=2e-5):
    """Forward KL from each row's stored full-vocabulary top-k equals the KL against the live teacher's logits."""
    for row in dataset:
        prompt = tokenizer(row["prompt"])["input_ids"]
        ids = torch.tensor([prompt + row["completion_ids"]])
        scored = slice(len(prompt) - 1, ids.shape[1] - 1)  # positions that predict the completion tokens
        with torch.no_grad():
            teacher_logits = teacher(ids).logits[0, scored]
        student_logits = student(ids).logits[0, scored]
        live = distillation_loss(student_logits, teacher_logits, loss_type="forward_kl")
        stored = topk_distillation_loss(
            student_logits, torch.tensor(row["topk_ids"]), torch.tensor(row["topk_logprobs"]), loss_type="forward_kl"
        )
        torch.testing.assert_close(stored, live, atol=atol, rtol=1e-5)
        assert torch.tensor(row["topk_logprobs"]).exp().sum(-1).sub(1).abs().max() < 1e-5  # K = V: no tail


def test_generated_topk_with_full_vocab_gives_the_live_teacher_kl(tmp_path, tokenizer, teacher_model, student_model):
    vocab = len(tokenizer)
    ds = generate_distillation_dataset(
        teacher_model,
        tokenizer,
        str(tmp_path),
        6,
        prompts=["the cat", "a"],
        max_new_tokens=5,
        batch_size=4,
        store_topk=vocab,
        progress=False,
    )
    assert_stored_topk_gives_the_live_teacher_kl(ds, teacher_model, student_model, tokenizer)


def test_student_trains_on_a_generated_dataset(tmp_path, tokenizer, teacher_model):
    from hf_kd.distillation_config import DistillationConfig
    from hf_kd.distillation_trainer import DistillationTrainer

    ds = generate_distillation_dataset(
        teacher_model,
        tokenizer,
        str(tmp_path / "data"),
        8,
        prompts=["the cat", "a dog ran", "red", "it was"],
        max_new_tokens=6,
        batch_size=4,
        progress=False,
    )
    student = make_llama(len(tokenizer), seed=1)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    args = DistillationConfig(
        str(tmp_path / "out"),
        completion_source="dataset",
        loss_type="nll",
        max_steps=2,
        per_device_train_batch_size=4,
        max_completion_length=8,
        learning_rate=5e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher_model, args=args, train_dataset=ds, processing_class=tokenizer
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
