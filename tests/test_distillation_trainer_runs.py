"""End-to-end hf_kd.DistillationTrainer runs on tiny models: every completion source, LoRA, resume, two processes."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_llama, make_tokenizer
from datasets import Dataset
from transformers import TrainerCallback

from hf_kd.distillation_config import DistillationConfig
from hf_kd.distillation_trainer import DistillationTrainer

SCRIPT = Path(__file__).parent / "scripts" / "distill_ddp.py"
DATA = {
    "prompt": ["the cat", "a dog ran", "the big mat", "red", "it was", "then a", "blue and", "on the"],
    "completion": ["sat on the mat", "fast", "was very happy", "dog", "sad", "cat ran", "red", "mat then"],
}


def build(tmp_path, peft_config=None, data=DATA, **config):
    tok = make_tokenizer()
    student = make_llama(len(tok), seed=1)
    teacher = make_llama(len(tok), seed=0, hidden=32, layers=2)
    with torch.no_grad():
        teacher.lm_head.weight.mul_(10.0)
    config = {
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "max_completion_length": 6,
        "learning_rate": 5e-2,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "selectivity": 2.0,
        **config,
    }
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=DistillationConfig(str(tmp_path), **config),
        train_dataset=Dataset.from_dict(data),
        processing_class=tok,
        peft_config=peft_config,
    )
    return trainer


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before, model):
    return {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}


@pytest.mark.parametrize(
    "source, loss_type",
    [
        ("student", "generalized_jsd"),
        ("student", "skew_reverse_kl"),
        ("teacher", "nll"),
        ("teacher", "forward_kl"),
        ("dataset", "nll"),
        ("dataset", "tvd"),
        ({"teacher": 0.4, "student": 0.3, "dataset": 0.3}, "skew_forward_kl"),
    ],
)
def test_two_steps_train_the_student_only(tmp_path, source, loss_type):
    trainer = build(tmp_path, completion_source=source, loss_type=loss_type)
    student0, teacher0 = snapshot(trainer.model), snapshot(trainer.teacher_model)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) for h in logs)
    assert "model.embed_tokens.weight" in changed(student0, trainer.model)
    assert "lm_head.weight" in changed(student0, trainer.model)
    assert not changed(teacher0, trainer.teacher_model)
    assert all(math.isfinite(h["entropy"]) for h in logs)
    if loss_type != "nll":
        for h in logs:
            assert h["selectivity"] == pytest.approx(2.0)
            assert h["teacher_entropy_sharpened"] < h["teacher_entropy"]  # beta = 2 sharpens
    if isinstance(source, dict):
        assert all(sum(h[f"completions/from_{s}"] for s in source) == 1.0 for h in logs)


@pytest.mark.parametrize("source, loss_type", [("teacher", "nll"), ("student", "reverse_kl")])
def test_lora_student_trains_the_adapter_and_saves_it(tmp_path, source, loss_type):
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj"], lora_dropout=0.0)
    trainer = build(tmp_path, peft_config=lora, completion_source=source, loss_type=loss_type)
    before, teacher0 = snapshot(trainer.model), snapshot(trainer.teacher_model)
    trainer.train()
    diff = changed(before, trainer.model)
    assert diff and all("lora_B" in k or "lora_A" in k for k in diff), diff  # only the adapter moved
    assert any("lora_B" in k for k in diff)
    assert not changed(teacher0, trainer.teacher_model)
    trainer.save_model(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()
    ids = torch.tensor([[5, 6, 7, 8]])
    trainer.model.eval()
    with torch.no_grad():
        adapted = trainer.model(input_ids=ids).logits
        merged = trainer.model.merge_and_unload()  # the one-liner documented in the trainer docstring
        torch.testing.assert_close(merged(input_ids=ids).logits, adapted, atol=1e-5, rtol=1e-5)
    assert type(merged).__name__ == "LlamaForCausalLM"


def test_lora_on_lm_head_is_refused(tmp_path):
    from peft import LoraConfig

    with pytest.raises(ValueError, match="lm_head"):
        build(tmp_path, peft_config=LoraConfig(r=2, target_modules=["q_proj", "lm_head"]))


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_resume_gives_the_same_final_loss(tmp_path):
    """4 steps in one go == 2 steps, checkpoint, resume for 2 (student sampling, so RNG state must be restored).

    The 4 steps stay inside one epoch: TRL 1.16's RepeatSampler draws each epoch's order from a generator whose state
    is not checkpointed, so a resume that crosses an epoch boundary sees another data order (an upstream limitation).
    """
    data = {k: v * 2 for k, v in DATA.items()}  # 16 prompts = 4 steps of 4
    settings = {"completion_source": "student", "loss_type": "forward_kl", "max_steps": 4, "seed": 11, "data": data}
    full = build(tmp_path / "full", **settings)
    full.train()
    first = build(tmp_path / "split", save_strategy="steps", save_steps=2, **settings)
    first.add_callback(StopAt(2))  # an interruption after the checkpoint; the LR schedule is still the 4-step one
    first.train()
    assert (tmp_path / "split" / "checkpoint-2").exists()
    resumed = build(tmp_path / "split", save_strategy="no", **settings)
    resumed.train(resume_from_checkpoint=str(tmp_path / "split" / "checkpoint-2"))
    final = [h["loss"] for h in full.state.log_history if "loss" in h]
    again = [h["loss"] for h in resumed.state.log_history if "loss" in h]
    assert len(final) == 4 and len(again) >= 2
    assert again[-1] == pytest.approx(final[-1], abs=1e-6)
    assert again[-2] == pytest.approx(final[-2], abs=1e-6)


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU) logs the same losses as one process on the same global batch (~35 s)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", str(SCRIPT), str(tmp_path / "ddp.json")]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=600)
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "one.json")], check=True, env=env, timeout=600)
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    one = json.loads((tmp_path / "one.json").read_text())
    assert (ddp["world_size"], one["world_size"]) == (2, 1)
    assert len(ddp["losses"]) == len(one["losses"]) == 3
    assert ddp["losses"] == pytest.approx(one["losses"], abs=1e-4)
    assert len(set(one["losses"])) == 3  # the student learns: the three steps differ
