"""Dense vs chunked distillation loss: time and peak extra memory, forward + backward, float32 on CPU.

    python benchmarks/bench_losses.py            # B*T = 4096 tokens, vocab 49,152, hidden 576 (SmolLM2-135M)
    python benchmarks/bench_losses.py --quick    # 1024 tokens

Target (issue 2): the chunked path's peak extra memory is under 25 % of the dense path's.
Target (issue 13): `target_entropy` per batch and per token, solved through the trainer's chunked path
(`hf_kd.target_entropy.solve_head_selectivity`) and then trained with the chunked loss, peaks within 1.5x of the
chunked loss at a fixed selectivity, and its beta equals a float64 brute-force bisection on the dense float64
logits within 1e-4.
"""

import argparse
import gc
import json
import math
import time
from pathlib import Path

import torch
from memory import PeakMemory, fix_mmap_threshold  # benchmarks/ is on sys.path (script or run_all.py)
from report import row

from hf_kd.losses import chunked_distillation_loss, distillation_loss
from hf_kd.target_entropy import solve_head_selectivity

VOCAB, HIDDEN = 49_152, 576
TARGET_ENTROPY = 10.3  # nats; beta about 2 on these logits (log V = 10.80 is beta = 0)


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


def _reference_betas(ht, wt, target: float, iters: int = 40) -> tuple[float, torch.Tensor]:
    """Float64 brute force: dense float64 logits, bisection on log(beta) over [1e-3, 1e3] with the entropy from
    ``log_softmax``; one beta for the mean entropy, and one per token. Independent of hf_kd's solver."""
    z = ht.double() @ wt.double().T  # (N, V) float64

    def entropies(beta):  # beta () or (N,) -> (N,); 512 rows at a time to cap the float64 temporaries
        out = torch.empty(z.shape[0], dtype=torch.float64)
        for i in range(0, z.shape[0], 512):
            b = beta if beta.dim() == 0 else beta[i : i + 512, None]
            log_p = torch.log_softmax(z[i : i + 512] * b, dim=-1)
            out[i : i + 512] = -(log_p.exp() * log_p).sum(-1)
        return out

    lo, hi = torch.tensor(math.log(1e-3), dtype=torch.float64), torch.tensor(math.log(1e3), dtype=torch.float64)
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if entropies(mid.exp()).mean() > target else (lo, mid)
    batch = float(((lo + hi) / 2).exp())
    lo, hi = lo.new_full((z.shape[0],), math.log(1e-3)), lo.new_full((z.shape[0],), math.log(1e3))
    for _ in range(iters):
        mid = (lo + hi) / 2
        high = entropies(mid.exp()) > target
        lo, hi = torch.where(high, mid, lo), torch.where(high, hi, mid)
    return batch, ((lo + hi) / 2).exp()


def run_target_entropy(inputs, baseline_mb: float, loss_type: str = "forward_kl") -> dict:
    """Per-batch and per-token `target_entropy` (solve + chunked loss, fwd+bwd): peak extra memory against the
    fixed-selectivity chunked loss (`baseline_mb`), and the solved betas against `_reference_betas`."""
    solved, out = {}, {}
    for mode in ("per_batch", "per_token"):

        def with_target(hs, ws, ht, wt, mode=mode):
            beta = solve_head_selectivity(ht, wt, None, TARGET_ENTROPY, per_token=mode == "per_token")
            solved[mode] = beta
            return chunked_distillation_loss(hs, ws, ht, wt, loss_type=loss_type, selectivity=beta)

        out[mode] = _measure(with_target, inputs)
        out[mode]["memory_ratio_vs_fixed_chunked"] = out[mode]["peak_extra_mb"] / baseline_mb
    start = time.perf_counter()
    ref_batch, ref_tokens = _reference_betas(inputs[2], inputs[3], TARGET_ENTROPY)
    out["reference_seconds"] = time.perf_counter() - start
    out["per_batch"].update(beta=solved["per_batch"], reference_beta=ref_batch)
    out["per_batch"]["beta_abs_diff"] = abs(solved["per_batch"] - ref_batch)
    diff = (solved["per_token"].double() - ref_tokens).abs()
    out["per_token"].update(beta_mean=solved["per_token"].double().mean().item(), beta_max_abs_diff=diff.max().item())
    out["per_token"]["beta_mean_reference"] = ref_tokens.mean().item()
    out["target_entropy"] = TARGET_ENTROPY
    out["target"] = "memory_ratio_vs_fixed_chunked <= 1.5 and beta diff <= 1e-4"
    return out


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
    target_entropy = run_target_entropy(inputs, result_chunked["peak_extra_mb"], loss_type)
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
        "target_entropy": target_entropy,
    }


def headline(result: dict) -> list[dict]:
    """Peak extra memory (target: chunked < 25 % of dense) and time, chunked vs dense."""
    d, c = result["dense"], result["chunked"]
    return [
        row(
            "losses",
            "peak extra memory, chunked vs dense (fwd+bwd)",
            c["peak_extra_mb"],
            d["peak_extra_mb"],
            result["memory_ratio"],
            "ratio < 0.25",
            result["memory_ratio"] < 0.25,
            "MB",
        ),
        row(
            "losses",
            "time, chunked vs dense (fwd+bwd)",
            c["seconds"],
            d["seconds"],
            result["time_ratio"],
            "none",
            None,
            "s",
        ),
    ] + _target_entropy_rows(result["target_entropy"], c)


def _target_entropy_rows(te: dict, c: dict) -> list[dict]:
    rows = []
    for mode in ("per_batch", "per_token"):
        r = te[mode]
        ratio = r["memory_ratio_vs_fixed_chunked"]
        figure = f"peak extra memory, target_entropy {mode} vs fixed selectivity (chunked)"
        rows.append(
            row("losses", figure, r["peak_extra_mb"], c["peak_extra_mb"], ratio, "ratio <= 1.5", ratio <= 1.5, "MB")
        )
    diff = max(te["per_batch"]["beta_abs_diff"], te["per_token"]["beta_max_abs_diff"])
    rows.append(
        row(
            "losses",
            "solved beta vs float64 dense bisection (max abs diff)",
            diff,
            None,
            None,
            "<= 1e-4",
            diff <= 1e-4,
        )
    )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=None, help="JSON file (default benchmarks/results/losses.json)")
    args = parser.parse_args()
    result = run(quick=args.quick)
    for name in ("dense", "chunked"):
        r = result[name]
        print(f"{name:8s} {r['seconds']:7.2f} s   peak extra {r['peak_extra_mb']:8.1f} MB   loss {r['loss']:.6f}")
    print(
        f"chunked/dense: time {result['time_ratio']:.2f}x, memory {result['memory_ratio']:.3f}x "
        f"(target < 0.25), |loss diff| {result['abs_loss_diff']:.2e}"
    )
    te = result["target_entropy"]
    for mode in ("per_batch", "per_token"):
        r = te[mode]
        print(
            f"target_entropy {TARGET_ENTROPY} {mode:9s} {r['seconds']:7.2f} s   peak extra "
            f"{r['peak_extra_mb']:8.1f} MB = {r['memory_ratio_vs_fixed_chunked']:.3f}x the fixed-selectivity "
            "chunked loss (target <= 1.5)"
        )
    b, t = te["per_batch"], te["per_token"]
    print(
        f"beta per batch {b['beta']:.8f} vs float64 dense {b['reference_beta']:.8f} "
        f"(|diff| {b['beta_abs_diff']:.2e}); per token max |diff| {t['beta_max_abs_diff']:.2e} "
        "(target <= 1e-4)"
    )
    out = Path(args.output or Path(__file__).parent / "results" / "losses.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
