"""Sequence scoring throughput: hf_kd's CausalLMAdapter vs the `evaluate` perplexity approach.

Both score the same sequences (sum of token log-probs, first token unscored) with the same 2-layer Llama at
vocab 49,152 (hidden 576, SmolLM2's width):
- baseline, as evaluate's `perplexity` metric does it: pad every sequence to the longest, run the full model in
  batches of 16, full `(B, T, V)` float32 logits, cross-entropy masked by the attention mask;
- ours: `CausalLMAdapter.log_likelihood` (length-sorted batches under a token budget, output head on scored
  positions only, in chunks).
Prints tokens/s of each, their ratio, the largest absolute difference of the per-sequence totals and the peak
memory of each (CUDA: max allocated; CPU: peak resident set above the level before the run, polled by
benchmarks/memory.py with glibc's mmap threshold fixed), and writes JSON to
benchmarks/results/bench_scoring.json.

Usage: python benchmarks/bench_scoring.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
import torch.nn.functional as F
from memory import DevicePeakMemory, fix_mmap_threshold  # benchmarks/ is on sys.path (script or run_all.py)
from report import row
from transformers import LlamaConfig, LlamaForCausalLM

from hf_kd.metrics.lm_adapter import score_token_sequences

VOCAB = 49_152
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_scoring.json")


def make_model(device: torch.device) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=2,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).to(device).eval()


def make_sequences(n: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(32, 513, (n,), generator=gen)
    return [torch.randint(1, VOCAB, (int(n_tok),), generator=gen).tolist() for n_tok in lengths]


@torch.no_grad()
def evaluate_perplexity_style(model, sequences, batch_size: int = 16) -> torch.Tensor:
    """evaluate's `perplexity` approach: pad all to the longest, full logits, masked cross-entropy per sequence."""
    device = next(model.parameters()).device
    width = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sequences):
        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    totals = []
    for b in range(0, len(sequences), batch_size):
        x, m = ids[b : b + batch_size].to(device), mask[b : b + batch_size].to(device)
        logits = model(input_ids=x, attention_mask=m).logits.float()
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none")
        totals.append(-(nll.double() * m[:, 1:]).sum(1).cpu())  # float64 sum, as ours: compare the logits only
    return torch.cat(totals)


def _timed(fn, device):
    """Output, seconds and peak memory. On CPU the seconds are this process's CPU time divided by its threads, so
    other jobs sharing the machine slow both methods less unevenly than wall-clock time would."""
    with DevicePeakMemory(device) as mem:
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    seconds = wall if device.type == "cuda" else cpu / torch.get_num_threads()
    return out, seconds, wall, mem.peak


def run(quick: bool = False, device: str | None = None) -> dict:
    """Run the benchmark and return its figures (also written to benchmarks/results/bench_scoring.json)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    fix_mmap_threshold()  # so RSS tracks live tensors (see benchmarks/memory.py)
    model = make_model(dev)
    sequences = make_sequences(64 if quick else 256)
    tokens = sum(len(s) - 1 for s in sequences)
    warm = make_sequences(4, seed=1)
    evaluate_perplexity_style(model, warm)
    score_token_sequences(model, warm, [1] * 4)

    (ours, units), ours_s, ours_wall, ours_mem = _timed(
        lambda: score_token_sequences(model, sequences, [1] * len(sequences)), dev
    )
    base, base_s, base_wall, base_mem = _timed(lambda: evaluate_perplexity_style(model, sequences), dev)
    result = {
        "benchmark": "bench_scoring",
        "quick": quick,
        "device": str(dev),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}",
        "num_sequences": len(sequences),
        "scored_tokens": tokens,
        "padded_tokens_baseline": len(sequences) * max(len(s) for s in sequences),
        "timing": "wall clock" if dev.type == "cuda" else "process CPU time / threads",
        "ours_seconds": ours_s,
        "baseline_seconds": base_s,
        "ours_wall_seconds": ours_wall,
        "baseline_wall_seconds": base_wall,
        "ours_tokens_per_s": tokens / ours_s,
        "baseline_tokens_per_s": tokens / base_s,
        "speedup": base_s / ours_s,
        "max_abs_diff": float((ours - base).abs().max()),
        "max_abs_diff_per_token": float(((ours - base) / units).abs().max()),
        "max_abs_total": float(base.abs().max()),
        "ours_peak_memory_mb": ours_mem / 2**20,
        "baseline_peak_memory_mb": base_mem / 2**20,
    }
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    name = RESULTS.replace(".json", "_quick.json") if quick else RESULTS
    with open(name, "w") as f:
        json.dump(result, f, indent=2)
    return result


def headline(result: dict) -> list[dict]:
    """Throughput (target >= 1.5x), equal values (per token <= 1e-4) and lower peak memory, vs evaluate's approach."""
    r = result
    mem_ratio = r["ours_peak_memory_mb"] / r["baseline_peak_memory_mb"]
    return [
        row(
            "scoring",
            "tokens/s, CausalLMAdapter vs evaluate perplexity",
            r["ours_tokens_per_s"],
            r["baseline_tokens_per_s"],
            r["speedup"],
            "ratio >= 1.5",
            r["speedup"] >= 1.5,
            "tok/s",
        ),
        row(
            "scoring",
            "max abs difference of log-likelihood per token",
            r["max_abs_diff_per_token"],
            None,
            None,
            "<= 1e-4",
            r["max_abs_diff_per_token"] <= 1e-4,
            "nats",
        ),
        row(
            "scoring",
            "peak memory above start",
            r["ours_peak_memory_mb"],
            r["baseline_peak_memory_mb"],
            mem_ratio,
            "ratio < 1",
            mem_ratio < 1,
            "MB",
        ),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 sequences instead of 256")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args()
    r = run(quick=args.quick, device=args.device)
    print(f"{r['num_sequences']} sequences, {r['scored_tokens']} scored tokens on {r['device']} ({r['machine']})")
    for name, key in (("evaluate-perplexity style", "baseline"), ("hf_kd CausalLMAdapter", "ours")):
        print(
            f"{name:26s} {r[key + '_tokens_per_s']:9.0f} tok/s ({r['timing']}; wall {r[key + '_wall_seconds']:.1f} s)"
            f"  peak {r[key + '_peak_memory_mb']:7.0f} MB"
        )
    print(
        f"speedup {r['speedup']:.2f}x (target >= 1.5x); max |difference| of sequence totals {r['max_abs_diff']:.2e} "
        f"(totals up to {r['max_abs_total']:.0f} nats), per token {r['max_abs_diff_per_token']:.2e} (target <= 1e-4)"
    )


if __name__ == "__main__":
    main()
