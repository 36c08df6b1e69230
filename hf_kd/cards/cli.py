"""`hf-kd card`: render the model cards of a results JSON (one student's, or a recipe's sweep)."""

from __future__ import annotations

import argparse
from pathlib import Path

from huggingface_hub import ModelCard

from .render import render_model_card
from .schema import load_results_file

__all__ = ["add_card_arguments", "card_from_args"]


def add_card_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `hf-kd card`: render model cards from a results JSON."""
    parser.add_argument(
        "results",
        help="Results JSON: one student's (<run>/results.json) or a recipe's sweep (<output_dir>/results.json).",
    )
    parser.add_argument(
        "--output",
        "-o",
        default=None,
        help="Write the card here (e.g. out/README.md); for a sweep, a folder that gets <run>/README.md per "
        "student (default: print to stdout).",
    )
    parser.add_argument(
        "--repo-id",
        "--repo_id",
        dest="repo_id",
        default=None,
        help="Hub repository of the student (title and usage snippet); for a sweep, <repo-id>-<run> "
        "(default: none, the snippet says path/to/this/model).",
    )
    parser.add_argument("--run", dest="run_name", default=None, help="Of a sweep, only this run (default: every run).")
    parser.add_argument("--template", default=None, help="A Jinja card template (default: hf_kd's model_card.md).")
    parser.add_argument("--tag", action="append", default=[], help="An extra tag (repeatable; default: none).")
    return parser


def card_from_args(args: argparse.Namespace) -> dict[str | None, ModelCard]:
    """Run `hf-kd card`: render every student of the results file, then write to `--output` or print."""
    students = load_results_file(args.results)
    sweep = None not in students
    if args.run_name is not None and not sweep:
        raise ValueError(f"--run selects a run of a sweep; {args.results} holds one student's results.")
    if args.run_name is not None:
        if args.run_name not in students:
            raise ValueError(f"--run {args.run_name!r} is not in {args.results}; its runs are {sorted(students)}.")
        students = {args.run_name: students[args.run_name]}
    cards = {}
    for name, results in students.items():
        repo_id = f"{args.repo_id}-{name}" if args.repo_id and sweep else args.repo_id
        cards[name] = card = render_model_card(results, repo_id=repo_id, template=args.template, tags=args.tag)
        if args.output:
            path = Path(args.output) / name / "README.md" if sweep else Path(args.output)
            path.parent.mkdir(parents=True, exist_ok=True)
            card.save(path)
            print(f"model card: {path}")
        else:
            print(str(card))
    return cards
