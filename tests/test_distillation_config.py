"""hf_kd.DistillationConfig: CPU-sane defaults and validation of the new fields."""

import json
import math
import warnings

import pytest
import torch

from hf_kd.distillation_config import DistillationConfig


def make(tmp_path, **kwargs):
    return DistillationConfig(str(tmp_path), report_to="none", **kwargs)


def test_cpu_defaults_without_warnings(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any deprecation or future warning fails the test
        args = make(tmp_path)
    assert args.bf16 is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert args.gradient_checkpointing is False and args.activation_checkpointing is False
    assert (args.selectivity, args.target_entropy, args.completion_source) == (1.0, None, "student")
    assert (args.loss_type, args.skew_alpha, args.loss_chunk_size) == ("generalized_jsd", 0.1, None)
    assert args.topk_tail == "bucket"
    assert args.dataloader_pin_memory is torch.cuda.is_available()
    # TRL's own fields keep their meaning and defaults
    assert (args.temperature, args.beta, args.remove_unused_columns) == (1.0, 1.0, False)


def test_explicit_checkpointing_is_kept(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make(tmp_path, activation_checkpointing=True).gradient_checkpointing is True


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"selectivity": 0.0}, "selectivity must be > 0"),
        ({"selectivity": -2.0}, "selectivity must be > 0"),
        ({"selectivity": 1e39, "loss_type": "nll"}, "beyond float32's range"),
        ({"selectivity": 1e100}, "beyond float32's range"),
        ({"selectivity": float("inf"), "loss_type": "forward_kl"}, "only works with loss_type='nll'"),
        ({"selectivity": 2.0, "target_entropy": 1.0}, "both set.*Keep selectivity=1.0"),
        ({"target_entropy": 0.0}, "target_entropy must be > 0"),
        ({"target_entropy": -1.0}, "target_entropy must be > 0"),
        ({"per_token_selectivity": True}, "needs target_entropy"),
        ({"loss_type": "kl"}, "loss_type='kl' is unknown"),
        ({"completion_source": "human"}, "completion_source='human' is unknown"),
        ({"completion_source": {"teacher": 0.5, "oracle": 0.5}}, r"unknown keys \['oracle'\]"),
        ({"completion_source": {"teacher": 0.5, "student": 0.4}}, "sum to 1"),
        ({"completion_source": {"teacher": 1.5, "student": -0.5}}, "sum to 1"),
        ({"completion_source": {}}, "non-empty dict"),
        ({"skew_alpha": 1.0}, r"skew_alpha must be in \[0, 1\)"),
        ({"loss_chunk_size": 0}, "loss_chunk_size must be >= 1"),
        ({"loss_type": "nll"}, "no teacher signal"),
        ({"beta": 1.5}, r"beta must be in \[0.0, 1.0\]"),  # TRL's own check still runs
    ],
)
def test_invalid_values_raise_with_the_fix(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(tmp_path, **kwargs)


def test_mixture_from_json_string(tmp_path):
    args = make(tmp_path, completion_source=json.dumps({"teacher": 0.25, "dataset": 0.75}), loss_type="nll")
    assert args.completion_source == {"teacher": 0.25, "dataset": 0.75}
    assert args.source_probabilities() == {"teacher": 0.25, "dataset": 0.75}
    assert make(tmp_path, completion_source="teacher", loss_type="nll").source_probabilities() == {"teacher": 1.0}


def test_valid_sharpening_settings(tmp_path):
    assert make(tmp_path, selectivity=4.0).selectivity == 4.0
    assert math.isinf(
        make(tmp_path, selectivity=float("inf"), loss_type="nll", completion_source="teacher").selectivity
    )
    args = make(tmp_path, target_entropy=0.7, per_token_selectivity=True)
    assert (args.target_entropy, args.per_token_selectivity) == (0.7, True)


def test_parses_from_the_command_line(tmp_path):
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(DistillationConfig).parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--selectivity",
            "2",
            "--completion_source",
            '{"teacher": 1.0}',
            "--loss_type",
            "forward_kl",
            "--report_to",
            "none",
        ]
    )
    assert (args.selectivity, args.completion_source, args.loss_type) == (2.0, {"teacher": 1.0}, "forward_kl")
