"""Every recipe config parses with the recipe's parser; the recipe runs end to end on tiny local models."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_llama, tiny_sweep_config
from huggingface_hub import HfApi, ModelCard

from hf_kd.cli import main as card_main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))


def load_recipe(name="smollm2_kd"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recipe():
    return load_recipe()


def test_there_are_recipe_configs():
    names = {p.name for p in CONFIGS}
    assert "quickstart.yaml" in names and len(names) >= 4


def parser_for(path):
    """evidence_*.yaml configs belong to recipes/smollm2_evidence.py, miniature_*.yaml to recipes/miniature_lm.py,
    the others to recipes/smollm2_kd.py."""
    from trl import ModelConfig, TrlParser

    from hf_kd import DistillationConfig

    if path.name.startswith("evidence_"):
        return TrlParser((load_recipe("smollm2_evidence").EvidenceArguments, DistillationConfig))
    if path.name.startswith("miniature_"):
        return TrlParser((load_recipe("miniature_lm").MiniatureArguments, DistillationConfig))
    return TrlParser((load_recipe().RecipeArguments, DistillationConfig, ModelConfig))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_parses_without_unknown_keys(path):
    parsed = parser_for(path).parse_args_and_config(["--config", str(path)])
    config = yaml.safe_load(path.read_text())
    for key, value in config.items():
        found = [getattr(a, key) for a in parsed if hasattr(a, key)]
        assert found, f"{path.name}: {key} is not an option of its recipe"
        if (
            isinstance(value, (str, int, list))
            and not isinstance(value, bool)
            and key not in ("completion_source", "report_to")
        ):
            assert found[0] == value, f"{path.name}: {key} parsed as {found[0]!r}, not {value!r}"
    assert parsed[1].bf16 is False  # CPU-sane default: no YAML forces bf16


def test_recipe_end_to_end_on_tiny_models(recipe, tokenizer, tmp_path, monkeypatch, capsys):
    teacher_dir = tmp_path / "teacher"
    make_llama(len(tokenizer), seed=0, hidden=32, layers=2).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    config = tiny_sweep_config(
        teacher_dir,
        tmp_path / "out",
        push_to_hub=True,
        hub_model_id="someone/tiny-kd",
        eval_strategy="steps",
        eval_steps=1,
        per_device_eval_batch_size=2,
        eval_during_training_samples=4,
    )
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(config))
    uploads = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: repo_id)

    def fake_upload_folder(self, *, repo_id, folder_path, **kw):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir() if p.is_file()}
        uploads.append((repo_id, files))

    monkeypatch.setattr(HfApi, "upload_folder", fake_upload_folder)

    rows = recipe.main(["--config", str(config_path)])

    assert [r["name"] for r in rows] == ["selectivity_1", "selectivity_4"]
    out = tmp_path / "out"
    summary = json.loads((out / "results.json").read_text())
    assert [r["selectivity"] for r in summary["rows"]] == [1.0, 4.0]
    for row in summary["rows"]:
        assert row["precision_ci"][0] <= row["precision"] <= row["precision_ci"][1]
        assert row["recall_ci"][0] <= row["recall"] <= row["recall_ci"][1]
        assert row["num_train_steps"] == 2
    assert (out / "precision_recall.png").stat().st_size > 1000
    # During training, the callback logged precision and recall at every evaluation (steps 1 and 2).
    state = json.loads((out / "selectivity_4" / "trainer_state.json").read_text())
    logged = [e for e in state["log_history"] if "eval_precision" in e]
    assert [e["step"] for e in logged] == [1, 2]
    assert all(e["eval_recall_ci_half_width"] > 0 for e in logged)
    card = ModelCard.load(out / "selectivity_4" / "README.md")
    evaluation = card.data.distillation["evaluation"]  # samples of the reference, not a Hub dataset: no model-index
    assert evaluation["precision"] == pytest.approx(summary["rows"][1]["precision"])
    assert evaluation["recall"] == pytest.approx(summary["rows"][1]["recall"])
    assert "the prompt 'the', 8 copies; completions: sampled by the teacher" in card.text
    # `hf-kd card` renders the sweep's results.json into the same cards as the recipe's own, one per student.
    card_main(["card", str(out / "results.json"), "--output", str(tmp_path / "cards")])
    for name in ("selectivity_1", "selectivity_4"):
        assert (tmp_path / "cards" / name / "README.md").read_text() == (out / name / "README.md").read_text()
    # The stages were announced with their counts, and the whole run was estimated after the first student.
    printed = capsys.readouterr().out
    assert "plan: 2 student(s) (selectivity_1, selectivity_4; 0 already done), each 2 steps of 2 prompts" in printed
    for stage in (
        "[1/6] loading the teacher",
        "[2/6] sampling the reference: 8 samples x 6 tokens",
        "[3/6] student 1/2 (selectivity_1): training, 2 steps",
        "[6/6] student 2/2 (selectivity_4): precision and recall, 8 samples per side",
    ):
        assert stage in printed
    duration = r"(\d+ min )?\d+ s"
    assert re.search(rf"student 1/2 took {duration}; estimate: {duration} for the 1 left, {duration} in all", printed)
    # The push went through HfApi only, with the evaluated card and no local path in it.
    assert [repo for repo, _ in uploads] == ["someone/tiny-kd-selectivity_1", "someone/tiny-kd-selectivity_4"]
    files = uploads[1][1]
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    assert str(tmp_path) not in files["README.md"].decode()

    # Interrupted sweeps resume: a finished student is reused, not retrained (its weights are untouched).
    weights = out / "selectivity_1" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    (out / "selectivity_4" / "results.json").unlink()  # as if the run had stopped before evaluating it
    rerun = recipe.main(["--config", str(config_path)])
    assert weights.stat().st_mtime_ns == stamp
    assert rerun[0]["precision"] == rows[0]["precision"] and rerun[0]["recall"] == rows[0]["recall"]
    assert (out / "selectivity_4" / "results.json").exists()

    # A finished student is reused only for the same config: another one is refused before anything trains,
    # naming what differs, and --retrain trains it again.
    config_path.write_text(yaml.safe_dump({**config, "learning_rate": 5e-4, "push_to_hub": False}))
    differs = r"selectivity_1 holds a run with another config \(learning_rate: 0.001 -> 0.0005\).*Pass --retrain"
    with pytest.raises(ValueError, match=differs):
        recipe.main(["--config", str(config_path)])
    assert weights.stat().st_mtime_ns == stamp
    retrained = recipe.main(["--config", str(config_path), "--retrain", "--selectivities", "1.0"])
    assert [r["name"] for r in retrained] == ["selectivity_1"]
    stored = json.loads((out / "selectivity_1" / "hf_kd_run_config.json").read_text())
    assert stored["learning_rate"] == 5e-4 and stored["selectivity"] == 1.0
    assert weights.stat().st_mtime_ns != stamp


def test_evidence_recipe_end_to_end_and_resume(tokenizer, tmp_path, capsys):
    evidence = load_recipe("smollm2_evidence")
    teacher_dir = tmp_path / "p_star"
    make_llama(len(tokenizer), seed=0, hidden=32, layers=2).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    argv = [
        *("--model_name_or_path", str(teacher_dir), "--output_dir", str(tmp_path / "out")),
        *(
            "--temperatures 0.5 1.0 --seeds 0 1 --prompt the --num_train_samples 8 --max_new_tokens 5 "
            "--student_num_layers 1 --eval_num_samples 6 --generation_batch_size 4 "
            "--completion_source dataset --loss_type nll --per_device_train_batch_size 4 --max_steps 2 "
            "--learning_rate 1e-3 --save_strategy no --report_to none"
        ).split(),
    ]
    rows = evidence.main(argv)
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert [r["temperature"] for r in results["summary"]] == [0.5, 1.0]
    assert len(results["runs"]) == 4 and {r["seed"] for r in results["runs"]} == {0, 1}
    from scipy import stats

    for row, saved in zip(rows, results["summary"]):
        runs = [r for r in results["runs"] if r["temperature"] == row["temperature"]]
        for key in ("precision", "recall"):
            values = [r[key] for r in runs]
            mean = sum(values) / 2
            half_width = stats.t.ppf(0.975, df=1) * stats.tstd(values) / 2**0.5  # t-interval over the two seeds
            assert saved[key] == pytest.approx(mean)
            assert saved[f"{key}_ci"] == pytest.approx([mean - half_width, mean + half_width])
    printed = capsys.readouterr().out
    assert (
        f"{rows[0]['precision']:.4f}" in printed and f"{rows[0]['precision']:.4f}" in (out / "results.md").read_text()
    )
    # Paired with the direct student over seeds (t-interval of per-seed differences) and over sequences per run.
    (paired,) = results["paired_vs_direct"]
    by_run = {(r["temperature"], r["seed"]): r for r in results["runs"]}
    for key in ("precision", "recall"):
        diffs = [by_run[0.5, s][key] - by_run[1.0, s][key] for s in (0, 1)]
        half_width = stats.t.ppf(0.975, df=1) * stats.tstd(diffs) / 2**0.5
        got = paired[f"{key}_vs_direct"]
        assert [got["low"], got["mean"], got["high"]] == pytest.approx(
            [sum(diffs) / 2 + d * half_width for d in (-1, 0, 1)]
        )
        assert got["excludes_zero"] == (got["low"] > 0 or got["high"] < 0)
    tau_half = [r for r in results["runs"] if r["temperature"] == 0.5]
    for r in tau_half:
        assert r["bootstrap_vs_direct"]["recall_difference"] == pytest.approx(
            r["recall"] - by_run[1.0, r["seed"]]["recall"]
        )
    own = results["p_star_on_reference"]
    assert own["num_samples"] == 6 and own["ci"][0] <= own["log_likelihood_per_token"] <= own["ci"][1]
    # A second run reuses every dataset and every scored run: same numbers.
    assert evidence.main(argv) == rows
    # --rescore_results adds the same two summaries to an existing results.json, training nothing.
    stripped = {k: v for k, v in results.items() if k not in ("paired_vs_direct", "p_star_on_reference")}
    (tmp_path / "old.json").write_text(json.dumps(stripped))
    rescored = evidence.main([*argv, "--rescore_results", str(tmp_path / "old.json")])
    assert rescored["paired_vs_direct"] == results["paired_vs_direct"]
    assert rescored["p_star_on_reference"] == own
