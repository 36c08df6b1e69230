"""hf_kd.DistillationTrainer (selectivity=2) vs trl.DistillationTrainer: step time and peak memory on CPU.

Teacher: SmolLM2-135M-Instruct (real weights, from hf_kd.offline.smollm2_135m_instruct()); student: its first 6 layers.
Batch 4, exactly 32 completion tokens (min_new_tokens=32), on-policy (student) completions, TRL's default loss
(generalized JSD with beta=1, i.e. reverse KL) for both; ours also sharpens the teacher with selectivity=2 and logs the
extra entropy metrics. Each trainer runs in its own process so that peak memory is its own.

    HF_KD_SMOLLM2_DIR=/work/smollm2 python benchmarks/bench_trainer.py [--quick]

Writes benchmarks/results/bench_trainer[_quick].json. Targets: step time ratio <= 1.05 (process CPU time / threads per
step, robust to other jobs on a shared machine; wall-clock kept too), peak memory ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

from memory import PeakMemory, fix_mmap_threshold  # benchmarks/ is on sys.path (script or run_all.py)
from report import row

RESULTS = Path(__file__).parent / "results"
BATCH, COMPLETION_TOKENS, STUDENT_LAYERS = 4, 32, 6


def _load(model_dir: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = teacher.config.__class__.from_dict(teacher.config.to_dict())
    config.num_hidden_layers = STUDENT_LAYERS
    student = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    student.load_state_dict(teacher.state_dict(), strict=False)  # the first 6 layers, embeddings, norm
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    return student, teacher, tokenizer


def _worker(kind: str, steps: int, model_dir: str, queue) -> None:
    fix_mmap_threshold()  # RSS then tracks live tensors, not glibc heap fragmentation (same for both trainers)
    import torch
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    import hf_kd.distillation_config as kd_config
    import hf_kd.distillation_trainer as kd_trainer

    torch.manual_seed(0)
    student, teacher, tokenizer = _load(model_dir)
    topics = ["the sea", "a cat", "mountains", "coffee", "the moon", "rain", "a city", "music"]
    prompts = [[{"role": "user", "content": f"Write one sentence about {t}."}] for t in topics]
    data = Dataset.from_dict({"prompt": (prompts * steps)[: BATCH * steps]})
    common = dict(
        per_device_train_batch_size=BATCH,
        max_completion_length=COMPLETION_TOKENS,
        generation_kwargs={"min_new_tokens": COMPLETION_TOKENS},  # every step scores exactly 32 tokens per row
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        bf16=False,
        seed=0,
        shuffle_dataset=False,
    )
    out_dir = tempfile.mkdtemp()
    if kind == "trl":
        args = trl.DistillationConfig(out_dir, gradient_checkpointing=False, **common)
        trainer_cls = trl.DistillationTrainer
    else:
        args = kd_config.DistillationConfig(out_dir, selectivity=2.0, **common)
        trainer_cls = kd_trainer.DistillationTrainer
    trainer = trainer_cls(
        model=student, teacher_model=teacher, args=args, train_dataset=data, processing_class=tokenizer
    )

    times: list[float] = []
    cpu_times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)
            cpu_times.append((time.process_time() - self.c0) / torch.get_num_threads())

    trainer.add_callback(Timer())
    with PeakMemory(interval=0.005) as mem:
        trainer.train()
    import resource

    logs = [h for h in trainer.state.log_history if "loss" in h]
    queue.put(
        {
            "kind": kind,
            "step_times_s": times,
            "step_cpu_times_s": cpu_times,
            "rss_before_train_mb": mem.start / 2**20,
            "peak_rss_mb": mem.peak / 2**20,
            "train_peak_increase_mb": mem.peak_extra / 2**20,
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "losses": [h["loss"] for h in logs],
            "completion_mean_length": [h.get("completions/mean_length") for h in logs],
        }
    )


def _run_one(kind: str, steps: int, model_dir: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(kind, steps, model_dir, queue))
    proc.start()
    result = queue.get(timeout=3600)
    proc.join()
    return result


def run(quick: bool = False, model_dir: str | None = None) -> dict:
    """Benchmark both trainers (alternating processes) and return the figures and ratios (also written as JSON)."""
    from hf_kd.offline import smollm2_135m_instruct  # honours $HF_KD_SMOLLM2_DIR

    model_dir = str(smollm2_135m_instruct(model_dir))
    steps, rounds = (7, 1) if quick else (8, 2)  # the first step of each run is a warm-up and is not timed
    runs = {"trl": [], "hf_kd": []}
    for _ in range(rounds):
        for kind in ("trl", "hf_kd"):
            runs[kind].append(_run_one(kind, steps, model_dir))
            last = runs[kind][-1]
            print(f"{kind}: steps {[round(t, 2) for t in last['step_times_s']]} s wall, "
                  f"{[round(t, 2) for t in last['step_cpu_times_s']]} s CPU / threads", flush=True)  # fmt: skip

    def step_time(kind, key="step_cpu_times_s"):
        return statistics.median(t for r in runs[kind] for t in r[key][1:])

    def peak(kind, key):
        return max(r[key] for r in runs[kind])

    result = {
        "setup": {
            "teacher": "SmolLM2-135M-Instruct",
            "student": f"first {STUDENT_LAYERS} layers of the teacher",
            "batch": BATCH,
            "completion_tokens": COMPLETION_TOKENS,
            "device": "cpu",
            "torch_threads": __import__("torch").get_num_threads(),
            "timed_steps_per_run": steps - 1,
            "runs_per_trainer": rounds,
            "ours": "selectivity=2, completion_source='student', loss_type='generalized_jsd' (beta=1)",
        },
        # Process CPU time / threads per step, as bench_scoring: other jobs on a shared machine stretch wall-clock
        # steps unevenly (measured: the same trainer's wall steps ranged 5.9-31.7 s in one run); wall kept below.
        "timing": "process CPU time / torch threads per step (median of steps after the first)",
        "trl_step_s": step_time("trl"),
        "hf_kd_step_s": step_time("hf_kd"),
        "step_time_ratio": step_time("hf_kd") / step_time("trl"),
        "trl_step_wall_s": step_time("trl", "step_times_s"),
        "hf_kd_step_wall_s": step_time("hf_kd", "step_times_s"),
        "step_wall_time_ratio": step_time("hf_kd", "step_times_s") / step_time("trl", "step_times_s"),
        "trl_peak_rss_mb": peak("trl", "peak_rss_mb"),
        "hf_kd_peak_rss_mb": peak("hf_kd", "peak_rss_mb"),
        "peak_memory_ratio": peak("hf_kd", "peak_rss_mb") / peak("trl", "peak_rss_mb"),
        "train_peak_increase_ratio": peak("hf_kd", "train_peak_increase_mb") / peak("trl", "train_peak_increase_mb"),
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench_trainer{'_quick' if quick else ''}.json"
    path.write_text(json.dumps(result, indent=2))
    print(
        f"step time: trl {result['trl_step_s']:.3f} s, hf_kd {result['hf_kd_step_s']:.3f} s, "
        f"ratio {result['step_time_ratio']:.3f} (target <= 1.05; CPU time / threads; wall-clock ratio "
        f"{result['step_wall_time_ratio']:.3f})\n"
        f"peak RSS: trl {result['trl_peak_rss_mb']:.0f} MiB, hf_kd {result['hf_kd_peak_rss_mb']:.0f} MiB, "
        f"ratio {result['peak_memory_ratio']:.3f} (target <= 1.05); training-phase increase ratio "
        f"{result['train_peak_increase_ratio']:.3f}\nwritten to {path}"
    )
    return result


def headline(result: dict) -> list[dict]:
    """Step time and peak RSS vs trl.DistillationTrainer (targets: both ratios <= 1.05)."""
    r = result
    return [
        row("trainer", "median step CPU time / threads, hf_kd (selectivity 2) vs trl", r["hf_kd_step_s"],
            r["trl_step_s"], r["step_time_ratio"], "ratio <= 1.05", r["step_time_ratio"] <= 1.05, "s"),
        row("trainer", "peak RSS of the training process, hf_kd vs trl", r["hf_kd_peak_rss_mb"], r["trl_peak_rss_mb"],
            r["peak_memory_ratio"], "ratio <= 1.05", r["peak_memory_ratio"] <= 1.05, "MiB"),
    ]  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run of 7 steps per trainer (a few minutes)")
    parser.add_argument("--model-dir", default=None, help="default: hf_kd.offline.smollm2_135m_instruct()")
    cli = parser.parse_args()
    run(quick=cli.quick, model_dir=cli.model_dir)
