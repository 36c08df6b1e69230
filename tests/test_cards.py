"""Cards after the split: the dataset card through huggingface_hub, one citation, one student-init vocabulary.

The expected dataset cards below were written by hand from what the hand-built YAML of `hf_kd.dataset_card` wrote
before it became a `huggingface_hub.DatasetCard` (same input, same metadata, same text).
"""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import make_llama
from huggingface_hub import DatasetCard, ModelCard

from hf_kd.citation import CITATION, PAPER_REFERENCE, PAPER_URL
from hf_kd.dataset_card import dataset_statistics, write_dataset_card
from hf_kd.hub import prepare_dataset_folder
from hf_kd.model_card import DistillationResults, load_results_file, render_model_card, render_model_card_from_json
from hf_kd.students import STUDENT_INITS, init_student

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"

# ------------------------------------------------------------------------------------------------- dataset card
TABLE = pa.table(
    {
        "sample_id": [0, 1],
        "num_tokens": [3, 5],
        "teacher_logprob": [-1.5, -2.5],
        "sampling_logprob": [-1.0, float("nan")],
        "mean_selectivity": [2.0, 2.0],
        "finished": [True, False],
    }
)
SELECTIVITY_RUN = {
    "teacher": "org/teacher",
    "revision": "main",
    "backend": "transformers",
    "num_samples": 2,
    "prompt": "The",
    "num_prompts": 1,
    "selectivity": 2.0,
    "temperature": 0.5,
    "target_entropy": None,
    "top_k": 5,
    "top_p": 0.9,
    "max_new_tokens": 5,
    "seed": 3,
    "store_topk": 4,
    "eos_token_ids": [2],
    "command": "hf-kd generate org/teacher",
}
ENTROPY_RUN = {
    "teacher": "org/teacher",
    "revision": None,
    "backend": "vllm",
    "num_samples": 2,
    "prompt": None,
    "num_prompts": 7,
    "selectivity": None,
    "temperature": None,
    "target_entropy": 1.25,
    "top_k": None,
    "top_p": None,
    "max_new_tokens": 8,
    "seed": 0,
    "store_topk": None,
    "command": "hf-kd generate x",
    "extra": float("inf"),
}
STATS = {
    "num_samples": 2,
    "num_tokens": 8,
    "mean_tokens_per_sample": 4.0,
    "max_tokens_per_sample": 5,
    "fraction_finished_with_eos": 0.5,
    "teacher_logprob_per_token": -0.5,
    "sampling_logprob_per_token": "nan",
    "mean_selectivity": 2.0,
}
HEADER = {
    "tags": ["hf-kd", "knowledge-distillation", "synthetic", "teacher-samples"],
    "task_categories": ["text-generation"],
    "size_categories": ["n<1K"],
    "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
}
PAPER = (
    'Sungmin Cha and Kyunghyun Cho, "Why Knowledge Distillation Works in Generative Models: A Minimal Working '
    'Explanation", NeurIPS 2025 (arXiv:2505.13111)'
)
COLUMNS = (
    "Columns: `sample_id`, `prompt`, `completion` (text, special tokens skipped), `completion_ids` (ending with EOS "
    "when the teacher stopped: EOS is kept, unlike the paper's scripts), `num_tokens`, `finished`, `teacher_logprob` "
    "(sum under the unsharpened teacher), `sampling_logprob` (sum under the sampling distribution"
)
TAIL = (
    "50.0% of the samples ended with EOS; mean length 4.0 tokens; teacher log-prob -0.5 nats/token.\n\n"
    "Sample `i` depends only on `(seed, i)`: the dataset is identical across resumes and process counts.\n\n"
)
EXPECTED = {
    "selectivity": (
        SELECTIVITY_RUN,
        {**HEADER, "hf_kd": {**SELECTIVITY_RUN, **STATS}},
        "\n# Teacher samples of org/teacher\n\n"
        "2 completions (8 tokens) sampled from `org/teacher` (revision `main`) for 'The' at selectivity 2.0 "
        "(temperature 0.5), top-k 5, top-p 0.9, at most 5 new tokens, seed 3. Made with hf_kd for sequence-level "
        f"knowledge distillation ({PAPER}).\n\n"
        f"{COLUMNS}), `mean_selectivity`, `topk_ids` / `topk_logprobs` (the teacher's top-4 per token, unsharpened, "
        "not renormalised: the tail mass is 1 - sum exp).\n\n"
        f"{TAIL}```bash\nhf-kd generate org/teacher\n```\n",
    ),
    "entropy": (
        ENTROPY_RUN,
        {**HEADER, "hf_kd": {**ENTROPY_RUN, "extra": "inf", **STATS}},
        "\n# Teacher samples of org/teacher\n\n"
        "2 completions (8 tokens) sampled from `org/teacher` (revision `None`) for '7 prompts' at target entropy 1.25 "
        "nats/token (mean selectivity solved: 2.0), top-k None, top-p None, at most 8 new tokens, seed 0. Made with "
        f"hf_kd for sequence-level knowledge distillation ({PAPER}).\n\n"
        f"{COLUMNS}; NaN here: the vLLM backend returns the teacher's log-probs only), `mean_selectivity`.\n\n"
        f"{TAIL}```bash\nhf-kd generate x\n```\n",
    ),
}


@pytest.mark.parametrize("run", sorted(EXPECTED))
def test_dataset_card_has_the_metadata_and_text_of_before(run, tmp_path):
    generation, metadata, text = EXPECTED[run]
    assert dataset_statistics(TABLE) == STATS
    path = write_dataset_card(str(tmp_path), generation, TABLE)
    card = DatasetCard.load(path, ignore_metadata_errors=False)
    assert card.data.to_dict() == metadata
    assert card.text == text
    raw = Path(path).read_text(encoding="utf-8")
    assert yaml.safe_load(raw.split("---\n")[1]) == metadata  # what load_dataset and the Hub read
    assert not list(tmp_path.glob("*.tmp-*"))  # written through a temporary file, then renamed


def test_pushed_dataset_card_parses_with_the_same_metadata(tmp_path):
    src = tmp_path / "samples"
    (src / "data").mkdir(parents=True)
    pq.write_table(TABLE, src / "data" / "train-00000-of-00001.parquet")
    write_dataset_card(str(src), SELECTIVITY_RUN, TABLE)
    files = prepare_dataset_folder(src, tmp_path / "upload")
    assert files == ["README.md", "data/train-00000-of-00001.parquet"]
    _, metadata, text = EXPECTED["selectivity"]
    pushed = DatasetCard.load(tmp_path / "upload" / "README.md", ignore_metadata_errors=False)
    assert pushed.data.to_dict() == metadata and pushed.text == text


# ----------------------------------------------------------------------------------------------------- citation
def test_the_paper_is_written_once_in_the_package():
    title = "Why Knowledge Distillation Works in Generative Models"
    holders = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "hf_kd").rglob("*.py") if title in p.read_text())
    assert holders == ["hf_kd/citation.py"]
    assert PAPER_URL == "https://arxiv.org/abs/2505.13111" and PAPER_REFERENCE == PAPER


def test_readme_and_metric_cite_the_constant():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Citation\s+```bibtex\n(.*?)\n```", readme, re.S)
    assert block and block.group(1) == CITATION
    # the `evaluate` metric script is loaded from its file: read what its MetricInfo is given
    script = ROOT / "hf_kd/metrics/evaluate/kd_precision_recall/kd_precision_recall.py"
    tree = ast.parse(script.read_text())
    info = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "MetricInfo")
    citation = next(k.value for k in info.keywords if k.arg == "citation")
    assert isinstance(citation, ast.Name) and citation.id == "CITATION"
    assert "from hf_kd.citation import CITATION" in script.read_text()


# ------------------------------------------------------------------------------------------ student init names
def test_recipe_configs_and_readme_use_the_student_init_vocabulary():
    used = {yaml.safe_load(p.read_text()).get("student_init") for p in (ROOT / "recipes/configs").glob("*.yaml")}
    assert used - {None} <= set(STUDENT_INITS) and len(used - {None}) >= 2
    documented = re.search(r"`student_init: ([a-z_ |]+)`", (ROOT / "README.md").read_text()).group(1)
    assert tuple(documented.split(" | ")) == STUDENT_INITS == ("pretrained", "scratch", "slice")


OLD_RESULTS = {  # as recipes/smollm2_kd.py wrote before the vocabulary was unified
    "student_init": SMOLLM2,
    "teacher": SMOLLM2,
    "selectivity": 2.0,
    "completion_source": "teacher",
    "loss_type": "nll",
    "num_train_steps": 24,
    "num_train_samples": 96,
    "seeds": [0],
}


@pytest.mark.parametrize(
    ("old", "new", "sentence"),
    [
        ("layer_slice", "slice", f"| Student initialisation | a layer slice of [`{SMOLLM2}`]"),
        (
            "from_scratch",
            "scratch",
            f"| Student initialisation | from scratch (random weights, architecture of [`{SMOLLM2}`]",
        ),
    ],
)
def test_old_results_files_still_render(old, new, sentence, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({**OLD_RESULTS, "student_init_method": old}))
    results = DistillationResults.from_json(path)
    assert results.student_init_method == new
    card = render_model_card_from_json(path)
    assert sentence in card.text
    assert card.data.distillation["student_init_method"] == new
    assert card.data.base_model == (None if new == "scratch" else SMOLLM2)  # random weights: nothing fine-tuned
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"rows": [{"name": "a", **OLD_RESULTS, "student_init_method": old}]}))
    assert str(render_model_card_from_json(path)) == str(render_model_card(results))
    assert load_results_file(sweep) == {"a": results}
    rewritten = results.to_json(tmp_path / "new.json")
    assert json.loads(Path(rewritten).read_text())["student_init_method"] == new  # written in today's vocabulary
    assert DistillationResults.from_json(rewritten) == results


def test_old_names_are_refused_outside_results_files():
    with pytest.raises(ValueError, match="'layer_slice' is the old name of 'slice'"):
        DistillationResults(student_init=SMOLLM2, student_init_method="layer_slice")
    with pytest.raises(ValueError, match="student_init='layer_slice' is unknown"):
        init_student("layer_slice", teacher=make_llama(25))


def test_every_student_init_round_trips_from_config_to_card(tmp_path):
    teacher = make_llama(25, layers=2)
    for name in STUDENT_INITS:
        if name == "pretrained":
            teacher.save_pretrained(tmp_path / "teacher")
            student = init_student(name, name_or_path=str(tmp_path / "teacher"))
        else:
            student = init_student(name, teacher=teacher, num_layers=1)
        assert student.config.num_hidden_layers == (2 if name == "pretrained" else 1)
        results = DistillationResults(student_init=SMOLLM2, student_init_method=name)
        path = results.to_json(tmp_path / f"{name}.json")
        card = ModelCard(str(render_model_card_from_json(path)))
        assert card.data.distillation["student_init_method"] == name


def test_rendering_a_card_loads_no_ml_library(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({**OLD_RESULTS, "student_init_method": "layer_slice"}))
    script = (
        "import json, sys\n"
        "from hf_kd.model_card import render_model_card_from_json\n"
        f"assert 'layer slice' in render_model_card_from_json({str(path)!r}).text\n"
        "print(json.dumps([m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
