"""Run every benchmark in benchmarks/, each against its own baseline in the same run, and write one report.

    HF_KD_SMOLLM2_DIR=/work/smollm2 python benchmarks/run_all.py --quick   # < 15 min on 2 CPU cores
    python benchmarks/run_all.py --only trainer                              # one benchmark

Each benchmark runs in its own Python process (so peak-memory figures are its own, not left over from the one
before) via ``bench_<name>.run(quick)`` and ``bench_<name>.headline(result)``. The report goes to
benchmarks/results/<YYYY-MM-DD>.json and .md (``<YYYY-MM-DD>-<name>`` with --only): per headline figure hf_kd's
value, the baseline's, their ratio, the issue's target and pass/fail, and the machine. The table is also printed, and
a --quick run of every benchmark writes it into README.md between its benchmark markers.
A benchmark that crashes is reported as such and the others still run. The SmolLM2-135M-Instruct checkpoint comes
from `hf_kd.offline.smollm2_135m_instruct` (set $HF_KD_SMOLLM2_DIR to reuse a copy).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# name -> module; quick ones first so a late failure costs least
BENCHMARKS = {
    "gmm_em": "bench_gmm_em",
    "losses": "bench_losses",
    "scoring": "bench_scoring",
    "generation": "bench_generation",
    "trainer": "bench_trainer",
}


def _child(name: str, quick: bool, out: str) -> None:
    """In a fresh process: run one benchmark and write its result and headline rows to `out`."""
    sys.path.insert(0, str(HERE))
    module = importlib.import_module(BENCHMARKS[name])
    start = time.perf_counter()
    result = module.run(quick=quick)
    seconds = time.perf_counter() - start
    Path(out).write_text(json.dumps({"seconds": seconds, "rows": module.headline(result), "result": result}))


def run_one(name: str, quick: bool, timeout_s: float | None = None) -> dict:
    """Run benchmark `name` in a subprocess; return its seconds, headline rows and full result (or the error)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--child-out", str(out)]
        cmd += ["--quick"] if quick else []
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=timeout_s)
            error = None if proc.returncode == 0 else f"exit status {proc.returncode} (see its output above)"
        except subprocess.TimeoutExpired:
            error = f"timed out after {timeout_s} s"
        wall = time.perf_counter() - start
        if error is None and out.exists():
            return {"wall_s": wall, **json.loads(out.read_text())}
    return {"wall_s": wall, "error": error or "no result written", "rows": []}


def _error_row(name: str, error: str) -> dict:
    from report import row

    return row(name, f"did not finish: {error}", None, None, None, "-", False)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="each benchmark's quick setting")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), help="run this benchmark only")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per benchmark (default: none)")
    parser.add_argument("--child", choices=sorted(BENCHMARKS), help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.quick, args.child_out)

    sys.path.insert(0, str(HERE))
    from report import machine, markdown

    names = [args.only] if args.only else list(BENCHMARKS)
    command = "python benchmarks/run_all.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    start = time.perf_counter()
    runs, rows = {}, []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ({BENCHMARKS[name]}.py{', quick' if args.quick else ''})", flush=True)
        runs[name] = run_one(name, args.quick, args.timeout)
        print(f"[{i}/{len(names)}] {name}: {runs[name]['wall_s']:.0f} s wall", flush=True)
        rows += runs[name]["rows"] or [_error_row(name, runs[name]["error"])]
    wall = time.perf_counter() - start
    info = machine()
    table = markdown(rows, info, command.strip(), wall)
    stem = datetime.date.today().isoformat() + (f"-{args.only}" if args.only else "")
    report = {
        "command": command.strip(),
        "quick": args.quick,
        "wall_s": wall,
        "machine": info,
        "rows": rows,
        "benchmarks": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2))
    title = f"# hf_kd benchmarks, {stem}{' (--quick)' if args.quick else ''}\n\n"
    (RESULTS / f"{stem}.md").write_text(title + table)
    if args.quick and not args.only:  # README's table is the quick run of every benchmark
        from report import readme_with_table

        readme = HERE.parent / "README.md"
        report_path = f"benchmarks/results/{stem}.json"
        readme.write_text(readme_with_table(readme.read_text(), table, report_path))
    print("\n" + table)
    print(f"written to {RESULTS / stem}.json and .md; wall time {wall / 60:.1f} min")
    return report


if __name__ == "__main__":
    main()
