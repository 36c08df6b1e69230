"""The shipped `evaluate` metrics load by path offline in a fresh process, match the Python API and combine."""

import json
import os
import subprocess
import sys

import pytest

import hf_kd.metrics as M

SCRIPT = r"""
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
import evaluate
import hf_kd.metrics as M
from conftest import make_llama, make_tokenizer

tok = make_tokenizer()
ref, stu = make_llama(len(tok), seed=0, hidden=32, layers=2), make_llama(len(tok), seed=1)
preds = ["cat sat on the mat", "dog ran fast", "was very happy", "big red cat", "sat on a mat", "dog was sad"]
refs = ["dog sat on the mat", "cat ran slow", "was very sad", "small blue dog", "ran on a mat", "cat was happy"]
vocab = tok.get_vocab()
bow = lambda texts: torch.stack([torch.bincount(torch.tensor(tok(t)["input_ids"]), minlength=len(vocab)).double()
                                 for t in texts])

pr = evaluate.load(M.metric_path("kd_precision_recall"), keep_in_memory=True)
emb = evaluate.load(M.metric_path("kd_embedding_precision_recall"), keep_in_memory=True)
kw = dict(student=(stu, tok), reference=(ref, tok), prompt="the", n_boot=100)
alone = pr.compute(predictions=preds, references=refs, **kw)
direct = M.precision_recall(M.CausalLMAdapter(stu, tok), M.CausalLMAdapter(ref, tok), student_samples=preds,
                            reference_samples=refs, prompt="the", n_boot=100)
knn = M.knn_precision_recall(bow(refs), bow(preds), k=2, warn=False)
combined = evaluate.combine([pr, emb]).compute(predictions=preds, references=refs, embedder=bow, k=2, **kw)
print(json.dumps({"alone": alone, "combined": combined, "knn": knn,
                  "direct": {k: direct[k] for k in ("precision", "recall", "precision_ci", "recall_ci")}}))
"""


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("hf_home")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "HF_HOME": str(home)}
    env.pop("HF_DATASETS_CACHE", None)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, tests_dir], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_metric_path_points_to_shipped_scripts():
    for name in ("kd_precision_recall", "kd_embedding_precision_recall"):
        path = M.metric_path(name)
        assert os.path.isabs(path) and os.path.isfile(os.path.join(path, f"{name}.py"))
    with pytest.raises(ValueError, match="kd_precision_recall"):
        M.metric_path("precision_recall")


def test_likelihood_metric_matches_python_api(offline_run):
    alone, direct = offline_run["alone"], offline_run["direct"]
    for key in ("precision", "recall"):
        assert alone[key] == pytest.approx(direct[key], abs=1e-9)
        assert alone[f"{key}_ci"] == pytest.approx(direct[f"{key}_ci"])
    assert alone["precision_num_samples"] == alone["recall_num_samples"] == 6 and alone["unit"] == "token"


def test_combine_runs_both_metrics(offline_run):
    combined, knn, alone = offline_run["combined"], offline_run["knn"], offline_run["alone"]
    for key in ("density", "coverage", "k", "num_reference", "num_student"):
        assert combined[key] == pytest.approx(knn[key])
    assert combined["k"] == 2 and 0.0 < knn["coverage"] <= 1.0
    # evaluate.combine prefixes the keys both metrics return with the metric's name
    for key in ("precision", "recall"):
        assert combined[f"kd_precision_recall_{key}"] == pytest.approx(alone[key], abs=1e-9)
        assert combined[f"kd_embedding_precision_recall_{key}"] == pytest.approx(knn[key])
    assert combined["precision_ci"] == pytest.approx(alone["precision_ci"])
