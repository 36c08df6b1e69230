"""Computed (not measured) FLOPs per scored completion token of one distillation step, per completion source.

Prints the worked table of docs/scaling.md for SmolLM2 135M / 360M / 1.7B:

    python benchmarks/scaling_flops.py [--prompt 64] [--completion 256]

Counting rules (multiply-add = 2 FLOPs; norms, activations, softmax and the optimizer are left out, they are O(H) per
token): a forward pass costs 2N per token for the N non-embedding parameters, plus causal attention 2*L*H*T^2 per
sequence of T tokens (QK^T and AV, each 2*L*H per pair of positions, T^2/2 pairs), plus the output head 2*H*V per
position whose logits are computed; forward+backward costs 3x the forward. hf_kd computes logits only on scored
(completion) positions, in chunks; its chunked loss forms the logit gradients in the forward, so the student head
costs 6*H*V per scored token. Logging the token entropies recomputes the student's and teacher's logits (2*H*V each).
Generation with a KV cache costs the same per new token as a forward (prompt prefill without the head except for the
last position), but is bound by memory bandwidth, not FLOPs, at small batch: the table is a lower bound on its time.
"""

from __future__ import annotations

import argparse

VOCAB = 49_152
# From the checkpoints' config.json (135M: /work/smollm2/config.json); all tie the output head to the embeddings.
SMOLLM2 = {
    "135M": {"hidden": 576, "layers": 30, "intermediate": 1536, "heads": 9, "kv_heads": 3},
    "360M": {"hidden": 960, "layers": 32, "intermediate": 2560, "heads": 15, "kv_heads": 5},
    "1.7B": {"hidden": 2048, "layers": 24, "intermediate": 8192, "heads": 32, "kv_heads": 32},
}


def non_embedding_params(hidden: int, layers: int, intermediate: int, heads: int, kv_heads: int) -> int:
    """Llama blocks: q,o (H*H each), k,v (H*kv_heads*head_dim each), gated MLP (3*H*I), 2 norms; + final norm."""
    kv = kv_heads * (hidden // heads)
    return layers * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * intermediate + 2 * hidden) + hidden


def forward_flops(cfg: dict, tokens: int, head_positions: int) -> float:
    """Forward FLOPs of one sequence: 2*N*T + 2*L*H*T^2 (causal attention) + 2*H*V*head_positions."""
    n = non_embedding_params(**cfg)
    return 2 * n * tokens + 2 * cfg["layers"] * cfg["hidden"] * tokens**2 + 2 * cfg["hidden"] * VOCAB * head_positions


def step_flops(student: dict, teacher: dict, source: str, loss: str, prompt: int, completion: int) -> dict:
    """FLOPs of one sequence's step, split by phase.

    Args:
        student, teacher (`dict`): configs as in `SMOLLM2`.
        source (`str`): "student" (on-policy), "teacher" (online sequence-level KD) or "dataset".
        loss (`str`): "nll" (no teacher forward), "kl" (any KL-family loss, live teacher) or "topk" (dataset storing
            the teacher's top-k log-probs: no teacher forward).
        prompt, completion (`int`): prompt and completion lengths (completion tokens are the scored ones).

    Returns:
        `dict`: FLOPs of "generation", "teacher_forward", "student_fwd_bwd" and "metrics" for one sequence.
    """
    t = prompt + completion
    # Student: forward+backward of the body (3x forward) and 6*H*V per scored token for the head (chunked loss).
    body = forward_flops(student, t, 0)
    out = {"student_fwd_bwd": 3 * body + 6 * student["hidden"] * VOCAB * completion}
    generator = {"student": student, "teacher": teacher}.get(source)
    # KV-cache generation: same FLOPs as one forward over prompt+completion, head on the completion positions.
    out["generation"] = forward_flops(generator, t, completion) if generator else 0.0
    live_teacher = loss == "kl"
    out["teacher_forward"] = forward_flops(teacher, t, completion) if live_teacher else 0.0
    heads = student["hidden"] + (teacher["hidden"] if live_teacher else 0)
    out["metrics"] = 2 * heads * VOCAB * completion  # entropy logging recomputes the logits
    return out


def table(prompt: int, completion: int, student_name: str = "135M") -> str:
    """Markdown table: GFLOPs per scored token for each teacher and completion source."""
    cases = [
        ("student", "kl", "on-policy (student), KL"),
        ("teacher", "nll", "teacher samples, nll"),
        ("teacher", "kl", "teacher samples, KL"),
        ("dataset", "kl", "dataset, KL with live teacher"),
        ("dataset", "topk", "dataset, stored top-k or nll"),
    ]
    student = SMOLLM2[student_name]
    lines = [
        f"| teacher | source, loss | generation | teacher fwd | student fwd+bwd | metrics | total GFLOPs/token "
        f"| vs {student_name} fwd+bwd |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, teacher in SMOLLM2.items():
        for source, loss, label in cases:
            f = step_flops(student, teacher, source, loss, prompt, completion)
            g = {k: v / completion / 1e9 for k, v in f.items()}
            total = sum(g.values())
            cells = [g[k] for k in ("generation", "teacher_forward", "student_fwd_bwd", "metrics")] + [total]
            ratio = total / g["student_fwd_bwd"]
            lines.append(f"| {name} | {label} | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {ratio:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--completion", type=int, default=256)
    parser.add_argument("--student", default="135M", choices=sorted(SMOLLM2))
    args = parser.parse_args()
    for name, cfg in SMOLLM2.items():
        n = non_embedding_params(**cfg)
        print(
            f"SmolLM2-{name}: N = {n / 1e6:.1f}M non-embedding + {VOCAB * cfg['hidden'] / 1e6:.1f}M embedding (tied); "
            f"2N = {2 * n / 1e9:.3f} GFLOPs/token, head 2HV = {2 * cfg['hidden'] * VOCAB / 1e9:.3f} GFLOPs/token"
        )
    print(
        f"\nstudent SmolLM2-{args.student}, prompt {args.prompt} + completion {args.completion} tokens; "
        "GFLOPs per scored (completion) token:\n"
    )
    print(table(args.prompt, args.completion, args.student))


if __name__ == "__main__":
    main()
