"""Bad input, as a new user would type it: every case ends in one clear message naming the problem and the fix.

CLI cases run `hf-kd` in process: exit status 2 and exactly one stderr line ``hf-kd <command>: error: ...``.
API cases call the Python functions and expect a `ValueError` with the message. Nothing here trains or samples:
each check must fire before the work it protects.
"""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
from conftest import make_llama, make_tokenizer

from hf_kd import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def p(tmp_path_factory):
    """Paths the cases refer to: a saved tiny teacher, a results JSON, a file, an empty folder."""
    root = tmp_path_factory.mktemp("bad_inputs")
    tokenizer = make_tokenizer()
    make_llama(len(tokenizer)).save_pretrained(root / "teacher")
    tokenizer.save_pretrained(root / "teacher")
    (root / "empty").mkdir()
    (root / "file.txt").write_text("not a folder")
    good = {"student_init": "HuggingFaceTB/SmolLM2-135M-Instruct", "datasets": ["HuggingFaceTB/smoltalk"]}
    for name, data in {
        "good": good,
        "datasets_str": {**good, "datasets": "HuggingFaceTB/smoltalk"},
        "steps_str": {**good, "num_train_steps": "10"},
        "unknown_key": {**good, "lr": 1e-4},
        "bad_loss": {**good, "loss_type": "kl"},
        "list": [good],
        "ci_short": {**good, "precision": -2.0, "precision_ci": [-2.1]},
        "seeds_str": {**good, "seeds": "0,1"},
    }.items():
        (root / f"{name}.json").write_text(json.dumps(data))
    (root / "broken.json").write_text('{"student_init": "x",')
    return root


def gen(p, *extra):
    return ["generate", str(p / "teacher"), "--output-dir", str(p / "gen_out"), "--num-samples", "2", *extra]


def evaluate(p, *extra):
    return ["evaluate", "--student", str(p / "teacher"), "--reference", str(p / "teacher"), *extra]


CLI_CASES = {
    # generate
    "teacher path missing": (
        lambda p: ["generate", str(p / "nope"), "--output-dir", str(p / "o"), "--num-samples", "2"],
        r"the teacher '.*nope' does not exist on this machine and is not a Hub",
    ),
    "teacher not a checkpoint": (
        lambda p: ["generate", str(p / "empty"), "--output-dir", str(p / "o"), "--num-samples", "2"],
        r"is not a checkpoint folder \(no config.json\)",
    ),
    "batch size 0": (lambda p: gen(p, "--batch-size", "0"), r"batch_size must be a positive integer \(got 0\)"),
    "num samples 0": (lambda p: gen(p)[:-1] + ["0"], r"num_samples must be a positive integer \(got 0\)"),
    "max new tokens 0": (lambda p: gen(p, "--max-new-tokens", "0"), r"max_new_tokens must be a positive integer"),
    "dtype float33": (
        lambda p: gen(p, "--dtype", "float33"),
        r"dtype='float33' is not a floating-point torch dtype; use one of float32",
    ),
    "dtype int8": (lambda p: gen(p, "--dtype", "int8"), r"dtype='int8' is not a floating-point torch dtype"),
    "empty output dir": (
        lambda p: ["generate", str(p / "teacher"), "--output-dir", "", "--num-samples", "2"],
        r"output_dir is empty; name a folder",
    ),
    "output dir is a file": (
        lambda p: ["generate", str(p / "teacher"), "--output-dir", str(p / "file.txt"), "--num-samples", "2"],
        r"output_dir '.*file.txt' is a file; give a folder",
    ),
    "eos outside vocab": (
        lambda p: gen(p, "--eos-token-ids", "999"),
        r"eos_token_ids \[999\] are outside the model's vocabulary \[0, 25\); no completion could",
    ),
    "negative eos": (lambda p: gen(p, "--eos-token-ids", "3", "-1"), r"eos_token_ids \[-1\] are outside"),
    "top_p 1.5": (lambda p: gen(p, "--top-p", "1.5"), r"top_p must be in \(0, 1\]"),
    "top_k -2": (lambda p: gen(p, "--top-k", "-2"), r"top_k must be >= 0"),
    "selectivity -1": (lambda p: gen(p, "--selectivity", "-1"), r"selectivity must be > 0"),
    "temperature -1": (lambda p: gen(p, "--temperature", "-1"), r"temperature must be >= 0"),
    "target entropy 0": (lambda p: gen(p, "--target-entropy", "0"), r"target_entropy must be > 0 nats per token"),
    "store topk > vocab": (lambda p: gen(p, "--store-topk", "1000"), r"store_topk=1000 exceeds the vocabulary \(25\)"),
    "prompts file missing": (
        lambda p: gen(p, "--prompts-file", str(p / "prompts.txt")),
        r"--prompts_file '.*prompts.txt' does not exist",
    ),
    "unknown backend": (lambda p: gen(p, "--backend", "onnx"), r"argument --backend: invalid choice: 'onnx'"),
    "two knobs": (
        lambda p: gen(p, "--selectivity", "2", "--temperature", "0.5"),
        r"give one of selectivity \(beta\), temperature \(1 / beta\) or target_entropy, not several",
    ),
    "bad vllm kwargs": (lambda p: gen(p, "--vllm-kwargs", "{"), r"--vllm_kwargs is not valid JSON \(Expecting"),
    "missing num samples": (
        lambda p: ["generate", str(p / "teacher"), "--output-dir", "x"],
        r"the following arguments are required: --num_samples",
    ),
    # evaluate
    "evaluate output folder missing": (
        lambda p: evaluate(p, "--output", str(p / "no_dir" / "r.json")),
        r"--output '.*r.json': the folder '.*no_dir' does not exist; create it first",
    ),
    "evaluate output is a folder": (
        lambda p: evaluate(p, "--output", str(p / "empty")),
        r"--output '.*empty' is a folder; give a file name inside it",
    ),
    "evaluate batch size 0": (
        lambda p: evaluate(p, "--batch-size", "0"),
        r"--batch_size must be a positive integer \(got 0\)",
    ),
    "evaluate num samples 0": (lambda p: evaluate(p, "--num-samples", "0"), r"--num_samples must be a positive"),
    "evaluate reference missing": (
        lambda p: ["evaluate", "--student", str(p / "teacher"), "--reference", "./no/such/model"],
        r"the reference './no/such/model' does not exist",
    ),
    "evaluate student missing": (
        lambda p: ["evaluate", "--student", "/no/student", "--reference", str(p / "teacher")],
        r"the student '/no/student' does not exist",
    ),
    "evaluate bad unit": (lambda p: evaluate(p, "--unit", "bits"), r"argument --unit: invalid choice: 'bits'"),
    # card
    "card results missing": (lambda p: ["card", str(p / "none.json")], r"results file '.*none.json' does not exist"),
    "card datasets string": (
        lambda p: ["card", str(p / "datasets_str.json")],
        r"field 'datasets' must be a list of strings \(got str 'HuggingFaceTB/smoltalk'\); "
        r"write \[\"HuggingFaceTB/smoltalk\"\]",
    ),
    "card steps string": (
        lambda p: ["card", str(p / "steps_str.json")],
        r"field 'num_train_steps' must be an integer or null \(got str '10'\)",
    ),
    "card seeds string": (lambda p: ["card", str(p / "seeds_str.json")], r"field 'seeds' must be a list of integers"),
    "card ci short": (lambda p: ["card", str(p / "ci_short.json")], r"field 'precision_ci' must be a list of 2 num"),
    "card unknown key": (lambda p: ["card", str(p / "unknown_key.json")], r"unknown results keys \['lr'\]"),
    "card bad loss": (lambda p: ["card", str(p / "bad_loss.json")], r"loss_type='kl' is unknown; use one of"),
    "card json list": (lambda p: ["card", str(p / "list.json")], r"results must be a JSON object of fields"),
    "card broken json": (lambda p: ["card", str(p / "broken.json")], r"broken.json is not valid JSON: Expecting"),
    "card bad repo id": (
        lambda p: ["card", str(p / "good.json"), "--repo-id", "a b"],
        r"repo_id='a b' is not a Hub repository id; use 'owner/name'",
    ),
    "card template missing": (
        lambda p: ["card", str(p / "good.json"), "--template", str(p / "t.md")],
        r"card template '.*t.md' does not exist",
    ),
    # simulate and the command itself
    "simulate empty output": (lambda p: ["simulate", "--output-dir", ""], r"--output-dir is empty"),
    "simulate zero seeds": (
        lambda p: ["simulate", "--num-seeds", "0", "--output-dir", str(p / "sim")],
        r"num_seeds must be >= 1",
    ),
    "no command": (lambda p: [], r"the following arguments are required: command"),
    "unknown command": (lambda p: ["distill-all"], r"argument command: invalid choice: 'distill-all'"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input_is_one_line_with_exit_2(case, p, capsys, monkeypatch):
    monkeypatch.chdir(p)
    argv, message = CLI_CASES[case]
    argv = argv(p)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    # a check that needs the teacher's vocabulary fires after loading it: its progress bar may come first
    lines = [line for line in err.strip("\n").split("\n") if "Loading weights" not in line]
    command = argv[0] if argv and argv[0] in ("generate", "evaluate", "card", "simulate") else None
    prefix = f"hf-kd {command}: error: " if command else "hf-kd: error: "
    assert len(lines) == 1 and lines[0].startswith(prefix) and "Traceback" not in err, err
    assert re.search(message, lines[0]), lines[0]
    assert not (p / "gen_out").exists() and not (p / "sim").exists()  # refused before any work


def test_debug_shows_the_traceback(p):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        cli.main(gen(p, "--batch-size", "0", "--debug"))


# ------------------------------------------------------------------------------------------------------------ API
def _adapter(vocab=None, eos=None, **kwargs):
    from hf_kd.metrics import CausalLMAdapter

    tokenizer = make_tokenizer()
    model = make_llama(vocab or len(tokenizer))
    if eos is not None:  # a model whose EOS is another id than the tokenizer's
        model.config.eos_token_id = model.generation_config.eos_token_id = eos
    return CausalLMAdapter(model, tokenizer, **kwargs)


def _generate(p, **kwargs):
    from hf_kd.generation import generate_distillation_dataset

    args = {"num_samples": 2, "max_new_tokens": 2, "progress": False, **kwargs}
    return generate_distillation_dataset(args.pop("teacher", p / "teacher"), None, args.pop("out", p / "api"), **args)


def _results(**kwargs):
    from hf_kd.model_card import DistillationResults

    return DistillationResults(**{"student_init": "HuggingFaceTB/SmolLM2-135M-Instruct", **kwargs})


def _push(p, **kwargs):
    from hf_kd.hub import push_distilled_student

    return push_distilled_student(**{"output_dir": p / "teacher", "repo_id": "me/kd", "card": "# c", **kwargs})


def _recipe(p, *argv):
    spec = importlib.util.spec_from_file_location("smollm2_kd_bad_inputs", REPO / "recipes" / "smollm2_kd.py")
    module = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))  # dataclasses look it up
    spec.loader.exec_module(module)
    base = [
        "--teacher_name_or_path",
        str(p / "teacher"),
        "--output_dir",
        str(p / "recipe_out"),
        "--student_num_layers",
        "1",
        "--report_to",
        "none",
    ]
    return module.main([*base, *argv])


API_CASES = {
    "adapter: another model's tokenizer (size)": (
        lambda p: _adapter(vocab=10),
        r"the tokenizer has 25 tokens but the model's vocabulary only 10",
    ),
    "adapter: another model's tokenizer (EOS)": (
        lambda p: _adapter(eos=7),
        r"the tokenizer's EOS id 3 is not the model's \(\[7\]\)",
    ),
    "adapter: batch size 0": (lambda p: _adapter(batch_size=0), r"batch_size must be a positive integer \(got 0\)"),
    "generate: EOS outside vocab": (lambda p: _generate(p, eos_token_ids=[25]), r"eos_token_ids \[25\] are outside"),
    "generate: pathlib teacher missing": (lambda p: _generate(p, teacher=p / "gone"), r"the teacher '.*gone' does n"),
    "generate: dtype object": (lambda p: _generate(p, dtype="torch.int64"), r"dtype='torch.int64' is not a floating"),
    "results: datasets string": (
        lambda p: _results(datasets="HuggingFaceTB/smoltalk"),
        r"field 'datasets' must be a list of strings",
    ),
    "results: selectivity bool": (lambda p: _results(selectivity=True), r"field 'selectivity' must be a number"),
    "results: extra metric text": (
        lambda p: _results(extra_metrics={"coverage": "high"}),
        r"field 'extra_metrics' must be an object of strings to numbers",
    ),
    "push: repo id without owner": (lambda p: _push(p, repo_id="kd"), r"must be a Hub repository id 'owner/name'"),
    "push: missing extra file": (lambda p: _push(p, extra_files=(p / "plot.png",)), r"extra file 'plot.png' does not"),
    "push: dataset repo without dataset": (lambda p: _push(p, dataset_repo_id="me/data"), r"dataset_dir is not"),
    "recipe: bad selectivity after good ones": (
        lambda p: _recipe(p, "--selectivities", "1.0", "4.0", "-2.0"),
        r"selectivities: -2.0 is not usable: selectivity must be > 0",
    ),
    "recipe: repeated selectivity": (lambda p: _recipe(p, "--selectivities", "2", "2.0"), r"repeat a value"),
    "recipe: slice without layers": (
        lambda p: _recipe(p, "--student_num_layers", "0"),
        r"student_num_layers must be >= 1",
    ),
    "recipe: teacher missing": (
        lambda p: _recipe(p, "--teacher_name_or_path", str(p / "gone")),
        r"teacher_name_or_path '.*gone' does not",
    ),
    "recipe: overrides not JSON": (
        lambda p: _recipe(p, "--student_init", "scratch", "--student_config_overrides", "{hidden: 8}"),
        r"student_config_overrides is not valid JSON",
    ),
    "recipe: eval batch size 0": (lambda p: _recipe(p, "--eval_batch_size", "0"), r"eval_batch_size must be a posi"),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_api_bad_input_names_the_problem(case, p, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setattr(HfApi, "create_repo", lambda *a, **k: pytest.fail("no repository may be created"))
    monkeypatch.setattr(HfApi, "upload_folder", lambda *a, **k: pytest.fail("nothing may be uploaded"))
    call, message = API_CASES[case]
    with pytest.raises(ValueError, match=message):
        call(p)
    assert not (p / "api").exists() and not (p / "recipe_out").exists()  # refused before any work


def test_there_are_at_least_40_cases():
    assert len(CLI_CASES) + len(API_CASES) >= 40
