"""Train a tiny student 12 steps over 3 epochs (a checkpoint every 3 steps) for each completion source.

    python tests/scripts/resume_run.py OUT full             # uninterrupted, every source
    python tests/scripts/resume_run.py OUT kill SOURCE      # SIGKILLed right after checkpoint-6 is written
    python tests/scripts/resume_run.py OUT resume           # train(resume_from_checkpoint=True), every source

Final student weights go to OUT/<mode>-<source>.safetensors.
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest's tiny models

import torch  # noqa: E402
from conftest import make_llama, make_tokenizer  # noqa: E402
from datasets import Dataset  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from hf_kd import DistillationConfig, DistillationTrainer  # noqa: E402

SOURCES = ("student", "teacher", "dataset")
PROMPTS = ["the cat", "a dog", "red", "the big mat", "it was", "blue and", "then the", "a small"]
COMPLETIONS = ["sat on the mat", "ran fast", "dog", "was very happy", "sad", "red", "cat ran", "dog sat"]


class KillAfterSave(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:  # checkpoint-6 is complete on disk: die as a preempted job would
            os.kill(os.getpid(), signal.SIGKILL)


def trainer(out: Path, source: str, callbacks=()):
    tok = make_tokenizer()
    args = DistillationConfig(
        str(out / source),
        report_to="none",
        completion_source=source,
        loss_type="forward_kl",
        selectivity=1.5,
        temperature=0.9,
        max_completion_length=4,
        per_device_train_batch_size=2,
        num_train_epochs=3,
        save_strategy="steps",
        save_steps=3,
        learning_rate=1e-2,
        seed=11,
        logging_steps=1,
    )
    data = Dataset.from_dict({"prompt": PROMPTS, "completion": COMPLETIONS})
    student, teacher = make_llama(len(tok), 1), make_llama(len(tok), 0, hidden=32)
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=data,
        processing_class=tok,
        callbacks=list(callbacks),
    )


def main():
    torch.set_num_threads(1)  # the same arithmetic in every process
    out, mode = Path(sys.argv[1]), sys.argv[2]
    for source in [sys.argv[3]] if mode == "kill" else SOURCES:
        t = trainer(out, source, [KillAfterSave(6)] if mode == "kill" else [])
        t.train(resume_from_checkpoint=True if mode == "resume" else None)
        assert t.state.global_step == 12, t.state.global_step
        weights = {k: v.detach().contiguous() for k, v in t.model.state_dict().items()}
        save_file(weights, str(out / f"{mode}-{source}.safetensors"))


if __name__ == "__main__":
    main()
