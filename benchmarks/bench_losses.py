"""Dense vs chunked distillation loss: time and peak extra memory, forward + backward, float32 on CPU.

    python benchmarks/bench_losses.py            # B*T = 4096 tokens, vocab 49,152, hidden 576 (SmolLM2-135M)
    python benchmarks/bench_losses.py --quick    # 1024 tokens

Target (issue 2): the chunked path's peak extra memory is under 25 % of the dense path's.
"""

import argparse
import gc
import json
import time
from pathlib import Path

import torch
from memory import PeakMemory, fix_mmap_threshold  # benchmarks/ is on sys.path (script or run_all.py)
from report import row

from hf_kd.losses import chunked_distillation_loss, distillation_loss

VOCAB, HIDDEN = 49_152, 576


def _inputs(tokens: int):
    gen = torch.Generator().manual_seed(0)
    hs = torch.randn(tokens, HIDDEN, generator=gen).requires_grad_()
    ws = (torch.randn(VOCAB, HIDDEN, generator=gen) * 0.02).requires_grad_()
    ht = torch.randn(tokens, HIDDEN, generator=gen)
    wt = torch.randn(VOCAB, HIDDEN, generator=gen) * 0.02
    return hs, ws, ht, wt


def _measure(fn, inputs) -> dict:
    hs, ws, _, _ = inputs
    hs.grad = ws.grad = None
    gc.collect()
    with PeakMemory() as mem:
        start = time.perf_counter()
        loss = fn(*inputs)
        loss.backward()
        seconds = time.perf_counter() - start
    return {"loss": loss.item(), "seconds": seconds, "peak_extra_mb": mem.peak_extra / 2**20}


def run(quick: bool = False, loss_type: str = "forward_kl", selectivity: float = 2.0) -> dict:
    """Run dense then chunked on the same inputs; return figures and ratios (chunked / dense)."""
    fix_mmap_threshold()
    torch.manual_seed(0)
    tokens = 1024 if quick else 4096
    inputs = _inputs(tokens)
    kw = dict(loss_type=loss_type, selectivity=selectivity)

    def dense(hs, ws, ht, wt):
        return distillation_loss(hs @ ws.T, ht @ wt.T, **kw)

    def chunked(hs, ws, ht, wt):
        return chunked_distillation_loss(hs, ws, ht, wt, **kw)

    # Chunked first: the allocator keeps freed pages, which would hide the later run's growth.
    result_chunked = _measure(chunked, inputs)
    result_dense = _measure(dense, inputs)
    return {
        "benchmark": "losses: dense vs chunked (fwd+bwd)",
        "setting": f"{tokens} tokens x vocab {VOCAB} x hidden {HIDDEN}, float32, {loss_type}, beta {selectivity}",
        "threads": torch.get_num_threads(),
        "allocator": "glibc, M_MMAP_THRESHOLD fixed at 64 KiB (see benchmarks/memory.py)",
        "dense": result_dense,
        "chunked": result_chunked,
        "abs_loss_diff": abs(result_dense["loss"] - result_chunked["loss"]),
        "memory_ratio": result_chunked["peak_extra_mb"] / result_dense["peak_extra_mb"],
        "time_ratio": result_chunked["seconds"] / result_dense["seconds"],
        "target": "memory_ratio < 0.25",
    }


def headline(result: dict) -> list[dict]:
    """Peak extra memory (target: chunked < 25 % of dense) and time, chunked vs dense."""
    d, c = result["dense"], result["chunked"]
    return [
        row("losses", "peak extra memory, chunked vs dense (fwd+bwd)", c["peak_extra_mb"], d["peak_extra_mb"],
            result["memory_ratio"], "ratio < 0.25", result["memory_ratio"] < 0.25, "MB"),
        row("losses", "time, chunked vs dense (fwd+bwd)", c["seconds"], d["seconds"], result["time_ratio"], "none",
            None, "s"),
    ]  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=None, help="JSON file (default benchmarks/results/losses.json)")
    args = parser.parse_args()
    result = run(quick=args.quick)
    for name in ("dense", "chunked"):
        r = result[name]
        print(f"{name:8s} {r['seconds']:7.2f} s   peak extra {r['peak_extra_mb']:8.1f} MB   loss {r['loss']:.6f}")
    print(f"chunked/dense: time {result['time_ratio']:.2f}x, memory {result['memory_ratio']:.3f}x "
          f"(target < 0.25), |loss diff| {result['abs_loss_diff']:.2e}")  # fmt: skip
    out = Path(args.output or Path(__file__).parent / "results" / "losses.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
