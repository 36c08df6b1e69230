"""`hf-kd distill`: the packaged sweep of recipes/smollm2_kd.py.

The anchor is the recipe itself: the same tiny config through `hf-kd distill`, `python -m hf_kd.distill`, the
recipe script, an installed wheel outside the repository, and `accelerate launch` with 2 CPU processes must write the
same students with the same scores.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_llama, tiny_sweep_config

from hf_kd import cli
from hf_kd.cli import parse_command

ROOT = Path(__file__).resolve().parents[1]
RECIPE_CONFIGS = [
    p
    for p in sorted((ROOT / "recipes" / "configs").glob("*.yaml"))
    if not p.name.startswith(("evidence_", "miniature_"))
]
# what a run writes that depends on where and how it was started, not on what it trained
_WHERE = ("command", "model_name", "hf_kd_version")


def tiny_config(tmp_path: Path, tokenizer, **overrides) -> Path:
    """A saved 2-layer teacher and a YAML sweep over it (2 students of 1 layer, 2 steps each); returns the YAML."""
    teacher = tmp_path / "teacher"
    if not teacher.exists():
        make_llama(len(tokenizer), seed=0, hidden=32, layers=2).save_pretrained(teacher)
        tokenizer.save_pretrained(teacher)
    output_dir = overrides.pop("output_dir", tmp_path / "out")
    config = tiny_sweep_config(teacher, output_dir, use_cpu=True, **overrides)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def written(out: Path) -> dict:
    """What a sweep wrote under `out`: its rows (without where-it-ran fields) and each student folder's files."""
    rows = json.loads((out / "results.json").read_text())["rows"]
    rows = [{k: v for k, v in row.items() if k not in _WHERE} for row in rows]
    files = {row["name"]: sorted(p.name for p in (out / row["name"]).iterdir()) for row in rows}
    return {"rows": rows, "files": files, "plot": (out / "precision_recall.png").stat().st_size > 1000}


def assert_same_sweep(a: dict, b: dict) -> None:
    assert a["files"] == b["files"] and a["plot"] and b["plot"]
    assert [r["name"] for r in a["rows"]] == [r["name"] for r in b["rows"]]
    for x, y in zip(a["rows"], b["rows"]):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], float):
                assert x[key] == pytest.approx(y[key], abs=1e-6), key
            else:
                assert x[key] == y[key], key


@pytest.mark.parametrize("path", RECIPE_CONFIGS, ids=lambda p: p.name)
def test_recipe_configs_parse_unchanged_with_the_packaged_parser(path):
    """The recipe's YAML files are `hf-kd distill` configs as they are: every key lands in its field."""
    parsed = parse_command("distill", ["--config", str(path)])
    for key, value in yaml.safe_load(path.read_text()).items():
        found = [getattr(a, key) for a in parsed if hasattr(a, key)]
        assert found, f"{path.name}: {key} is not an option of hf-kd distill"
        if isinstance(value, (str, int, float, list)) and key not in ("completion_source", "report_to"):
            assert found[0] == value, f"{path.name}: {key} parsed as {found[0]!r}, not {value!r}"


def test_flags_override_the_config(tmp_path, tokenizer):
    config = tiny_config(tmp_path, tokenizer)
    recipe, training, _ = parse_command(
        "distill", ["--config", str(config), "--selectivities", "2", "--max-steps", "5"]
    )
    assert recipe.selectivities == [2.0] and training.max_steps == 5 and training.learning_rate == 1e-3
    sim_yaml = tmp_path / "sim.yaml"
    sim_yaml.write_text(yaml.safe_dump({"num_seeds": 7, "selectivities": [1.0, float("inf")], "plot": False}))
    (sim,) = parse_command("simulate", [f"--config={sim_yaml}", "--num-seeds", "2"])  # --config=PATH works too
    assert (sim.num_seeds, sim.selectivities, sim.plot) == (2, (1.0, float("inf")), False)
    assert sim.output_dir == "gmm_simulation_output" and sim.n_init == 1  # not in the YAML: the defaults


@pytest.mark.parametrize(
    "overrides, argv, message",
    [
        ({"lr": 1e-3}, [], r"the config has keys that are no option of hf-kd distill: \['lr'\]"),
        ({}, ["--student_num_layers", "0"], r"student_num_layers must be >= 1 \(got 0\)"),
        ({}, ["--conf", "x.yaml"], r"--config is abbreviated: write it in full, --config PATH"),
        ({}, ["--max_steps", "two"], r"argument --max_steps/--max-steps: invalid int value: 'two'"),
    ],
)
def test_distill_errors_are_one_line(overrides, argv, message, tmp_path, tokenizer, capsys):
    config = tiny_config(tmp_path, tokenizer, **overrides)
    capsys.readouterr()  # the saving progress bar of the teacher
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["distill", "--config", str(config), *argv])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("hf-kd distill: error: ") and re.search(message, line), line
    assert not (tmp_path / "out").exists()


def test_hf_kd_distill_writes_what_the_recipe_writes(tmp_path, tokenizer, capsys):
    config = tiny_config(tmp_path, tokenizer)
    cli.main(["distill", "--config", str(config), "--output_dir", str(tmp_path / "cli")])
    from_cli = written(tmp_path / "cli")
    assert [r["name"] for r in from_cli["rows"]] == ["selectivity_1", "selectivity_4"]
    assert {"model.safetensors", "README.md", "results.json", "hf_kd_run_config.json"} <= set(
        from_cli["files"]["selectivity_4"]
    )
    summary = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert summary["command"].startswith(("hf-kd distill", "python"))  # this process's command line, sanitized

    recipe = _load_recipe()
    recipe.main(["--config", str(config), "--output_dir", str(tmp_path / "recipe")])
    assert_same_sweep(from_cli, written(tmp_path / "recipe"))
    printed = capsys.readouterr().out
    assert printed.count("plan: 2 student(s) (selectivity_1, selectivity_4; 0 already done)") == 2


def _load_recipe():
    import importlib.util

    spec = importlib.util.spec_from_file_location("smollm2_kd_distill_cli", ROOT / "recipes" / "smollm2_kd.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run(argv: list[str], cwd: Path, env: dict | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


@pytest.mark.slow
def test_wheel_installed_outside_the_repo_runs_distill(tmp_path, tokenizer):
    """`pip install` of the built wheel into a fresh venv (deps seen through a .pth to this venv's site-packages, so
    nothing is downloaded), then `hf-kd distill` from a folder where neither recipes/ nor the source tree exist."""
    import site
    import sysconfig

    # built from a copy: setuptools' build/ folder in the checkout could carry stale modules into later wheels
    skip = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "outputs", "docs", "tests")
    shutil.copytree(ROOT, tmp_path / "src", ignore=skip)
    wheel = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist"]
    _run(wheel, cwd=tmp_path / "src")
    (wheel,) = (tmp_path / "dist").glob("hf_kd-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the source tree must not be importable
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--force-reinstall", wheel]
    _run(pip, cwd=tmp_path, env=env)
    # after the install: pip would otherwise see this venv's hf-kd and skip it
    deps = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    Path(purelib, "deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [python, "-c", "import hf_kd; print(hf_kd.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)), where  # the installed package, not the source tree
    config = tiny_config(tmp_path, tokenizer, output_dir="out")  # relative: under the working directory
    _run([venv / "bin" / "hf-kd", "distill", "--config", config], cwd=work, env=env)
    installed = written(work / "out")
    _load_recipe().main(["--config", str(config), "--output_dir", str(tmp_path / "recipe")])
    assert_same_sweep(installed, written(tmp_path / "recipe"))


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes_module_and_recipe(tmp_path, tokenizer):
    """`accelerate launch` with 2 CPU processes of `-m hf_kd.distill` and of recipes/smollm2_kd.py: both finish and
    write the same students with the same scores (every rank scores; the main one writes)."""
    config = tiny_config(tmp_path, tokenizer)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # `--cpu --num_processes 2` starts ONE process in accelerate 1.x (multi-CPU needs mpirun); `--multi_gpu` is its
    # torchrun launcher, and the config's use_cpu makes the 2 ranks run on CPU with gloo
    # the launcher of this interpreter's accelerate (`accelerate launch`), whether or not its venv is on PATH
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    for script, out in ((["-m", "hf_kd.distill"], "module"), (["recipes/smollm2_kd.py"], "recipe")):
        _run([*launch, *script, "--config", config, "--output_dir", tmp_path / out], cwd=ROOT, env=env)
    module, recipe = written(tmp_path / "module"), written(tmp_path / "recipe")
    assert_same_sweep(module, recipe)
    # 2 steps of 2 prompts on each of the 2 ranks: the card counts the world's samples
    assert all((r["num_train_steps"], r["num_train_samples"]) == (2, 8) for r in module["rows"])
