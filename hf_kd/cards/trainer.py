"""What a `hf_kd.DistillationTrainer` records for its model card: results read from its args, models and state."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Any

from ..sanitize import current_command
from .render import render_model_card
from .schema import DistillationResults

__all__ = ["framework_versions", "name_or_path", "results_from_trainer", "write_trainer_model_card"]


def framework_versions() -> dict[str, str]:
    """Installed versions of hf_kd and the libraries it trains with (read from package metadata, nothing imported)."""
    out = {}
    for dist in ("hf-kd", "transformers", "trl", "torch", "peft", "datasets", "accelerate", "huggingface_hub"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def name_or_path(model) -> str | None:
    """``config._name_or_path`` of a model (unwrapping DDP/DeepSpeed), or `None`."""
    model = getattr(model, "module", model)
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", None) or None


def _loss_params(args) -> dict[str, Any]:
    params = {}
    if args.loss_type == "generalized_jsd":
        params["beta"] = args.beta
    if args.loss_type.startswith("skew_"):
        params["skew_alpha"] = args.skew_alpha
    if getattr(args, "temperature", 1.0) != 1.0:  # divides both sides' logits (the teacher's on top of selectivity)
        params["temperature"] = args.temperature
    return params


def results_from_trainer(trainer, **overrides) -> DistillationResults:
    """[`DistillationResults`] of a (trained) `hf_kd.DistillationTrainer`, read from its args, models and state.

    No evaluation is run: pass `precision=...` etc. through `overrides` (any schema field) when you have them.
    """
    args = trainer.args
    student = trainer.model
    base = getattr(getattr(student, "peft_config", {}).get("default"), "base_model_name_or_path", None)
    state = trainer.state
    world = getattr(args, "world_size", 1) or 1
    steps = int(state.global_step)
    fields = {
        "student_init": base or name_or_path(student) or "unknown",
        "teacher": name_or_path(getattr(trainer, "teacher_model", None)),
        "adapter": "PEFT adapter" if base else None,
        "selectivity": None if args.target_entropy is not None else args.selectivity,
        "target_entropy": args.target_entropy,
        "per_token_selectivity": args.per_token_selectivity,
        "completion_source": args.completion_source,
        "loss_type": args.loss_type,
        "loss_params": _loss_params(args),
        "num_train_steps": steps,
        "num_train_tokens": int(state.num_input_tokens_seen) or None,
        "num_train_samples": steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * world,
        "seeds": [args.seed],
        "command": current_command(),
        "model_name": (args.hub_model_id or "").split("/")[-1] or None,
        "framework_versions": framework_versions(),
    }
    fields.update(overrides)
    return DistillationResults(**fields)


def write_trainer_model_card(
    trainer,
    output_dir: str | os.PathLike | None = None,
    results: DistillationResults | dict[str, Any] | None = None,
    model_name: str | None = None,
    dataset_name: str | list[str] | None = None,
    tags: str | list[str] | None = None,
) -> str | None:
    """Write ``README.md`` (our card) for `trainer`: what `DistillationTrainer.create_model_card` calls.

    Args:
        trainer: an `hf_kd.DistillationTrainer` (its args, models and state describe the run).
        output_dir (`str`, *optional*): where to write; defaults to ``trainer.args.output_dir``.
        results ([`DistillationResults`] or `dict`, *optional*): use these instead of reading the trainer
            (e.g. with precision and recall filled in).
        model_name, dataset_name, tags: as in `transformers.Trainer.create_model_card`.

    Returns:
        `str` or `None`: the README path, or `None` on processes other than the main one (nothing written).
    """
    if hasattr(trainer, "is_world_process_zero") and not trainer.is_world_process_zero():
        return None
    if results is None:
        overrides = {"model_name": model_name} if model_name else {}
        if dataset_name:
            overrides["datasets"] = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name)
        results = results_from_trainer(trainer, **overrides)
    tags = [tags] if isinstance(tags, str) else list(tags or [])
    card = render_model_card(results, repo_id=trainer.args.hub_model_id, tags=tags)
    path = Path(output_dir or trainer.args.output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return str(path)
