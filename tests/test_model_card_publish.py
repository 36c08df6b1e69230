"""Cards a Hub user can publish: what huggingface_hub's own metadata checks accept, and what the Hub shows."""

import argparse
import json
import re

import pytest
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from huggingface_hub.utils import validate_repo_id

from hf_kd.model_card import PAPER_URL, DistillationResults, add_card_arguments, card_from_args, render_model_card

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


def quickstart_results(**overrides) -> dict:
    """What the offline quickstart records for one student (a 24-step slice of SmolLM2, its own teacher)."""
    results = {
        "student_init": SMOLLM2,
        "student_init_method": "layer_slice",
        "teacher": SMOLLM2,
        "selectivity": 2.0,
        "completion_source": "teacher",
        "loss_type": "nll",
        "train_prompts": "the prompt 'The', 96 copies",
        "num_train_steps": 24,
        "num_train_samples": 96,
        "precision": -8.0122,
        "precision_ci": [-8.2565, -7.7584],
        "recall": -7.8517,
        "recall_ci": [-8.1304, -7.5684],
        "reference_model": SMOLLM2,
        "num_eval_samples": 64,
        "seeds": [0],
        "command": "python recipes/smollm2_kd.py --config recipes/configs/quickstart.yaml",
    }
    results.update(overrides)
    return results


def published(card: ModelCard, tmp_path) -> tuple[ModelCard, dict]:
    """Save as the Hub stores it, then read it back with huggingface_hub's strict loaders."""
    path = tmp_path / "README.md"
    card.save(path)
    return ModelCard.load(path, ignore_metadata_errors=False), metadata_load(path)


def test_quickstart_card_is_publishable(tmp_path):
    card, meta = published(render_model_card(quickstart_results(), repo_id="me/smollm2-kd"), tmp_path)
    assert meta["license"] == "apache-2.0" and meta["language"] == ["en"]  # SmolLM2's, stated by its authors
    validate_repo_id(meta["base_model"])  # huggingface_hub's own repo-id check (raises when invalid)
    validate_repo_id(meta["distillation"]["teacher"])
    assert meta["base_model"] == SMOLLM2 and meta["distillation"]["teacher"] == SMOLLM2
    assert "model-index" not in meta  # no Hub dataset holds the evaluation samples
    evaluation = meta["distillation"]["evaluation"]
    assert (evaluation["precision"], evaluation["recall"]) == (-8.0122, -7.8517)
    assert evaluation["precision_ci"] == [-8.2565, -7.7584] and evaluation["num_samples"] == 64
    text = card.text
    assert (
        f"| Training data | prompts: the prompt 'The', 96 copies; completions: sampled by the teacher "
        f"[`{SMOLLM2}`](https://huggingface.co/{SMOLLM2}) during training; 96 training samples |"
    ) in text
    assert "## Intended use and limitations" in text
    assert "A demonstration-sized run (24 steps, 96 samples)" in text
    assert "The teacher was sharpened" in text
    assert f"({PAPER_URL})" in text and "| License | `apache-2.0` |" in text


def test_interval_bounds_share_the_value_decimals(tmp_path):
    card = render_model_card(quickstart_results(precision=-9.4185, precision_ci=[-9.5963, -9.22]))
    assert "| Precision | -9.418 | [-9.596, -9.220] |" in card.text
    for value, low, high in re.findall(r"\| (-?[\d.]+) \| \[(-?[\d.]+), (-?[\d.]+)\] \|", card.text):
        assert len({len(x.split(".")[1]) for x in (value, low, high)}) == 1


def test_model_index_for_a_hub_dataset_names_its_source(tmp_path):
    fields = quickstart_results(eval_dataset="HuggingFaceTB/smoltalk")
    _, meta = published(render_model_card(fields, repo_id="me/smollm2-kd"), tmp_path)
    model_name, results = model_index_to_eval_results(meta["model-index"])  # huggingface_hub's parser
    assert model_name == "smollm2-kd" and {r.metric_type for r in results} == {"kd_precision", "kd_recall"}
    for result in results:
        validate_repo_id(result.dataset_type)
        assert result.dataset_type == "HuggingFaceTB/smoltalk"
        assert result.source_url == PAPER_URL and "Cha & Cho" in result.source_name


@pytest.mark.parametrize(
    "overrides, license_id, language",
    [
        ({}, "apache-2.0", ["en"]),
        ({"license": "mit", "language": ["en", "fr"]}, "mit", ["en", "fr"]),  # given: kept as is
        ({"teacher": "someone/unknown-teacher"}, None, None),  # the teacher's terms are unknown: nothing claimed
        ({"student_init_method": "from_scratch", "student_init": "org/arch"}, "apache-2.0", ["en"]),  # teacher's
    ],
)
def test_license_and_language_are_only_claimed_when_known(tmp_path, overrides, license_id, language):
    card, meta = published(render_model_card(quickstart_results(**overrides)), tmp_path)
    assert meta.get("license") == license_id and meta.get("language") == language
    if license_id is None:
        assert "| License | not recorded: set `license` before publishing |" in card.text


def test_bad_language_is_refused():
    with pytest.raises(ValueError, match="language must be a list of ISO 639-1 codes"):
        DistillationResults.from_dict(quickstart_results(language=[""]))


def sweep_file(tmp_path):
    rows = [
        {"name": f"selectivity_{b:g}", **DistillationResults.from_dict(quickstart_results(selectivity=b)).to_dict()}
        for b in (1.0, 2.0)
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"teacher": "offline:SmolLM2-135M-Instruct", "command": "c", "rows": rows}))
    return path


def test_card_command_renders_a_sweep(tmp_path, capsys):
    path = sweep_file(tmp_path)
    parser = add_card_arguments(argparse.ArgumentParser())
    cards = card_from_args(parser.parse_args([str(path), "-o", str(tmp_path / "cards"), "--repo-id", "me/kd"]))
    assert sorted(cards) == ["selectivity_1", "selectivity_2"]
    for name, beta in (("selectivity_1", 1.0), ("selectivity_2", 2.0)):
        card = ModelCard.load(tmp_path / "cards" / name / "README.md")
        assert card.data.distillation["selectivity"] == beta and card.data.model_name == f"kd-{name}"
        assert f'model="me/kd-{name}"' in card.text
    one = card_from_args(parser.parse_args([str(path), "--run", "selectivity_2"]))
    assert list(one) == ["selectivity_2"] and "selectivity beta = 2" in capsys.readouterr().out.split("model card")[-1]
    with pytest.raises(ValueError, match=r"--run 'selectivity_3' is not in .*'selectivity_1', 'selectivity_2'"):
        card_from_args(parser.parse_args([str(path), "--run", "selectivity_3"]))
