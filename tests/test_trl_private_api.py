"""Fails loudly when the private trl.DistillationTrainer methods hf_kd overrides or calls change.

hf_kd.DistillationTrainer overrides `_generate_and_score_completions`, `_generate_single_turn`, `_compute_loss`,
`_set_signature_columns_if_needed` and `_get_train_sampler`, calls `_get_last_hidden_state` and
`_forward_redirection`, reads TRL attributes (`_tokenizer`, `_metrics`, `_is_vlm`, `_dist`, ...), the `tool_mask`
input and RepeatSampler's fields, and mirrors TRL's logit post-processing and multimodal keys. They are private to
TRL; a new TRL release may change them silently. If this test fails, re-read trl/trainer/distillation_trainer.py and
adapt hf_kd/distillation_trainer.py (then update the pinned signatures below and the trl pin in pyproject.toml).
"""

import inspect

import trl

from hf_kd.distillation_trainer import DistillationTrainer

EXPECTED = {
    "_generate_and_score_completions": ["self", "inputs"],
    "_generate_single_turn": ["self", "prompt_ids", "images", "multimodal_fields", "has_tool_images"],
    "_compute_loss": ["self", "unwrapped_student", "inputs", "num_items_in_batch"],
    "compute_loss": ["self", "model", "inputs", "return_outputs", "num_items_in_batch"],
    "_generate": ["self", "prompts"],
    "_get_last_hidden_state": ["self", "unwrapped_model", "input_ids", "attention_mask", "logits_to_keep"],
    "_set_signature_columns_if_needed": ["self"],
    "_get_train_sampler": ["self", "dataset"],
    "_save_checkpoint": ["self", "model", "trial"],
    "create_model_card": ["self", "model_name", "dataset_name", "tags"],
}
OVERRIDES = (
    "_generate_and_score_completions",
    "_generate_single_turn",
    "_compute_loss",
    "compute_loss",
    "_set_signature_columns_if_needed",
    "_get_train_sampler",
)


def _params(fn):
    return list(inspect.signature(inspect.unwrap(fn)).parameters)


def test_trl_private_signatures_are_unchanged():
    base = trl.DistillationTrainer
    for name, expected in EXPECTED.items():
        assert hasattr(base, name), f"trl.DistillationTrainer.{name} is gone (trl {trl.__version__})"
        got = _params(getattr(base, name))
        assert got[: len(expected)] == expected, f"trl.DistillationTrainer.{name}{got} changed, expected {expected}"


def test_our_overrides_match_trl():
    for name in OVERRIDES:
        ours, theirs = getattr(DistillationTrainer, name), getattr(trl.DistillationTrainer, name)
        assert ours is not theirs, f"hf_kd no longer overrides {name}"
        assert _params(ours) == _params(theirs), f"{name}: hf_kd {_params(ours)} vs trl {_params(theirs)}"


def test_trl_internals_we_read():
    src = inspect.getsource(trl.DistillationTrainer._generate_and_score_completions)
    # the outputs our loss reads, and the call that routes generation through our override
    for key in ('"prompt_ids"', '"prompt_mask"', '"completion_ids"', '"completion_mask"', '"num_items_in_batch"'):
        assert key in src, f"_generate_and_score_completions no longer returns {key}"
    assert "self._generate(" in src
    assert "self._generate_single_turn(" in inspect.getsource(trl.DistillationTrainer._generate)
    init = inspect.getsource(trl.DistillationTrainer.__init__)
    for attr in ("self._forward_redirection", "self.generation_config", "self.eos_token_ids", "self.teacher_model"):
        assert attr in init, f"trl.DistillationTrainer.__init__ no longer sets {attr}"
    assert trl.__version__.startswith("1.16."), f"tested with trl 1.16.x, got {trl.__version__}: re-check overrides"


def test_trl_attributes_and_contracts_we_rely_on(tmp_path):
    """Build TRL's own trainer and check every attribute hf_kd reads, with the types it expects."""
    from conftest import make_llama, make_tokenizer
    from datasets import Dataset

    tok = make_tokenizer()
    args = trl.DistillationConfig(str(tmp_path), bf16=False, gradient_checkpointing=False, report_to="none")
    data = Dataset.from_dict({"prompt": ["the cat"]})
    student, teacher = make_llama(len(tok), 1), make_llama(len(tok), 0)
    trainer = trl.DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data, processing_class=tok
    )
    attrs = (
        "temperature",
        "beta",
        "teacher_model",
        "accelerator",
        "generation_config",
        "eos_token_ids",
        "max_completion_length",
        "chat_template_kwargs",
        "_forward_redirection",
        "model_kwarg_keys",
        "use_vllm",
        "model_wrapped",
    )
    for attr in attrs:
        assert hasattr(trainer, attr), f"trl.DistillationTrainer no longer sets {attr}"
    assert trainer._tokenizer is tok and trainer._is_vlm is False
    # on-policy sampling through hf_kd.sampling unwraps and gathers the student as TRL's generate does
    assert callable(trainer._dist.summon_full_params)
    generate_src = inspect.getsource(trl.DistillationTrainer._generate_single_turn)
    assert "self._dist.summon_full_params(self.model_wrapped" in generate_src
    assert "gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs" in generate_src
    trainer._metrics["train"]["x"].append(1.0)  # a dict of modes holding lists by name
    assert hasattr(trainer.args, "ds3_gather_for_generation") and hasattr(trainer, "shuffle_dataset")
    trainer._set_signature_columns_if_needed()
    assert "prompt" in trainer._signature_columns
    sampler = trainer._get_train_sampler()
    for attr in ("data_source", "mini_repeat_count", "batch_size", "repeat_count", "shuffle", "seed", "generator"):
        assert hasattr(sampler, attr), f"RepeatSampler no longer has {attr}"


def test_trl_loss_path_contracts():
    base = trl.DistillationTrainer
    compute = inspect.getsource(base.compute_loss)
    # compute_loss unpacks our _compute_loss's (loss, entropy sum, token count) through _forward_redirection
    assert "loss, entropy_sum, num_valid_tokens = self._forward_redirection(" in compute
    loss_src = inspect.getsource(base._compute_loss)
    assert '"tool_mask"' in loss_src, "TRL no longer masks the loss with tool_mask"
    assert '"tool_mask"' in inspect.getsource(base._generate_and_score_completions)
    from hf_kd.distillation_trainer import MULTIMODAL_KEYS

    for key in MULTIMODAL_KEYS:
        assert f'"{key}"' in loss_src, f"TRL no longer forwards {key}"
    hidden = _params(base._get_last_hidden_state)
    assert hidden[5:] == list(MULTIMODAL_KEYS), f"TRL's multimodal keys changed: {hidden[5:]}"
    for attr in (
        "logit_scale",
        "output_multiplier",
        "lm_head_multiplier",
        "logits_scaling",
        "hyperclovax",
        "final_logit_softcapping",
        "temperature=self.temperature",
    ):
        assert attr in loss_src, f"TRL's logit post-processing changed ({attr}): update hf_kd.lm_heads"
    assert "self.create_model_card(" in inspect.getsource(base._save_checkpoint)
    from trl.models.utils import unwrap_model_for_generation

    assert "gather_deepspeed3_params" in _params(unwrap_model_for_generation)
