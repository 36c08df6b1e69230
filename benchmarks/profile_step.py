"""Where an on-policy distillation step spends its time, and where one decode step does (the issue 18 profile).

Runs TRL's and hf_kd's trainers (selectivity 2, the bench_trainer.py setup: SmolLM2-135M-Instruct teacher, 6-layer
student, batch 4, 32 completion tokens) with timers around their phases, then profiles single decode steps of the
student and the teacher (transformers' forward with the fast kernels off and on, hf_kd's FusedStep with and without
packed weights, at 4 and 64 rows) and times one linear layer of each shape on each kernel. Run it alone.

    python benchmarks/profile_step.py          # ~2 min on 2 CPU cores; writes benchmarks/results/profile_step.json
"""

from __future__ import annotations

import collections
import contextlib
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


def step_phases(model_dir: str, kind: str = "hf_kd", steps: int = 4) -> dict:
    """Median seconds per step of: sampling, forward + loss, backward, the whole step (`kind`: hf_kd or trl)."""
    acc = collections.defaultdict(list)
    trainer = _trainer(kind, "student", steps, model_dir)
    _timed(trainer, "_generate_single_turn", "sampling", acc)
    _timed(trainer, "compute_loss", "forward_and_loss", acc)
    _timed(trainer.accelerator, "backward", "backward", acc)
    _timed(trainer, "training_step", "step", acc)
    trainer.train()
    out = {k: statistics.median(v[1:]) for k, v in acc.items()}  # the first step is the warm-up
    out["rest"] = out["step"] - out["sampling"] - out["forward_and_loss"] - out["backward"]
    return out


def fused_decode_ms(model, rows: int = BATCH, prompt: int = 37, steps: int = 16, packed: bool = False) -> float:
    """ms per decode step through `hf_kd.sampling.FusedStep` (optionally on packed weights) after a prefill."""
    from hf_kd.fast_decode import fast_decode, packed_weights
    from hf_kd.sampling.fused_step import FusedStep

    ids = torch.randint(0, 1000, (rows, prompt))
    with torch.no_grad(), fast_decode(model), packed_weights(model) if packed else contextlib.nullcontext():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        step = FusedStep(model, out.past_key_values, torch.ones_like(ids), steps)
        token, position = out.logits[:, -1].argmax(-1), torch.full((rows,), prompt)
        start = time.perf_counter()
        for t in range(steps):
            token = step(token, position + t).argmax(-1)
        return (time.perf_counter() - start) / steps * 1e3


def kernel_table(repeats: int = 10) -> dict:
    """Microseconds of one linear layer of SmolLM2-135M's shapes at 1, 4 and 64 rows: `F.linear`, ``W @ x^T`` and
    oneDNN on a packed weight; each call reads another copy of the weight (out of cache, as in decoding)."""
    import torch.nn.functional as F

    from hf_kd.fast_decode import skinny_linear

    kernels = {
        "F.linear": lambda x, w, p: F.linear(x, w),
        "W @ x^T": lambda x, w, p: skinny_linear(x, w),
        "oneDNN packed": lambda x, w, p: torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], ""),
    }
    table = {}
    for n, k in ((576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)):
        weights = [torch.randn(n, k) for _ in range(3 if n > 10000 else 30)]
        pairs = [(w, torch.ops.mkldnn._reorder_linear_weight(w, None)) for w in weights]
        for rows in (1, 4, 64):
            x, row = torch.randn(rows, k), {}
            for name, fn in kernels.items():
                for w, p in pairs:
                    fn(x, w, p)
                start = time.perf_counter()
                for _ in range(repeats):
                    for w, p in pairs:
                        fn(x, w, p)
                row[name] = (time.perf_counter() - start) / (repeats * len(pairs)) * 1e6
            table[f"{n}x{k}, {rows} rows"] = row
    return table


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
    result = {"load_average_before": os.getloadavg()[0], "phases_s": {}, "decode": {}, "decode_ms": {}}
    result["phases_s"]["trl"] = step_phases(model_dir, "trl")
    for mode in ("off", "on"):  # off: TRL's generate on eager kernels; on: hf_kd.sampling with its fused step
        os.environ["HF_KD_FAST_DECODE"] = mode
        result["phases_s"][f"hf_kd_fast_decode_{mode}"] = step_phases(model_dir)
    student, teacher, _ = _load(model_dir)
    for name, model in (("student", student), ("teacher", teacher)):
        model.eval()
        for mode in ("off", "on"):
            os.environ["HF_KD_FAST_DECODE"] = mode
            with fast_decode(model):
                result["decode"][f"{name}_fast_decode_{mode}"] = decode_profile(model)
        for rows in (BATCH, 64):
            result["decode_ms"][f"{name}, {rows} rows"] = {
                "transformers forward, eager": _forward_ms(model, rows, "off"),
                "transformers forward, W @ x^T": _forward_ms(model, rows, "on"),
                "FusedStep": fused_decode_ms(model, rows),
                "FusedStep, packed weights": fused_decode_ms(model, rows, packed=True),
            }
    os.environ.pop("HF_KD_FAST_DECODE")
    result["head_matmul_ms_4_rows"] = head_matmul(teacher)
    result["kernels_us"] = kernel_table()
    result["load_average_after"] = os.getloadavg()[0]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


def _forward_ms(model, rows: int, mode: str) -> float:
    from hf_kd.fast_decode import fast_decode

    os.environ["HF_KD_FAST_DECODE"] = mode
    with fast_decode(model):
        return decode_profile(model, rows=rows)["ms_per_step"]


if __name__ == "__main__":
    main()
