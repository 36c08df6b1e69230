"""hf_kd.DistillationTrainer: loss vs a float64 full-logits reference, completion sources, construction errors."""

import copy
import math

import pytest
import torch
from conftest import make_llama, make_tokenizer
from datasets import Dataset

from hf_kd.completions import draw_source, tokenize_completions
from hf_kd.distillation_config import DistillationConfig
from hf_kd.distillation_trainer import DistillationTrainer
from hf_kd.losses import LOSS_TYPES
from hf_kd.sampling import trim_at_eos

PROMPTS = ["the cat", "a dog ran", "the big mat", "red"]
COMPLETIONS = ["sat on the mat", "fast", "was very happy", "dog"]


def dataset(with_completion=True):
    data = {"prompt": PROMPTS * 2}
    if with_completion:
        data["completion"] = COMPLETIONS * 2
    return Dataset.from_dict(data)


def peaky_llama(vocab, seed, hidden, layers, head_scale):
    """A tiny Llama whose lm_head is scaled so its next-token distributions are far from uniform."""
    model = make_llama(vocab, seed=seed, hidden=hidden, layers=layers)
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
    return model


def make_trainer(tmp_path, student=None, teacher=None, tokenizer=None, train_dataset=None, **config):
    tokenizer = tokenizer or make_tokenizer()
    student = student or peaky_llama(len(tokenizer), 1, 16, 1, 5.0)
    teacher = teacher or peaky_llama(len(tokenizer), 0, 32, 2, 20.0)
    config = {"max_completion_length": 6, "per_device_train_batch_size": 4, "report_to": "none", **config}
    args = DistillationConfig(str(tmp_path), **config)
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=dataset() if train_dataset is None else train_dataset,
        processing_class=tokenizer,
    )


def fixed_batch():
    """Prompts and right-padded ragged completions (ids 4.. are words). The prompts are not left-padded: a float64
    forward of transformers' eager attention gives NaN on fully padded query rows, which the reference cannot use."""
    prompt_ids = torch.tensor([[4, 5, 6], [7, 8, 9], [20, 19, 10]])
    prompt_mask = torch.ones_like(prompt_ids)
    completion_ids = torch.tensor([[11, 12, 13, 3], [14, 3, 0, 0], [15, 16, 17, 18]])
    completion_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]])
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "num_items_in_batch": completion_mask.sum(),
    }


def reference_loss(student, teacher, batch, loss_type, selectivity, temperature, jsd_beta, skew_alpha):
    """The distillation loss from full float64 logits, written out formula by formula."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    p_len, k = batch["prompt_ids"].shape[1], batch["completion_ids"].shape[1]
    with torch.no_grad():
        z_s = copy.deepcopy(student).double()(input_ids=ids, attention_mask=mask).logits[:, p_len - 1 : p_len - 1 + k]
        z_t = copy.deepcopy(teacher).double()(input_ids=ids, attention_mask=mask).logits[:, p_len - 1 : p_len - 1 + k]
    log_q = torch.log_softmax(z_s / temperature, -1)
    log_p = torch.log_softmax(selectivity * z_t / temperature, -1)  # TRL's temperature on both sides, then beta
    p, q = log_p.exp(), log_q.exp()

    def kl(a, log_a, log_b):
        return (a * (log_a - log_b)).sum(-1)

    if loss_type == "nll":
        per_token = -log_q.gather(-1, batch["completion_ids"][..., None])[..., 0]
    elif loss_type == "forward_kl":
        per_token = kl(p, log_p, log_q)
    elif loss_type == "reverse_kl":
        per_token = kl(q, log_q, log_p)
    elif loss_type == "generalized_jsd":
        log_m = torch.log(jsd_beta * p + (1 - jsd_beta) * q)
        per_token = jsd_beta * kl(p, log_p, log_m) + (1 - jsd_beta) * kl(q, log_q, log_m)
    elif loss_type == "skew_forward_kl":
        per_token = kl(p, log_p, torch.log(skew_alpha * p + (1 - skew_alpha) * q))
    elif loss_type == "skew_reverse_kl":
        per_token = kl(q, log_q, torch.log((1 - skew_alpha) * p + skew_alpha * q))
    elif loss_type == "tvd":
        per_token = 0.5 * (p - q).abs().sum(-1)
    m = batch["completion_mask"].bool()
    return per_token[m].sum() / m.sum()


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_matches_float64_reference(tmp_path, loss_type):
    source = "teacher" if loss_type == "nll" else "student"
    trainer = make_trainer(
        tmp_path, loss_type=loss_type, completion_source=source, beta=0.3, skew_alpha=0.2, temperature=1.5
    )
    trainer.model.train()
    batch = fixed_batch()
    for selectivity in (0.5, 1.0, 2.0, 4.0):
        trainer.args.selectivity = selectivity  # the loss reads it at every step
        loss = trainer.compute_loss(trainer.model, batch)
        ref = reference_loss(trainer.model, trainer.teacher_model, batch, loss_type, selectivity, 1.5, 0.3, 0.2)
        assert ref.item() > 1e-3  # a loss that is not trivially zero
        assert loss.item() == pytest.approx(ref.item(), abs=1e-5), (loss_type, selectivity)
        metrics = trainer._metrics["train"]
        if loss_type != "nll":
            assert metrics["selectivity"][-1] == pytest.approx(selectivity)
            sharper = metrics["teacher_entropy_sharpened"][-1] < metrics["teacher_entropy"][-1]
            assert sharper == (selectivity > 1) or selectivity == 1


def test_loss_gradient_matches_reference(tmp_path):
    trainer = make_trainer(tmp_path, loss_type="forward_kl", selectivity=2.0)
    trainer.model.train()
    batch = fixed_batch()
    trainer.compute_loss(trainer.model, batch).backward()
    grad = trainer.model.lm_head.weight.grad.clone()
    student = copy.deepcopy(trainer.model).double()
    student.zero_grad()
    # reference_loss deep-copies its models, so differentiate through an explicit float64 forward instead
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    z_s = student(input_ids=ids, attention_mask=mask).logits[:, 2:6]
    with torch.no_grad():
        z_t = copy.deepcopy(trainer.teacher_model).double()(input_ids=ids, attention_mask=mask).logits[:, 2:6]
    log_p = torch.log_softmax(2.0 * z_t, -1)
    per_token = (log_p.exp() * (log_p - torch.log_softmax(z_s, -1))).sum(-1)
    m = batch["completion_mask"].bool()
    (per_token[m].sum() / m.sum()).backward()
    torch.testing.assert_close(grad.double(), student.lm_head.weight.grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("per_token", [False, True])
def test_target_entropy_reaches_target(tmp_path, per_token):
    trainer = make_trainer(tmp_path, loss_type="forward_kl", target_entropy=1.0, per_token_selectivity=per_token)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, fixed_batch())
    metrics = trainer._metrics["train"]
    assert math.isfinite(loss.item())
    assert metrics["teacher_entropy_sharpened"][-1] == pytest.approx(1.0, abs=2e-3)
    assert metrics["teacher_entropy"][-1] > 1.2  # the target is a real change of the teacher
    if not per_token:  # one beta: the loss is the reference at that beta
        beta = metrics["selectivity"][-1]
        ref = reference_loss(trainer.model, trainer.teacher_model, fixed_batch(), "forward_kl", beta, 1.0, 0.5, 0.1)
        assert loss.item() == pytest.approx(ref.item(), abs=1e-5)


def greedy(teacher, tokenizer, prompts, max_new_tokens):
    out = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        gen = teacher.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens
        )
        out.append(trim_at_eos(gen[:, ids.shape[1] :], [tokenizer.eos_token_id])[0])
    return out


@pytest.mark.parametrize("selectivity", [1e6, float("inf")])
def test_sharp_teacher_samples_are_greedy_decoding(tmp_path, selectivity):
    trainer = make_trainer(tmp_path, loss_type="nll", completion_source="teacher", selectivity=selectivity)
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions([{"prompt": p} for p in PROMPTS])
    got = [ids[m.bool()].tolist() for ids, m in zip(out["completion_ids"], out["completion_mask"])]
    assert got == greedy(trainer.teacher_model, trainer.processing_class, PROMPTS, 6)


@pytest.mark.parametrize(("selectivity", "temperature"), [(1.0, 1.0), (2.0, 1.5)])
def test_teacher_samples_follow_the_sharpened_teacher(tmp_path, selectivity, temperature):
    """The first sampled token is distributed as softmax(selectivity * z / temperature) of the teacher's logits z,
    and the teacher is unwrapped for generation as TRL unwraps the student (gathering ZeRO-3 parameters once)."""
    from unittest import mock

    from hf_kd import distillation_trainer

    trainer = make_trainer(
        tmp_path,
        loss_type="nll",
        completion_source="teacher",
        max_completion_length=1,
        selectivity=selectivity,
        temperature=temperature,
    )
    # a milder teacher, so that several first tokens are likely
    with torch.no_grad():
        trainer.teacher_model.lm_head.weight.mul_(0.1)
    torch.manual_seed(0)
    n = 800
    unwrap = mock.Mock(wraps=distillation_trainer.unwrap_model_for_generation)
    with mock.patch.object(distillation_trainer, "unwrap_model_for_generation", unwrap):
        out = trainer._generate_and_score_completions([{"prompt": "the cat"}] * n)
    unwrap.assert_called_once_with(trainer.teacher_model, trainer.accelerator, gather_deepspeed3_params=True)
    counts = torch.bincount(out["completion_ids"][:, 0], minlength=len(trainer.processing_class)).double()
    ids = torch.tensor([trainer.processing_class("the cat")["input_ids"]])
    with torch.no_grad():
        z = trainer.teacher_model(ids).logits[0, -1].double()
        probs = torch.softmax(selectivity * z / temperature, -1)
    assert probs.max() < 0.6
    # every token's count within 4.5 binomial standard deviations
    sd = (n * probs * (1 - probs)).sqrt()
    assert ((counts - n * probs).abs() <= 4.5 * sd + 1).all()


def test_dataset_completions_are_tokenized_with_eos(tmp_path):
    trainer = make_trainer(tmp_path, loss_type="forward_kl", completion_source="dataset")
    tok = trainer.processing_class
    inputs = [{"prompt": p, "completion": c} for p, c in zip(PROMPTS, COMPLETIONS)]
    out = trainer._generate_and_score_completions(inputs)
    got = [ids[m.bool()].tolist() for ids, m in zip(out["completion_ids"], out["completion_mask"])]
    want = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in COMPLETIONS]
    assert got == want
    assert out["num_items_in_batch"].item() == sum(len(w) for w in want)


def test_conversational_dataset_completions():
    tok = make_tokenizer()
    prompts = [[{"role": "user", "content": "the cat"}]]
    completions = [[{"role": "assistant", "content": "sat on"}]]
    prompt_ids = [tok.apply_chat_template(prompts[0], add_generation_prompt=True, tokenize=True, return_dict=False)]
    ids = tokenize_completions(tok, prompts, completions, prompt_ids, eos_token_id=3, max_length=None)
    assert tok.convert_ids_to_tokens(ids[0]) == ["sat", "on", "</s>"]
    short = tokenize_completions(tok, prompts, completions, prompt_ids, eos_token_id=3, max_length=1)
    assert short == [ids[0][:1]]


def test_mixture_draw_is_shared_deterministic_and_calibrated():
    probs = {"teacher": 0.3, "student": 0.5, "dataset": 0.2}
    draws = [draw_source(probs, seed=7, step=s) for s in range(3000)]
    assert draws == [draw_source(dict(reversed(probs.items())), seed=7, step=s) for s in range(3000)]
    for name, p in probs.items():
        freq = draws.count(name) / 3000
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / 3000), name
    assert draws != [draw_source(probs, seed=8, step=s) for s in range(3000)]
    assert draw_source({"dataset": 1.0}, 0, 5) == "dataset"


def test_mixture_logs_the_source_of_each_batch(tmp_path):
    trainer = make_trainer(tmp_path, loss_type="forward_kl", completion_source={"teacher": 0.5, "dataset": 0.5})
    trainer.model.train()
    inputs = [{"prompt": p, "completion": c} for p, c in zip(PROMPTS, COMPLETIONS)]
    tok = trainer.processing_class
    from_dataset = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in COMPLETIONS]
    seen = set()
    for step in range(8):
        trainer.state.global_step = step
        out = trainer._generate_and_score_completions(inputs)
        expected = draw_source({"teacher": 0.5, "dataset": 0.5}, trainer.args.seed, step)
        seen.add(expected)
        assert trainer._metrics["train"][f"completions/from_{expected}"][-1] == 1.0
        got = [ids[m.bool()].tolist() for ids, m in zip(out["completion_ids"], out["completion_mask"])]
        assert (got == from_dataset) == (expected == "dataset")
    assert seen == {"teacher", "dataset"}


# ----------------------------------------------------------------------------------------- construction errors
def test_vocab_mismatch_names_both_sizes(tmp_path):
    tok = make_tokenizer()
    with pytest.raises(ValueError, match=r"vocab_size 30 .*vocab_size 25"):  # TRL's check, or ours for paths
        make_trainer(tmp_path, student=make_llama(30, 1), teacher=make_llama(25, 0), tokenizer=tok)


def test_dataset_source_needs_a_completion_column(tmp_path):
    with pytest.raises(ValueError, match="'completion' column.*rename_column"):
        make_trainer(tmp_path, completion_source="dataset", train_dataset=dataset(with_completion=False))
    with pytest.raises(ValueError, match="'completion' column"):
        make_trainer(
            tmp_path, completion_source={"dataset": 0.5, "student": 0.5}, train_dataset=dataset(with_completion=False)
        )


def test_unreachable_target_entropy_at_construction(tmp_path):
    vocab = len(make_tokenizer())
    with pytest.raises(ValueError, match=r"unreachable.*log V = 3\.2189"):
        make_trainer(tmp_path, loss_type="forward_kl", target_entropy=math.log(vocab) + 0.01)


def test_missing_teacher_is_an_error(tmp_path):
    args = DistillationConfig(str(tmp_path), loss_type="forward_kl", report_to="none")
    with pytest.raises(ValueError, match="needs a teacher_model"):
        DistillationTrainer(
            model=make_llama(25, 1), args=args, train_dataset=dataset(), processing_class=make_tokenizer()
        )


def test_nll_on_dataset_completions_needs_no_teacher(tmp_path):
    args = DistillationConfig(str(tmp_path), loss_type="nll", completion_source="dataset", report_to="none")
    trainer = DistillationTrainer(
        model=make_llama(25, 1), args=args, train_dataset=dataset(), processing_class=make_tokenizer()
    )
    trainer.model.train()
    assert math.isfinite(trainer.compute_loss(trainer.model, fixed_batch()).item())


def test_tokenizer_without_pad_token_pads_with_eos(tmp_path):
    tok = make_tokenizer()
    tok.pad_token = None
    with pytest.warns(UserWarning, match="no pad token"):
        trainer = make_trainer(tmp_path, tokenizer=tok)
    assert trainer.processing_class.pad_token == "</s>"
    tok = make_tokenizer()
    tok.pad_token, tok.eos_token = None, None
    with pytest.raises(ValueError, match="neither a pad token nor an EOS token"):
        make_trainer(tmp_path, tokenizer=tok)
