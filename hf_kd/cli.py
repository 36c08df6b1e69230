"""The `hf-kd` command: `simulate`, `generate`, `evaluate` and `card`.

Each subcommand's options come from the module that does the work, so `hf-kd X --help` is always complete and the
recipes and the CLI share one implementation.

A user error (a `ValueError` or `OSError` raised by the checks of the API, or a bad option) is printed as one line,
``hf-kd <command>: error: <what and how to fix>``, with exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys

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
    parser.add_argument("--student", nargs="+", required=True, help="Student model id(s) or local path(s).")
    parser.add_argument("--reference", required=True, help="Reference model p* (id or path), e.g. the teacher.")
    parser.add_argument("--num-samples", type=positive_int, default=256, help="Samples drawn on each side.")
    parser.add_argument("--max-new-tokens", type=positive_int, default=64, help="Length of each sample.")
    parser.add_argument("--prompt", default=None, help="Condition samples and scores on this prompt (paper: 'The').")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unit", choices=("auto", "token", "byte"), default="auto", help="Per-token or per-byte.")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available).")
    parser.add_argument("--output", default=None, help="Write the results (JSON) here.")
    return parser


def evaluate_from_args(args: argparse.Namespace) -> list[dict]:
    """Load the models, score every student against the same reference samples, print the table."""
    import torch

    from .metrics import CausalLMAdapter, precision_recall
    from .offline import load_causal_lm
    from .reporting import format_table
    from .validation import check_model_path, check_output_file

    check_output_file(args.output, "--output")  # before the sampling and scoring, not after
    check_model_path(args.reference, "reference")
    for name in args.student:
        check_model_path(name, "student")
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


def build_parser() -> argparse.ArgumentParser:
    """The `hf-kd` parser with its four subcommands."""
    from .generation import add_generate_arguments, generate_from_args
    from .model_card import add_card_arguments, card_from_args
    from .simulation import add_simulation_arguments, run_from_args

    parser = _Parser(prog="hf-kd", description="Knowledge distillation of generative models.")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "simulate": (add_simulation_arguments, run_from_args, "The paper's Gaussian-mixture study."),
        "generate": (add_generate_arguments, generate_from_args, "Sample a teacher-sample dataset (resumable)."),
        "evaluate": (add_evaluate_arguments, evaluate_from_args, "Precision and recall of students vs a reference."),
        "card": (add_card_arguments, card_from_args, "Render a model card from a results JSON."),
    }
    for name, (add_arguments, run, help_text) in commands.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(sp)
        sp.add_argument("--debug", action="store_true", help="On an error, show the full traceback.")
        sp.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__  # one line, whatever the error's layout
        print(f"hf-kd {args.command}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    sys.exit(main())
