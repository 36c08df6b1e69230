"""``python -m hf_kd.generation ARGS``: ``hf-kd generate`` as a module (what ``torchrun -m hf_kd.generation`` starts).

Options, ``--config``, help and the one-line errors (exit status 2) are those of ``hf-kd generate``
(`hf_kd.cli.run_command`).
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Run ``hf-kd generate`` with `argv` (default: this process's arguments)."""
    from ..cli import run_command

    run_command("generate", argv, prog="python -m hf_kd.generation")
