"""README's Python quick start runs as written, with the Hub ids swapped for tiny local models and a tiny budget."""

import re
from pathlib import Path

from conftest import make_llama

README = Path(__file__).resolve().parents[1] / "README.md"


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
