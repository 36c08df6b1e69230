"""README's Python quick start runs as written, with the Hub ids swapped for tiny local models and a tiny budget."""

import json
import re
import time
from pathlib import Path

import pytest
from conftest import make_llama

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def quick_start_snippet() -> str:
    text = README.read_text()
    section = text[text.index("## Quick start in Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_quick_start_runs(tokenizer, tmp_path):
    code = quick_start_snippet()
    paths = {}
    for name, seed, layers in (("SmolLM2-360M-Instruct", 0, 2), ("SmolLM2-135M-Instruct", 1, 1)):
        paths[name] = tmp_path / name
        make_llama(len(tokenizer), seed=seed, layers=layers).save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    replacements = {
        '"HuggingFaceTB/SmolLM2-360M-Instruct"': repr(str(paths["SmolLM2-360M-Instruct"])),
        '"HuggingFaceTB/SmolLM2-135M-Instruct"': repr(str(paths["SmolLM2-135M-Instruct"])),
        'output_dir="kd"': f"output_dir={str(tmp_path / 'kd')!r}, max_steps=2, max_completion_length=4, "
        "per_device_train_batch_size=2, report_to='none'",
        '["The"] * 512': '["the"] * 8',
        '"max_new_tokens": 64}': '"max_new_tokens": 4}, num_samples=8',
        'prompt="The"': 'prompt="the"',
    }
    for old, new in replacements.items():
        assert old in code, f"README's quick start no longer contains {old!r}: update this test with it"
        code = code.replace(old, new)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    scores = namespace["scores"]
    assert scores["precision_ci"][0] <= scores["precision"] <= scores["precision_ci"][1]
    assert scores["recall_ci"][0] <= scores["recall"] <= scores["recall_ci"][1]
    assert namespace["trainer"].state.global_step == 2


def evidence_section() -> str:
    text = README.read_text()
    start = text.index("## Evidence")
    return text[start : text.index("\n## ", start + 1)]


def _interval(d: dict, signed: bool) -> str:
    f = "+.3f" if signed else ".3f"
    return f"{d['mean']:{f}} [{d['low']:{f}}, {d['high']:{f}}]"


def test_readme_miniature_evidence_quotes_the_committed_results():
    import json

    results = json.loads((README.parent / "docs/evidence/miniature/results.json").read_text())
    section = evidence_section()
    for row in results["taus"]:
        direct = row["tau"] == 1.0
        cells = [
            f"{row['tau']:g}" + (" (direct)" if direct else ""),
            _interval(row["precision"], signed=False),
            _interval(row["recall"], signed=False),
            "0" if direct else _interval(row["precision_vs_direct"], signed=True),
            "0" if direct else _interval(row["recall_vs_direct"], signed=True),
            f"{row['train_samples_precision']['mean']:.3f}",
        ]
        assert "| " + " | ".join(cells) + " |" in section, f"README's miniature row for tau={row['tau']} is stale"
        if not direct:  # "every paired interval excludes zero"
            assert row["precision_vs_direct"]["low"] > 0 and row["recall_vs_direct"]["high"] < 0
    assert f"{results['p_star']['entropy_rate']:.3f}" in section
    teacher = results["teacher"]
    for key in ("precision", "recall"):
        low, high = teacher[f"{key}_ci"]
        assert f"**{teacher[key]:.3f}** [{low:.3f}, {high:.3f}]" in section


def test_readme_smollm2_evidence_quotes_the_committed_paired_differences():
    import json

    results = json.loads((README.parent / "docs/evidence/results.json").read_text())
    section = evidence_section()
    for row in results["paired_vs_direct"]:
        cells = [f"{row['temperature']:g}"]
        for key in ("precision", "recall"):
            d = row[f"{key}_vs_direct"]
            cells.append(_interval(d, signed=True) + (", excludes zero" if d["excludes_zero"] else ", includes zero"))
        assert "| " + " | ".join(cells) + " |" in section, (
            f"README's SmolLM2 row for tau={row['temperature']} is stale"
        )
    own = results["p_star_on_reference"]["log_likelihood_per_token"]
    assert f"{own:.2f}" in section


def cpu_quick_start_snippet() -> str:
    text = README.read_text()
    return re.search(r"<!-- cpu-quick-start -->\n```python\n(.*?)```", text, re.S).group(1)


@pytest.mark.slow
def test_readme_cpu_quick_start_runs_as_written(tmp_path, monkeypatch, capsys):
    """The CPU / offline variant, verbatim: the real SmolLM2-135M-Instruct (hf_kd.offline), no Hub, a few minutes."""
    monkeypatch.chdir(tmp_path)  # its output_dir is relative
    start = time.process_time()
    namespace = {}
    exec(compile(cpu_quick_start_snippet(), "README.md", "exec"), namespace)
    cpu_minutes = (time.process_time() - start) / 60  # CPU time, all threads: not inflated by a busy machine
    print(f"README CPU quick start: {cpu_minutes:.1f} CPU minutes (all threads)")
    scores, trainer = namespace["scores"], namespace["trainer"]
    assert trainer.state.global_step == 24 and scores["precision_num_samples"] == 64
    assert scores["precision_ci"][0] <= scores["precision"] <= scores["precision_ci"][1]
    assert f"precision {scores['precision']:.3f}, recall {scores['recall']:.3f}" in capsys.readouterr().out
    # a gross-regression guard only: on an oversubscribed machine the CPU time of torch's threads inflates too
    assert cpu_minutes < 30, f"README promises minutes on a CPU; it took {cpu_minutes:.1f} CPU minutes"


def test_readme_benchmark_table_is_the_committed_quick_report():
    """README's benchmark table is `run_all.py --quick`'s table of the report it links, figure for figure."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from report import README_END, README_START, markdown, readme_with_table

    readme = README.read_text()
    block = readme.split(README_START, 1)[1].split(README_END, 1)[0]
    path = re.search(r"\[(benchmarks/results/[0-9-]+\.json)\]", block).group(1)
    report = json.loads((ROOT / path).read_text())
    assert report["quick"] and report["command"] == "python benchmarks/run_all.py --quick"
    assert {r["benchmark"] for r in report["rows"]} >= {"trainer", "generation"}
    table = markdown(report["rows"], report["machine"], report["command"], report["wall_s"])
    assert readme_with_table(readme, table, path) == readme
