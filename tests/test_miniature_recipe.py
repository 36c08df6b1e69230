"""The miniature three-level experiment (recipes/miniature_lm.py) runs end to end at a tiny size, and resumes.

This checks the pipeline, not the effect: the effect is in docs/evidence/miniature/results.json, made by the
documented command.
"""

import json

import pytest
import torch
from scipy import stats
from test_recipes import load_recipe
from transformers import LlamaForCausalLM

from hf_kd import CausalLMAdapter
from hf_kd.models.hmm import hmm_tokenizer, long_tail_hmm

TINY = (
    "--taus 0.5 1.0 --seeds 0 1 --max_new_tokens 6 "
    "--teacher_hidden_size 8 --teacher_num_layers 1 --teacher_num_train_samples 16 --teacher_num_train_epochs 1 "
    "--student_hidden_size 8 --student_num_layers 1 --num_train_samples 16 --eval_num_samples 12 "
    "--generation_batch_size 8 --completion_source dataset --loss_type nll --max_completion_length 6 "
    "--per_device_train_batch_size 8 --num_train_epochs 1 --learning_rate 1e-3 --save_strategy no "
    "--report_to none --disable_tqdm true"
).split()


def t_interval(values):
    mean = sum(values) / len(values)
    half = stats.t.ppf(0.975, df=len(values) - 1) * stats.tstd(values) / len(values) ** 0.5
    return {"mean": mean, "low": mean - half, "high": mean + half}


def test_miniature_pipeline_end_to_end_and_resume(tmp_path):
    recipe = load_recipe("miniature_lm")
    out, res = tmp_path / "out", tmp_path / "res"
    argv = [*TINY, "--output_dir", str(out), "--results_dir", str(res)]
    results = recipe.main(argv)
    saved = json.loads((res / "results.json").read_text())
    assert (res / "precision_recall_vs_tau.png").stat().st_size > 0
    assert saved["seeds"] == [0, 1] and "recipes/miniature_lm.py" in saved["command"]
    assert [row["tau"] for row in saved["taus"]] == [0.5, 1.0]

    runs = {(r["tau"], r["seed"]): r for r in saved["runs"]}
    assert len(runs) == 4 and all(r["num_train_steps"] == 2 for r in runs.values())  # 16 samples, batch 8, 1 epoch
    for row in saved["taus"]:
        for key in ("precision", "recall"):
            values = [runs[row["tau"], s][key] for s in (0, 1)]
            assert row[key] == pytest.approx(t_interval(values))
            diffs = [runs[row["tau"], s][key] - runs[1.0, s][key] for s in (0, 1)]
            expected = t_interval(diffs) if row["tau"] != 1.0 else {"mean": 0.0, "low": 0.0, "high": 0.0}
            assert row[f"{key}_vs_direct"] == pytest.approx(expected)
            assert set(row[f"{key}_vs_direct"]) == {"mean", "low", "high"}

    # Students at tau < 1 learnt from hf_kd.generate_distillation_dataset samples of the teacher at selectivity 1/tau.
    gen_args = json.loads((out / "data" / "teacher_tau_0.5_seed_1" / "generation_args.json").read_text())
    assert gen_args["selectivity"] == 2.0 and gen_args["num_samples"] == 16 and gen_args["max_new_tokens"] == 6

    # p*'s entropy rate and the teacher's recall, recomputed outside the recipe from the saved teacher.
    p_star = long_tail_hmm(seed=0)
    reference = p_star.sample(12, max_new_tokens=6, generator=torch.Generator().manual_seed(recipe.REFERENCE_SEED))
    total, units = p_star.log_likelihood(reference)
    assert saved["p_star"]["entropy_rate"] == pytest.approx(float(-total.sum() / units.sum()))
    teacher = LlamaForCausalLM.from_pretrained(out / "teacher").eval()
    adapter = CausalLMAdapter(teacher, hmm_tokenizer(p_star.config), prompt="<s>", progress=False)
    total, units = adapter.log_likelihood(reference)
    assert saved["teacher"]["recall"] == pytest.approx(float(total.sum() / units.sum()), abs=1e-6)

    # A second run reuses the teacher, every dataset and every scored student: the same numbers.
    again = recipe.main(argv)
    assert again["timing"]["models_reused_from_cache"] == 4
    assert again["taus"] == results["taus"] and again["teacher"] == results["teacher"]
    # Another config in the same output_dir is refused before any work, naming what differs.
    with pytest.raises(ValueError, match=r"another config \(learning_rate: 0.001 -> 0.002\).*--retrain"):
        recipe.main([*argv, "--learning_rate", "2e-3"])


def test_miniature_refuses_a_sweep_without_the_direct_student(tmp_path):
    recipe = load_recipe("miniature_lm")
    with pytest.raises(ValueError, match="taus must include 1.0"):
        recipe.main([*TINY, "--taus", "0.5", "--output_dir", str(tmp_path / "o"), "--results_dir", str(tmp_path)])
