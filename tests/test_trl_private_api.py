"""Fails loudly when the private trl.DistillationTrainer methods hf_kd overrides or calls change.

hf_kd.DistillationTrainer overrides `_generate_and_score_completions`, `_generate_single_turn` and `_compute_loss`,
and calls `_get_last_hidden_state` and `_forward_redirection`. They are private to TRL; a new TRL release may change
them silently. If this test fails, re-read trl/trainer/distillation_trainer.py and adapt hf_kd/distillation_trainer.py
(then update the pinned signatures below and the trl pin in pyproject.toml).
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
}


def _params(fn):
    return list(inspect.signature(inspect.unwrap(fn)).parameters)


def test_trl_private_signatures_are_unchanged():
    base = trl.DistillationTrainer
    for name, expected in EXPECTED.items():
        assert hasattr(base, name), f"trl.DistillationTrainer.{name} is gone (trl {trl.__version__})"
        got = _params(getattr(base, name))
        assert got[: len(expected)] == expected, f"trl.DistillationTrainer.{name}{got} changed, expected {expected}"


def test_our_overrides_match_trl():
    for name in ("_generate_and_score_completions", "_generate_single_turn", "_compute_loss", "compute_loss"):
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
