"""`hf-kd` answers without loading the ML stack: lazy imports, --version, `hf-kd env`, a default in every help."""

import argparse
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import hf_kd
from hf_kd.cli import COMMANDS, command_parser, env_from_args, main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")


def test_cli_imports_no_ml_library():
    """In a fresh interpreter: `hf-kd --help` imports none of the ML stack; every `hf-kd X --help` renders its options
    through trl's parser, which imports neither torch nor transformers (`distill`'s options are transformers'
    TrainingArguments: it is the exception)."""
    script = (
        "import contextlib, io, json, sys\n"
        "import hf_kd.cli as cli\n"
        "out, loaded = {}, {}\n"
        "for argv in [['--help']] + [[name, '--help'] for name in cli.COMMANDS if name != 'distill']:\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as f, contextlib.suppress(SystemExit):\n"
        "        cli.main(argv)\n"
        "    out[argv[0]] = f.getvalue()\n"
        f"    loaded[argv[0]] = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps([out, loaded]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    out, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded.pop("--help") == []
    assert all(modules in ([], ["trl"]) for modules in loaded.values()), loaded
    assert "--num_samples" in out["generate"] and "--selectivities" in out["simulate"] and "--repo-id" in out["card"]
    assert all("--config" in text for name, text in out.items() if name != "--help")


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert (
        capsys.readouterr().out.strip() == f"hf-kd {pyproject['project']['version']}" == f"hf-kd {hf_kd.__version__}"
    )


def test_env_reports_the_installed_versions(capsys):
    import torch
    import transformers
    import trl

    info = env_from_args(argparse.Namespace())
    assert (info["torch"], info["transformers"], info["trl"]) == (
        torch.__version__,
        transformers.__version__,
        trl.__version__,
    )
    assert info["huggingface_hub"] == metadata.version("huggingface_hub")
    assert (info["cuda"] == "no") == (not torch.cuda.is_available())
    assert re.search(rf"^trl +{re.escape(trl.__version__)}$", capsys.readouterr().out, re.M)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_states_its_default(command):
    parser = command_parser(command)
    formatter = parser._get_formatter()
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.required or not action.option_strings:
            continue
        if "default" not in (formatter._expand_help(action) if action.help else ""):
            missing.append(action.option_strings[0])
    assert not missing, f"hf-kd {command} --help states no default for {missing}"


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS) and "--version" in out
