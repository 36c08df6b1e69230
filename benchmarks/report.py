"""The common shape of a benchmark's headline figures, the machine they ran on, and the markdown table of them.

Each bench_*.py exposes ``run(quick: bool = False, ...) -> dict`` and ``headline(result) -> list[dict]``; every row
of `headline` comes from `row`, so `benchmarks/run_all.py` can tabulate any benchmark the same way.
"""

from __future__ import annotations

import os
import platform


def row(
    benchmark: str,
    figure: str,
    ours: float | None,
    baseline: float | None,
    ratio: float | None,
    target: str,
    passed: bool | None,
    unit: str = "",
) -> dict:
    """One headline figure of a benchmark.

    Args:
        benchmark (`str`): the benchmark's name (``losses``, ``scoring``, ...).
        figure (`str`): what is measured, e.g. ``"peak extra memory, chunked vs dense"``.
        ours (`float`, *optional*): hf_kd's value.
        baseline (`float`, *optional*): the baseline's value, measured in the same run (None where there is none).
        ratio (`float`, *optional*): the ratio the target is stated on.
        target (`str`): the target from the issue, e.g. ``"ratio <= 1.05"``; ``"none"`` where the issue sets none.
        passed (`bool`, *optional*): whether the target is met; None where there is no target.
        unit (`str`): the unit of `ours` and `baseline`.

    Returns:
        `dict`: the row, JSON-ready.
    """
    return {
        "benchmark": benchmark,
        "figure": figure,
        "ours": ours,
        "baseline": baseline,
        "unit": unit,
        "ratio": ratio,
        "target": target,
        "passed": passed,
    }


def machine() -> dict:
    """CPU model (from /proc/cpuinfo), cores, torch version and threads, and the GPU where there is one."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-2):
        return f"{value:.2e}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def markdown(rows: list[dict], info: dict, command: str, wall_s: float) -> str:
    """The results table in markdown, with the machine and the command above it."""
    verdict = {True: "pass", False: "**FAIL**", None: "n/a"}
    lines = [
        f"Command: `{command}` (wall time {wall_s / 60:.1f} min)",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
        "| benchmark | figure | hf_kd | baseline | unit | ratio | target | result |",
        "| --- | --- | ---: | ---: | --- | ---: | --- | --- |",
    ]
    for r in rows:
        cells = [r["benchmark"], r["figure"], _fmt(r["ours"]), _fmt(r["baseline"]), r["unit"], _fmt(r["ratio"])]
        cells += [r["target"], verdict[r["passed"]]]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")  # a "|" would split a cell
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"


def readme_with_table(readme: str, table: str, report_path: str) -> str:
    """`readme` with the text between the benchmark markers replaced by `table` and a link to its report."""
    if README_START not in readme or README_END not in readme:
        raise ValueError(f"README.md has no {README_START} ... {README_END} block for the benchmark table.")
    head, rest = readme.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    block = f"{README_START}\n{table}\nFull figures: [{report_path}]({report_path}).\n{README_END}"
    return head + block + tail
