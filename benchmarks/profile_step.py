"""Where an on-policy distillation step spends its time, and where one decode step does (the issue 18 profile).

Runs hf_kd's trainer (selectivity 2, the bench_trainer.py setup: SmolLM2-135M-Instruct teacher, 6-layer student,
batch 4, 32 completion tokens) with timers around its phases, then profiles single decode steps of the student and
the teacher with torch.profiler, with the fast decode path off and on (hf_kd/fast_decode.py), and times the head's
matmul both ways. Run it alone on the machine.

    python benchmarks/profile_step.py          # ~2 min on 2 CPU cores; writes benchmarks/results/profile_step.json
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import time
from pathlib import Path

import torch
from bench_trainer import BATCH, _load, _trainer  # benchmarks/ is on sys.path (script or run_all.py)

RESULTS = Path(__file__).parent / "results" / "profile_step.json"


def _timed(obj, name: str, label: str, acc: dict) -> None:
    inner = getattr(obj, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = inner(*args, **kwargs)
        acc[label].append(time.perf_counter() - start)
        return out

    setattr(obj, name, wrapper)


def step_phases(model_dir: str, steps: int = 4) -> dict:
    """Median seconds per step of: sampling, the teacher's forward, forward + loss, the whole step."""
    acc = collections.defaultdict(list)
    trainer = _trainer("hf_kd", "student", steps, model_dir)
    _timed(trainer, "_generate_single_turn", "sampling", acc)
    _timed(trainer, "compute_loss", "forward_and_loss", acc)
    _timed(trainer, "training_step", "step", acc)
    _timed(trainer.teacher_model, "forward", "teacher_forward", acc)
    trainer.train()
    out = {k: statistics.median(v[1:]) for k, v in acc.items()}  # the first step is the warm-up
    out["backward_and_rest"] = out["step"] - out["sampling"] - out["forward_and_loss"]
    return out


def decode_profile(model, rows: int = BATCH, prompt: int = 37, steps: int = 8) -> dict:
    """ms per decode step and the top ops by self CPU time, for `steps` steps after a prefill of `prompt` tokens."""
    from torch.profiler import ProfilerActivity, profile

    ids = torch.randint(0, 1000, (rows, prompt))
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                out = model(input_ids=token, past_key_values=cache, use_cache=True)
                token = out.logits[:, -1:].argmax(-1)
            ms = (time.perf_counter() - start) / steps * 1e3
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    return {"ms_per_step": ms, "top_ops": {e.key: round(e.self_cpu_time_total / total, 3) for e in ops[:6]}}


def head_matmul(model, rows: int = BATCH, repeats: int = 20) -> dict:
    """ms of the tied head's matmul for `rows` rows: F.linear vs W @ x^T."""
    from hf_kd.fast_decode import skinny_linear

    w = model.get_output_embeddings().weight.detach()
    x = torch.randn(rows, w.shape[1])
    out = {}
    for name, fn in {"F.linear": torch.nn.functional.linear, "W @ x^T": skinny_linear}.items():
        fn(x, w)
        start = time.perf_counter()
        for _ in range(repeats):
            fn(x, w)
        out[name] = (time.perf_counter() - start) / repeats * 1e3
    return out


def main() -> dict:
    from hf_kd.fast_decode import fast_decode
    from hf_kd.offline import smollm2_135m_instruct

    model_dir = str(smollm2_135m_instruct())
    result = {"load_average_before": os.getloadavg()[0], "phases_s": {}, "decode": {}}
    for mode in ("off", "on"):
        os.environ["HF_KD_FAST_DECODE"] = mode
        result["phases_s"][f"fast_decode_{mode}"] = step_phases(model_dir)
    student, teacher, _ = _load(model_dir)
    for name, model in (("student", student), ("teacher", teacher)):
        model.eval()
        for mode in ("off", "on"):
            os.environ["HF_KD_FAST_DECODE"] = mode
            with fast_decode(model):
                result["decode"][f"{name}_fast_decode_{mode}"] = decode_profile(model)
    result["head_matmul_ms_4_rows"] = head_matmul(teacher)
    result["load_average_after"] = os.getloadavg()[0]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
