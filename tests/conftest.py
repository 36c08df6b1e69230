"""Shared fixtures: a tiny word-level tokenizer and tiny Llama models built in code (nothing is downloaded)."""

import os
import tempfile

# A fresh datasets cache per session: `load_dataset(dir)` caches by path, and pytest reuses tmp paths across sessions,
# so a stale cache from an earlier run (with other columns) would be read back instead of the files.
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="hf_kd_datasets_"))

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

WORDS = "the a cat dog sat on mat ran fast slow big small red blue and then it was very happy sad".split()
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a 21-word vocabulary (ids 0-3 are pad, unk, bos, eos)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tok.chat_template = (
        "{% for m in messages %}{{ m['content'] }}{% if not loop.last %} {% endif %}{% endfor %}"
        "{% if add_generation_prompt %} {% endif %}"
    )
    return tok


def make_llama(vocab_size: int, seed: int = 0, hidden: int = 16, layers: int = 1, **kwargs) -> LlamaForCausalLM:
    """A tiny randomly initialised Llama (float32, eager attention) with a fixed seed."""
    torch.manual_seed(seed)
    defaults = dict(
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
    )
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, **{**defaults, **kwargs})
    config._attn_implementation = "eager"
    return LlamaForCausalLM(config).eval()


def tiny_sweep_config(teacher_dir, output_dir, **overrides) -> dict:
    """A recipes/smollm2_kd.py (`hf-kd distill`) config over a saved tiny teacher: 1-layer slices at selectivities 1
    and 4, 2 steps of 2 prompts each, 8 evaluation samples per side."""
    return {
        "teacher_name_or_path": str(teacher_dir),
        "student_init": "slice",
        "student_num_layers": 1,
        "prompt": "the",
        "num_prompts": 8,
        "selectivities": [1.0, 4.0],
        "completion_source": "teacher",
        "loss_type": "nll",
        "max_completion_length": 6,
        "per_device_train_batch_size": 2,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "save_strategy": "no",
        "report_to": "none",
        "eval_num_samples": 8,
        "eval_max_new_tokens": 6,
        "eval_prompt": "the",
        "eval_batch_size": 4,
        "output_dir": str(output_dir),
        **overrides,
    }


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def teacher_model(tokenizer):
    return make_llama(len(tokenizer), seed=0, hidden=32, layers=2)


@pytest.fixture(scope="session")
def student_model(tokenizer):
    return make_llama(len(tokenizer), seed=1, hidden=16, layers=1)
