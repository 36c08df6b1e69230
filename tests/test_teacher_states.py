"""Teacher-sampled batches carry the teacher's hidden states from its sampling pass, and the loss reads them instead
of running the teacher again: the same loss and gradients (to float rounding) as the teacher's forward gives."""

import pytest
import torch
from conftest import make_llama
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

from hf_kd import DistillationConfig, DistillationTrainer
from hf_kd.completions import TEACHER_STATES, reuses_sampling_states

PROMPTS = ["the cat", "a big red dog sat on", "it", "the small blue mat and then"]  # unequal: left padding


def trainer_for(tmp_path, tokenizer, teacher, **config):
    args = DistillationConfig(
        str(tmp_path),
        per_device_train_batch_size=4,
        max_completion_length=6,
        report_to="none",
        completion_source="teacher",
        selectivity=2.0,
        temperature=0.8,
        **config,
    )
    data = Dataset.from_dict({"prompt": PROMPTS * 2})
    student = make_llama(len(tokenizer), seed=1, hidden=32, layers=2)
    return DistillationTrainer(student, teacher, args, train_dataset=data, processing_class=tokenizer)


def loss_and_grads(trainer, batch):
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, batch, None)[0]
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]


@pytest.mark.parametrize("loss_type", ["generalized_jsd", "forward_kl"])
def test_loss_from_sampling_states_equals_loss_from_teacher_forward(tmp_path, tokenizer, loss_type):
    teacher = make_llama(len(tokenizer), seed=0, hidden=32, layers=2)
    trainer = trainer_for(tmp_path, tokenizer, teacher, loss_type=loss_type)
    batch = trainer._generate_and_score_completions([{"prompt": p} for p in PROMPTS])
    assert batch["prompt_mask"].sum(1).unique().numel() > 1  # rows are left-padded by different amounts
    states = batch[TEACHER_STATES]
    assert states.shape == (*batch["completion_ids"].shape, 32)

    # the states themselves: the teacher's forward over prompt + completion at the scored positions
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad():
        forward = trainer._get_last_hidden_state(teacher, ids, mask, batch["completion_ids"].shape[1])
    valid = batch["completion_mask"].bool()
    torch.testing.assert_close(states[valid], forward[valid], rtol=1e-5, atol=1e-5)

    reused, reused_grads = loss_and_grads(trainer, batch)
    calls = []
    handle = teacher.register_forward_hook(lambda *a: calls.append(1))
    direct, direct_grads = loss_and_grads(trainer, {k: v for k, v in batch.items() if k != TEACHER_STATES})
    handle.remove()
    assert calls, "without the states the loss runs the teacher"
    torch.testing.assert_close(reused, direct, rtol=1e-5, atol=1e-6)
    for a, b in zip(reused_grads, direct_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_training_on_teacher_samples_runs_the_teacher_only_to_sample(tmp_path, tokenizer):
    teacher = make_llama(len(tokenizer), seed=0, hidden=32, layers=2)
    trainer = trainer_for(tmp_path, tokenizer, teacher, max_steps=2, logging_steps=1)
    full_forwards = []
    inner = trainer._get_last_hidden_state
    trainer._get_last_hidden_state = lambda model, *a, **k: full_forwards.append(model) or inner(model, *a, **k)
    trainer.train()
    assert trainer.state.global_step == 2
    assert full_forwards and all(m is trainer.model for m in full_forwards)  # the student's forwards only


def test_reuse_needs_relative_positions_and_no_tools(tokenizer):
    rotary = make_llama(len(tokenizer))
    absolute = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2))
    assert reuses_sampling_states(rotary, None)
    assert not reuses_sampling_states(rotary, [lambda: None])
    assert not reuses_sampling_states(absolute, None)  # learned absolute positions: the padding would shift them
