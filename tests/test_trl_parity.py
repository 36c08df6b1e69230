"""hf_kd.DistillationTrainer is trl.DistillationTrainer at selectivity=1: same loss and student gradients.

Both trainers get the same models (instances, or local paths each trainer loads itself) and the same batch, and
`compute_loss` runs on each. Four model families cover what TRL's loss handles: a plain Llama, Qwen2-VL with images,
a Cohere-style `logit_scale` and a Gemma-2-style `final_logit_softcapping`; plus a LoRA student. Qwen2-VL's
processor needs torchvision's video processor, which cannot be installed next to this torch build, so the VLM
trainers get a minimal `ProcessorMixin` (TRL then treats the model as a VLM) and the batch's `pixel_values`,
`image_grid_thw` and `mm_token_type_ids` are built by hand as Qwen2-VL's processor lays them out.
"""

import copy

import pytest
import torch
import trl
from conftest import make_llama, make_tokenizer
from datasets import Dataset
from transformers import (
    CohereConfig,
    CohereForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    ProcessorMixin,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)

from hf_kd import DistillationConfig, DistillationTrainer

BETAS, TEMPERATURES = (0.0, 0.5, 1.0), (0.7, 1.0, 2.0)
# The whole 3 x 3 matrix on every case: about 0.3 s a case on two cores, so it runs in the fast suite.
FULL_GRID = [(b, t) for b in BETAS for t in TEMPERATURES]
SMALL = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)


class TinyVLProcessor(ProcessorMixin):
    """A processor holding only a tokenizer: enough for TRL to treat the model as a vision-language model."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer)


def _peaky(model, scale):
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(scale)
    return model.eval()


def _cohere(vocab, seed):
    torch.manual_seed(seed)
    return _peaky(CohereForCausalLM(CohereConfig(vocab_size=vocab, logit_scale=0.25, pad_token_id=0, **SMALL)), 8.0)


def _gemma2(vocab, seed):
    torch.manual_seed(seed)
    config = Gemma2Config(
        vocab_size=vocab,
        head_dim=8,
        final_logit_softcapping=2.0,
        query_pre_attn_scalar=8,
        sliding_window=16,
        pad_token_id=0,
        **SMALL,
    )
    return _peaky(Gemma2ForCausalLM(config), 6.0)


def _qwen2_vl(vocab, seed):
    """Tiny Qwen2-VL: image token id = vocab, 2x2 patches of 2x2 pixels, merged 2x2 into one image token."""
    torch.manual_seed(seed)
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=vocab + 2,
            max_position_embeddings=128,
            tie_word_embeddings=False,
            rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
            **SMALL,
        ),
        vision_config=dict(
            depth=1,
            embed_dim=16,
            hidden_size=16,
            num_heads=2,
            mlp_ratio=2,
            patch_size=2,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_channels=3,
        ),
        image_token_id=vocab,
        video_token_id=vocab + 1,
        vision_start_token_id=2,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    return _peaky(Qwen2VLForConditionalGeneration(config), 6.0)


def _llama(vocab, seed):
    return _peaky(make_llama(vocab, seed=seed, hidden=16, layers=1), 6.0)


FAMILIES = {"llama": _llama, "cohere": _cohere, "gemma2": _gemma2, "qwen2_vl": _qwen2_vl}


def text_batch():
    prompt_ids = torch.tensor([[4, 5, 6], [7, 8, 9], [20, 19, 10]])
    completion_ids = torch.tensor([[11, 12, 13, 3], [14, 3, 0, 0], [15, 16, 17, 18]])
    completion_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]])
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "num_items_in_batch": completion_mask.sum(),
    }


def vl_batch(vocab):
    """Two prompts with one 4x4-patch image each (4 image tokens after the 2x2 merge)."""
    img = vocab
    prompt_ids = torch.tensor([[2, img, img, img, img, 5, 6], [2, img, img, img, img, 9, 10]])
    batch = text_batch()
    batch = {k: v[:2] if k != "num_items_in_batch" else v for k, v in batch.items()}
    batch.update(prompt_ids=prompt_ids, prompt_mask=torch.ones_like(prompt_ids))
    batch["num_items_in_batch"] = batch["completion_mask"].sum()
    full = torch.cat([prompt_ids, batch["completion_ids"]], 1)
    gen = torch.Generator().manual_seed(0)
    # Qwen2-VL's processor flattens each image into (t*h*w patches, channels * temporal_patch * patch * patch).
    batch["pixel_values"] = torch.randn(2 * 16, 3 * 2 * 2 * 2, generator=gen)
    batch["image_grid_thw"] = torch.tensor([[1, 4, 4], [1, 4, 4]])
    batch["mm_token_type_ids"] = (full == img).long()  # TRL extends the prompt's with zeros over the completion
    return batch


def _trainers(student, teacher, processing_class, out, **config):
    """(TRL's trainer, ours) on the same models and data, at TRL's settings and hf_kd's defaults otherwise."""
    data = Dataset.from_dict({"prompt": ["the cat", "a dog ran", "the big mat", "red"]})
    common = dict(report_to="none", max_completion_length=4, per_device_train_batch_size=2, **config)
    theirs = trl.DistillationTrainer(
        model=student,
        teacher_model=teacher,
        train_dataset=data,
        processing_class=processing_class,
        args=trl.DistillationConfig(str(out / "trl"), bf16=False, gradient_checkpointing=False, **common),
    )
    ours = DistillationTrainer(
        model=student if isinstance(student, str) else theirs.model,
        teacher_model=teacher,
        train_dataset=data,
        processing_class=processing_class,
        args=DistillationConfig(str(out / "ours"), **common),
    )
    return theirs, ours


def _loss_and_grads(trainer, batch):
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, copy.copy(batch))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad and p.grad is not None}
    return loss.detach(), grads


CASES = [(family, form) for family in FAMILIES for form in ("instance", "path")] + [("llama", "lora")]
_BUILT = {}


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Build (and keep for the module) the trainers of one (family, form): each pair is built once."""

    def get(family, form):
        if (family, form) not in _BUILT:
            _BUILT[family, form] = _build(family, form, tmp_path_factory)
        return _BUILT[family, form]

    yield get
    _BUILT.clear()


def _build(family, form, tmp_path_factory):
    tok = make_tokenizer()
    vocab = len(tok)
    student, teacher = FAMILIES[family](vocab, 1), FAMILIES[family](vocab, 0)
    out = tmp_path_factory.mktemp(f"{family}-{form}")
    if form == "path":
        for name, model in (("student", student), ("teacher", teacher)):
            model.save_pretrained(out / name)
        student, teacher = str(out / "student"), str(out / "teacher")
    if form == "lora":
        from peft import LoraConfig, get_peft_model

        student = get_peft_model(student, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():  # LoRA's B starts at zero; make the adapter active so every LoRA weight gets a gradient
            for name, p in student.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    processing_class = TinyVLProcessor(tok) if family == "qwen2_vl" else tok
    theirs, ours = _trainers(student, teacher, processing_class, out)
    return theirs, ours, vl_batch(vocab) if family == "qwen2_vl" else text_batch()


def _check_parity(family, form, theirs, ours, batch, grid):
    assert isinstance(ours.teacher_model, type(theirs.teacher_model))
    for beta, temperature in grid:
        for trainer in (theirs, ours):  # what each trainer's __init__ reads from args.beta / args.temperature
            trainer.beta, trainer.temperature = beta, temperature
        loss_trl, grads_trl = _loss_and_grads(theirs, batch)
        loss_ours, grads_ours = _loss_and_grads(ours, batch)
        where = (family, form, beta, temperature)
        assert loss_trl.item() > 1e-4, where  # not a trivially zero loss
        assert abs(loss_ours.item() - loss_trl.item()) < 1e-5, (where, loss_ours.item(), loss_trl.item())
        assert grads_ours.keys() == grads_trl.keys() and grads_trl, where
        for name, g in grads_trl.items():
            torch.testing.assert_close(grads_ours[name], g, atol=1e-5, rtol=1e-4, msg=f"{where} {name}")


@pytest.mark.parametrize(("family", "form"), CASES, ids=["-".join(c) for c in CASES])
def test_loss_and_student_gradients_equal_trl_on_the_full_matrix(build, family, form):
    _check_parity(family, form, *build(family, form), FULL_GRID)


def test_images_reach_both_backbones(build):
    """Without its images the Qwen2-VL batch gives another loss, for TRL and for us alike."""
    theirs, ours, batch = build("qwen2_vl", "instance")
    text_only = {k: v for k, v in batch.items() if k not in ("pixel_values", "image_grid_thw")}
    text_only["mm_token_type_ids"] = torch.zeros_like(batch["mm_token_type_ids"])
    for trainer in (theirs, ours):
        trainer.beta, trainer.temperature = 0.5, 1.0
    with_images = [_loss_and_grads(t, batch)[0].item() for t in (theirs, ours)]
    without = [_loss_and_grads(t, text_only)[0].item() for t in (theirs, ours)]
    assert abs(with_images[0] - with_images[1]) < 1e-5
    assert abs(without[0] - without[1]) < 1e-5
    assert abs(with_images[0] - without[0]) > 1e-4


def _reference(trainer, batch, selectivity, temperature, beta):
    """The generalized JSD from the full float64 logits of each model's own forward (its scale and softcap
    included), the teacher's scaled by selectivity / temperature: written out, independent of both trainers."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    extra = {k: batch[k] for k in ("pixel_values", "image_grid_thw", "mm_token_type_ids") if k in batch}
    extra = {k: v.double() if v.is_floating_point() else v for k, v in extra.items()}
    p_len, k = batch["prompt_ids"].shape[1], batch["completion_ids"].shape[1]
    with torch.no_grad():
        z_s, z_t = (
            copy.deepcopy(m).double()(input_ids=ids, attention_mask=mask, **extra).logits[:, p_len - 1 : p_len - 1 + k]
            for m in (trainer.model, trainer.teacher_model)
        )
    log_q, log_p = torch.log_softmax(z_s / temperature, -1), torch.log_softmax(selectivity * z_t / temperature, -1)
    log_m = torch.log(beta * log_p.exp() + (1 - beta) * log_q.exp())
    kl_p = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_q = (log_q.exp() * (log_q - log_m)).sum(-1)
    m = batch["completion_mask"].bool()
    return (beta * kl_p + (1 - beta) * kl_q)[m].sum() / m.sum()


@pytest.mark.parametrize("selectivity", [0.5, 2.5])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_selectivity_scales_the_teacher_on_top_of_trl(build, family, selectivity):
    _, ours, batch = build(family, "instance")
    ours.args.selectivity = selectivity
    ours.beta, ours.temperature = 0.5, 0.7
    try:
        loss = ours.compute_loss(ours.model, copy.copy(batch))
    finally:
        ours.args.selectivity = 1.0
    ref = _reference(ours, batch, selectivity, 0.7, 0.5)
    assert abs(loss.item() - ref.item()) < 1e-5, (family, selectivity, loss.item(), ref.item())
    assert ours._metrics["train"]["selectivity"][-1] == pytest.approx(selectivity)


def test_config_values_reach_both_trainers_alike(tmp_path):
    """beta and temperature given through the configs (not set on the trainers) give TRL's loss."""
    tok = make_tokenizer()
    theirs, ours = _trainers(_cohere(len(tok), 1), _cohere(len(tok), 0), tok, tmp_path, beta=0.5, temperature=2.0)
    assert (ours.beta, ours.temperature) == (0.5, 2.0)
    loss_trl, grads_trl = _loss_and_grads(theirs, text_batch())
    loss_ours, grads_ours = _loss_and_grads(ours, text_batch())
    assert abs(loss_ours.item() - loss_trl.item()) < 1e-5
    for name, g in grads_trl.items():
        torch.testing.assert_close(grads_ours[name], g, atol=1e-5, rtol=1e-4)


def test_teacher_sampling_is_refused_for_vision_language_models(tmp_path):
    tok = make_tokenizer()
    args = DistillationConfig(str(tmp_path), report_to="none", completion_source="teacher", loss_type="nll")
    with pytest.raises(ValueError, match="does not pass images to the teacher's generate"):
        DistillationTrainer(
            model=_qwen2_vl(len(tok), 1),
            teacher_model=_qwen2_vl(len(tok), 0),
            args=args,
            train_dataset=Dataset.from_dict({"prompt": ["the cat"]}),
            processing_class=TinyVLProcessor(tok),
        )
