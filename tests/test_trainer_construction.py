"""Bad prompts, datasets and tokenizers fail when the trainer is built, with a message naming the problem."""

import pytest
import torch
import trl
from conftest import make_llama, make_tokenizer
from datasets import Dataset

from hf_kd import DistillationConfig, DistillationTrainer
from hf_kd.fingerprint import token_id_signature
from hf_kd.generation import generate_distillation_dataset


def build(tmp_path, train_dataset, tokenizer=None, teacher=None, **config):
    tokenizer = tokenizer or make_tokenizer()
    args = DistillationConfig(
        str(tmp_path / "out"), report_to="none", max_completion_length=4, per_device_train_batch_size=2, **config
    )
    return DistillationTrainer(
        model=make_llama(len(tokenizer), 1),
        teacher_model=teacher if teacher is not None else make_llama(len(tokenizer), 0),
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )


def bosless_tokenizer():
    """The test tokenizer without a BOS token: an empty prompt then encodes to nothing."""
    tok = make_tokenizer()
    tok.bos_token = None
    return tok


# -------------------------------------------------------------------------------------------- prompts (point 8)
def test_dataset_without_prompt_column(tmp_path):
    data = Dataset.from_dict({"question": ["the cat", "a dog"]})
    with pytest.raises(ValueError, match=r"train_dataset has no 'prompt' column \(columns: \['question'\]\).*rename"):
        build(tmp_path, data)
    with pytest.raises(ValueError, match="eval_dataset has no 'prompt' column"):
        args = DistillationConfig(str(tmp_path), report_to="none", eval_strategy="steps", eval_steps=1)
        DistillationTrainer(
            model=make_llama(25, 1),
            teacher_model=make_llama(25, 0),
            args=args,
            train_dataset=Dataset.from_dict({"prompt": ["the"]}),
            eval_dataset=data,
            processing_class=make_tokenizer(),
        )


def test_empty_prompt_without_bos(tmp_path):
    tok = bosless_tokenizer()
    assert tok(text=[""])["input_ids"] == [[]]  # the premise: TRL would feed a zero-length prompt to torch
    with pytest.raises(ValueError, match=r"empty prompt '' and the tokenizer adds no BOS token.*filter"):
        build(tmp_path, Dataset.from_dict({"prompt": ["the cat", ""]}), tokenizer=tok)
    build(tmp_path, Dataset.from_dict({"prompt": ["the cat", "a dog"]}), tokenizer=tok)  # non-empty prompts: fine


def test_empty_prompt_with_a_bos_tokenizer_is_fine(tmp_path):
    tok = make_tokenizer()
    # This tokenizer adds no special tokens by itself; give it a post-processor that prepends BOS like Llama's.
    from tokenizers import processors

    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    assert tok(text=[""])["input_ids"] == [[2]]
    build(tmp_path, Dataset.from_dict({"prompt": ["the cat", ""]}), tokenizer=tok)


def test_empty_train_dataset(tmp_path):
    empty = Dataset.from_dict({"prompt": []})
    with pytest.raises(ValueError, match="train_dataset is empty"):
        build(tmp_path, empty, max_steps=3)


# ------------------------------------------------------------------------------------------ tokenizers (point 9)
def other_tokenizer():
    """Same size as the test tokenizer, other words (so other ids for the same text)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "dog the a cat sat on mat ran fast slow big small red blue and then it was very happy sad".split()
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<unk>", "<s>", "</s>", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        name_or_path="other-tokenizer",
    )


def test_signature_tells_tokenizers_apart_and_survives_save(tmp_path):
    tok, other = make_tokenizer(), other_tokenizer()
    assert len(tok) == len(other) and tok("the cat")["input_ids"] != other("the cat")["input_ids"]
    assert token_id_signature(tok) != token_id_signature(other)
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    reloaded.padding_side = "left"  # what TRL sets: not part of what maps text to ids
    assert token_id_signature(reloaded) == token_id_signature(tok)
    reloaded.chat_template, reloaded.eos_token = "{{ messages[0]['content'] }}", "<s>"  # an instruct variant's
    assert token_id_signature(reloaded) == token_id_signature(tok)  # the same ids for the same text


def test_teacher_saved_with_another_tokenizer(tmp_path):
    tok, other = make_tokenizer(), other_tokenizer()
    teacher = make_llama(len(tok), 0)
    teacher.save_pretrained(tmp_path / "teacher")
    other.save_pretrained(tmp_path / "teacher")
    data = Dataset.from_dict({"prompt": ["the cat", "a dog"]})
    with pytest.raises(ValueError, match=r"teacher's tokenizer .*differs from the student's.*cross-tokenizer"):
        build(tmp_path, data, tokenizer=tok, teacher=str(tmp_path / "teacher"))
    loaded = type(teacher).from_pretrained(tmp_path / "teacher")  # an instance loaded from there: checked too
    with pytest.raises(ValueError, match="differs from the student's"):
        build(tmp_path, data, tokenizer=tok, teacher=loaded)
    tok.save_pretrained(tmp_path / "teacher")  # the same tokenizer beside the teacher: accepted
    build(tmp_path, data, tokenizer=tok, teacher=str(tmp_path / "teacher"))


def test_generated_dataset_from_another_tokenizer(tmp_path):
    tok, other = make_tokenizer(), other_tokenizer()
    data = generate_distillation_dataset(
        make_llama(len(other), 0),
        other,
        str(tmp_path / "samples"),
        4,
        prompt="the",
        max_new_tokens=3,
        batch_size=2,
        progress=False,
    )
    assert set(data["token_id_signature"]) == {token_id_signature(other)}
    with pytest.raises(ValueError, match=r"signature [0-9a-f]{16}.*'other-tokenizer'|but the trainer's tokenizer"):
        build(tmp_path, data, tokenizer=tok, completion_source="dataset")
    trainer = build(tmp_path, data, tokenizer=other, completion_source="dataset")  # its own tokenizer: accepted
    assert trainer.args.completion_source == "dataset"


def test_plain_trl_config_is_accepted(tmp_path):
    args = trl.DistillationConfig(
        str(tmp_path),
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        beta=0.3,
        temperature=1.7,
        learning_rate=3e-4,
        max_completion_length=4,
    )
    trainer = DistillationTrainer(
        model=make_llama(25, 1),
        teacher_model=make_llama(25, 0),
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["the"]}),
        processing_class=make_tokenizer(),
    )
    assert isinstance(trainer.args, DistillationConfig)
    assert (trainer.beta, trainer.temperature, trainer.args.learning_rate) == (0.3, 1.7, 3e-4)
    assert trainer.args.selectivity == 1.0 and trainer.args.completion_source == "student"  # hf_kd's defaults
    assert trainer.args.loss_type == "generalized_jsd"  # TRL's loss


def test_heads_on_different_devices(tmp_path):
    trainer = build(tmp_path, Dataset.from_dict({"prompt": ["the cat"]}))
    trainer.teacher_model.lm_head.to("meta")  # a second device without needing a GPU
    ones = torch.ones(1, 2, dtype=torch.long)
    batch = {
        "prompt_ids": torch.tensor([[4, 5]]),
        "prompt_mask": ones,
        "completion_ids": torch.tensor([[6, 3]]),
        "completion_mask": ones,
    }
    with pytest.raises(ValueError, match=r"student `lm_head` is on cpu but the teacher `lm_head` is on meta"):
        trainer.compute_loss(trainer.model, batch)
