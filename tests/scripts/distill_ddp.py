"""A tiny distillation run whose logged losses are written to JSON; run it under torchrun to check multi-process.

    torchrun --nproc_per_node 2 tests/scripts/distill_ddp.py OUT.json    # 2 processes (gloo on CPU)
    python tests/scripts/distill_ddp.py OUT.json                          # 1 process, same global batch

The global batch is 4 prompts whatever the number of processes, and the completions come from the dataset, so the
two runs see the same tokens and must log the same losses (DDP averages gradients; TRL scales the loss by the number
of processes).
"""

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest's tiny models

import torch  # noqa: E402
from conftest import make_llama, make_tokenizer  # noqa: E402
from datasets import Dataset  # noqa: E402

from hf_kd.distillation_config import DistillationConfig  # noqa: E402
from hf_kd.distillation_trainer import DistillationTrainer  # noqa: E402

GLOBAL_BATCH = 4


def run(out_path: str, loss_type: str = "forward_kl", steps: int = 3) -> list[float]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    tok = make_tokenizer()
    data = Dataset.from_dict(
        {
            "prompt": ["the cat", "a dog ran", "the big mat", "red", "it was", "then a", "blue and", "on the"],
            "completion": ["sat on the mat", "fast", "was very happy", "dog", "sad", "cat ran", "red", "mat then"],
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        args = DistillationConfig(
            tmp,
            completion_source="dataset",
            loss_type=loss_type,
            selectivity=2.0,
            per_device_train_batch_size=GLOBAL_BATCH // world,
            max_steps=steps,
            learning_rate=5e-2,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            seed=3,
        )
        teacher = make_llama(len(tok), seed=0, hidden=32, layers=2)
        with torch.no_grad():
            teacher.lm_head.weight.mul_(10.0)  # a peaked teacher, so the loss depends strongly on the tokens
        trainer = DistillationTrainer(
            model=make_llama(len(tok), seed=1),
            teacher_model=teacher,
            args=args,
            train_dataset=data,
            processing_class=tok,
        )
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out_path).write_text(json.dumps({"world_size": world, "losses": losses}))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return losses


if __name__ == "__main__":
    run(sys.argv[1])
