"""The paper's three-level language-model experiment in miniature, with a known p*: both sides of the trade-off.

    python recipes/miniature_lm.py --config recipes/configs/miniature_hmm.yaml

p* is a hidden Markov model over 35 token ids (`hf_kd.models.hmm.long_tail_hmm`: a head and a long, learnable tail;
its docstring says why), so log p*(x) is exact and its samples are free. As in the paper, everything is trained
from scratch: a teacher transformer on samples of p*; for each seed and each temperature tau < 1, a student (a
smaller transformer) on samples of the teacher at tau (`hf_kd.generate_distillation_dataset`, selectivity 1 / tau);
and the direct student p''(D) (tau = 1 row), the same size and budget, on fresh samples of p*. All training is
`hf_kd.DistillationTrainer` with ``completion_source="dataset"`` and the NLL loss (sequence-level KD). Precision
E_p''[log p*] and recall E_p*[log p''] come from `hf_kd.metrics.precision_recall` (per token, the BOS prompt not
scored), recall on one set of p* samples shared by every model, drawn apart from all training data.

Per seed, the students at every tau share their initial weights (so the differences from the direct student are
paired), and a seed changes the initial weights, the training samples and their order. The teacher is one model.
Resumable: the teacher, every dataset and every scored student are cached under `output_dir`, which records the config
it was made with (`hf_kd.run_record`): a rerun with another config is refused (or, with ``--retrain``, starts over)
rather than mixing two experiments; `taus` and `seeds` may change (runs are cached one by one). Writes
`results.json` and `precision_recall_vs_tau.png` to `results_dir`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field

import datasets
import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PrinterCallback
from trl import TrlParser

from hf_kd import CausalLMAdapter, DistillationConfig, DistillationTrainer, precision_recall
from hf_kd.generation import generate_distillation_dataset
from hf_kd.metrics import compare_to_baseline, seed_t_interval
from hf_kd.models.hmm import hmm_tokenizer, long_tail_hmm
from hf_kd.reporting import format_table
from hf_kd.run_record import check_run_dir, write_run_config

PROMPT = "<s>"  # every sequence is a completion of BOS
# Seeds of the random streams, apart from each other and from the run seeds.
TEACHER_DATA_SEED, REFERENCE_SEED, DIRECT_DATA_SEED, TEACHER_SAMPLES_SEED = 1_000_003, 987_654, 20_000, 30_000
# What the cached models and datasets depend on: everything but the selection of runs and where results go.
NOT_IDENTITY = ("taus", "seeds", "results_dir", "retrain")
TRAINING_IDENTITY = (
    "completion_source",
    "loss_type",
    "max_completion_length",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "max_grad_norm",
    "optim",
)


@dataclass
class MiniatureArguments:
    taus: list[float] = field(default_factory=lambda: [0.6, 0.8, 0.9, 1.0], metadata={"help": "1.0 = direct."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    p_star_seed: int = field(default=0, metadata={"help": "Seed of p*'s construction (long_tail_hmm)."})
    max_new_tokens: int = field(default=32, metadata={"help": "Length cap of every sample (p*, teacher, students)."})
    teacher_hidden_size: int = 64
    teacher_num_layers: int = 2
    teacher_num_train_samples: int = 8000
    teacher_num_train_epochs: float = 3.0
    student_hidden_size: int = 48
    student_num_layers: int = 2
    num_train_samples: int = field(default=2000, metadata={"help": "Training sequences of every student."})
    eval_num_samples: int = field(default=1000, metadata={"help": "Samples per side for precision and recall."})
    generation_batch_size: int = 500
    num_threads: int = field(
        default=1, metadata={"help": "torch threads: one is fastest for models this small (no sync between threads)."}
    )
    results_dir: str = field(default="docs/evidence/miniature", metadata={"help": "Where results and figure go."})
    retrain: bool = field(
        default=False, metadata={"help": "Clear an output_dir made with another config instead of refusing it."}
    )


def transformer(vocab_size: int, hidden: int, layers: int, seed: int) -> LlamaForCausalLM:
    """A Llama-architecture causal LM initialised from scratch with `seed` (4 heads, MLP 4x, untied head)."""
    sizes = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers)
    heads = dict(num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    config = LlamaConfig(**sizes, **heads, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def p_star_dataset(p_star, tokenizer, n: int, max_new_tokens: int, seed: int, path: str):
    """`n` samples of p*, in the columns `hf_kd.generate_distillation_dataset` writes (cached at `path`)."""
    from datasets import Dataset, load_from_disk

    if os.path.exists(path):
        return load_from_disk(path)
    samples = p_star.sample(n, max_new_tokens=max_new_tokens, generator=torch.Generator().manual_seed(seed))
    eos = p_star.config.eos_token_id
    dataset = Dataset.from_dict(
        {
            "prompt": [PROMPT] * n,
            "completion": tokenizer.batch_decode(samples, skip_special_tokens=True),
            "completion_ids": samples,
            "finished": [bool(s) and s[-1] == eos for s in samples],
        }
    )
    shutil.rmtree(f"{path}.tmp", ignore_errors=True)
    dataset.save_to_disk(f"{path}.tmp")
    os.replace(f"{path}.tmp", path)  # a killed run leaves no half-written dataset to resume from
    return dataset


def train(model, dataset, tokenizer, training_args, output_dir: str, seed: int, **overrides):
    """Train `model` with `hf_kd.DistillationTrainer` on dataset completions with the NLL loss; return it in eval."""
    args = dataclasses.replace(
        training_args, output_dir=output_dir, run_name=os.path.basename(output_dir), seed=seed, **overrides
    )
    trainer = DistillationTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # the outer progress bar reports progress; no per-run log dicts
    trainer.train()
    return trainer.model.eval(), trainer.state


def score(model, tokenizer, p_star, reference, args: MiniatureArguments, seed: int) -> dict:
    """`precision_recall` of `model` against p* (token units), per-sequence arrays kept as lists."""
    adapter = CausalLMAdapter(model, tokenizer, prompt=PROMPT, batch_size=args.generation_batch_size, progress=False)
    result = precision_recall(
        adapter,
        p_star,
        num_samples=args.eval_num_samples,
        reference_samples=reference,
        sample_kwargs={"max_new_tokens": args.max_new_tokens, "return_tokens": True},
        seed=seed,
    )
    return {
        k: v.tolist() if hasattr(v, "tolist") else list(v) if isinstance(v, tuple) else v for k, v in result.items()
    }


def summarise(runs: list[dict], taus: list[float], seeds: list[int]) -> list[dict]:
    """Per tau: precision and recall over seeds, and the paired per-seed differences from the direct student.

    ``precision_vs_direct = mean_s (P(tau, s) - P(1, s))`` with a 95 % t-interval over the seeds ``s``
    (`hf_kd.metrics.compare_to_baseline`; NaN bounds with one seed); the same for recall. The direct row's
    differences are zero by definition. ``train_samples_precision``: mean log p* per token of the students'
    training samples (the teacher at tau; p* itself for the direct student). Adds ``bootstrap_vs_direct`` (the
    bootstrap over sequences, recall paired on the shared reference samples) to every run with tau < 1.
    """
    comparison = compare_to_baseline([_arrays(r) for r in runs], "tau", 1.0)
    for r in runs:
        if (r["tau"], r["seed"]) in comparison["bootstrap"]:
            r["bootstrap_vs_direct"] = comparison["bootstrap"][r["tau"], r["seed"]]
    by_key = {(r["tau"], r["seed"]): r for r in runs}
    rows = []
    for tau in taus:
        row = {"tau": tau, "selectivity": 1.0 / tau, "name": f"tau = {tau:g}" + (" (direct)" if tau == 1.0 else "")}
        for key in ("precision", "recall"):
            row[key] = seed_t_interval([by_key[tau, s][key] for s in seeds])
            paired = comparison["groups"][tau][key]
            row[f"{key}_vs_direct"] = {k: paired[k] for k in ("mean", "low", "high")}
            row[f"{key}_vs_direct_per_seed"] = paired["per_seed"]
        row["train_samples_precision"] = seed_t_interval([by_key[tau, s]["train_data_precision"] for s in seeds])
        rows.append(row)
    return rows


def plot(rows: list[dict], teacher: dict, p_star: dict, path: str) -> None:
    """Precision and recall against tau (means with 95 % intervals over seeds), teacher and p* as reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    taus = [r["tau"] for r in rows]
    for ax, key, label in ((axes[0], "precision", "E_p''[log p*]"), (axes[1], "recall", "E_p*[log p'']")):
        means = [r[key]["mean"] for r in rows]
        errs = [[m - r[key]["low"] for m, r in zip(means, rows)], [r[key]["high"] - m for m, r in zip(means, rows)]]
        ax.errorbar(taus, means, yerr=errs, fmt="o-", capsize=4, label="students (95 % CI over seeds)")
        ax.axhline(teacher[key], color="C1", ls="--", label="teacher p'")
        ax.axhline(-p_star["entropy_rate"], color="0.4", ls=":", label="p* on its own samples")
        ax.set_xlabel("teacher temperature tau (1 = direct student)")
        ax.set_ylabel(f"{key}: {label} per token")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Miniature LM (p* = HMM): distillation trades recall for precision")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: MiniatureArguments, training_args: DistillationConfig, command: str) -> dict:
    """The whole experiment (resumable); returns the results dict also written to ``results_dir/results.json``."""
    if 1.0 not in args.taus:
        raise ValueError(f"taus must include 1.0, the direct student the others are compared with (got {args.taus}).")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.num_threads)
    try:
        return _run(args, training_args, command)
    finally:
        torch.set_num_threads(threads)


def _run(args: MiniatureArguments, training_args: DistillationConfig, command: str) -> dict:
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    datasets.disable_progress_bars()
    out = training_args.output_dir
    identity = {k: v for k, v in dataclasses.asdict(args).items() if k not in NOT_IDENTITY}
    identity.update({k: getattr(training_args, k) for k in TRAINING_IDENTITY})
    check_run_dir(out, identity, retrain=args.retrain)  # refuses a folder of another config before any work
    write_run_config(out, identity)
    p_star = long_tail_hmm(seed=args.p_star_seed)
    tokenizer = hmm_tokenizer(p_star.config)
    reference = p_star.sample(
        args.eval_num_samples,
        max_new_tokens=args.max_new_tokens,
        generator=torch.Generator().manual_seed(REFERENCE_SEED),
    )
    bar = tqdm(total=1 + len(args.seeds) * len(args.taus), desc="miniature", unit="model")
    bar.set_postfix_str("teacher")
    teacher, teacher_scores = _teacher(args, training_args, p_star, tokenizer, reference)
    bar.update(1)
    runs, reused = [], 0
    for seed in args.seeds:
        for tau in args.taus:
            name = f"tau_{tau:g}_seed_{seed}"
            bar.set_postfix_str(name)
            path = os.path.join(out, "runs", name, "scores.json")
            if os.path.exists(path):
                reused += 1
            else:
                row = _student(args, training_args, p_star, tokenizer, teacher, reference, tau, seed, command)
                with open(path, "w") as f:
                    json.dump(row, f)
            with open(path) as f:
                runs.append(json.load(f))
            bar.update(1)
    bar.close()
    rows = summarise(runs, args.taus, args.seeds)
    timing = {"wall_s": time.perf_counter() - start_wall, "process_cpu_s": time.process_time() - start_cpu}
    results = _results(args, training_args, command, p_star, reference, teacher_scores, rows, runs)
    results["timing"] = {**timing, "models_reused_from_cache": reused}
    results["runs"] = [{k: v for k, v in r.items() if not k.endswith(("_log_likelihood", "_units"))} for r in runs]
    os.makedirs(args.results_dir, exist_ok=True)
    with open(os.path.join(args.results_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(rows, results["teacher"], results["p_star"], os.path.join(args.results_dir, "precision_recall_vs_tau.png"))
    print(format_summary(results))
    return results


def _teacher(args: MiniatureArguments, training_args, p_star, tokenizer, reference) -> tuple:
    """The teacher, trained on samples of p* (or loaded from ``output_dir/teacher``), and its scores (cached)."""
    out = training_args.output_dir
    teacher_dir = os.path.join(out, "teacher")
    if os.path.exists(os.path.join(teacher_dir, "tokenizer.json")):  # written after the weights
        teacher = LlamaForCausalLM.from_pretrained(teacher_dir).eval()
    else:
        data_dir = os.path.join(out, "data", "p_star_teacher")
        cap = args.max_new_tokens
        data = p_star_dataset(p_star, tokenizer, args.teacher_num_train_samples, cap, TEACHER_DATA_SEED, data_dir)
        vocab = p_star.config.vocab_size
        teacher = transformer(vocab, args.teacher_hidden_size, args.teacher_num_layers, seed=TEACHER_DATA_SEED)
        run_dir, epochs = os.path.join(out, "runs", "teacher"), args.teacher_num_train_epochs
        teacher, _ = train(teacher, data, tokenizer, training_args, run_dir, seed=0, num_train_epochs=epochs)
        teacher.save_pretrained(teacher_dir)
        tokenizer.save_pretrained(teacher_dir)
    teacher_path = os.path.join(out, "teacher_scores.json")
    if not os.path.exists(teacher_path):
        with open(teacher_path, "w") as f:
            json.dump(score(teacher, tokenizer, p_star, reference, args, seed=0), f)
    with open(teacher_path) as f:
        return teacher, json.load(f)


def _student(args, training_args, p_star, tokenizer, teacher, reference, tau: float, seed: int, command: str):
    """Train and score the student of (tau, seed): on fresh p* samples at tau = 1, on teacher samples otherwise."""
    out, cap, name = training_args.output_dir, args.max_new_tokens, f"tau_{tau:g}_seed_{seed}"
    if tau == 1.0:
        data_dir = os.path.join(out, "data", f"p_star_seed_{seed}")
        data = p_star_dataset(p_star, tokenizer, args.num_train_samples, cap, DIRECT_DATA_SEED + seed, data_dir)
    else:
        data = generate_distillation_dataset(
            teacher,
            tokenizer,
            os.path.join(out, "data", f"teacher_tau_{tau:g}_seed_{seed}"),
            args.num_train_samples,
            prompt=PROMPT,
            selectivity=1.0 / tau,
            max_new_tokens=cap,
            batch_size=args.generation_batch_size,
            seed=TEACHER_SAMPLES_SEED + seed,
            progress=False,
            command=command,
        )
    student = transformer(p_star.config.vocab_size, args.student_hidden_size, args.student_num_layers, seed=seed)
    student, state = train(student, data, tokenizer, training_args, os.path.join(out, "runs", name), seed)
    row = {"tau": tau, "seed": seed, "num_train_steps": state.global_step}
    row["train_loss"] = state.log_history[-1].get("train_loss")
    data_ll, data_units = p_star.log_likelihood(data["completion_ids"])
    row["train_data_precision"] = float(data_ll.sum() / data_units.sum())  # training samples under p*
    row.update(score(student, tokenizer, p_star, reference, args, seed=seed))
    return row


def _results(args, training_args, command: str, p_star, reference, teacher_scores, rows, runs) -> dict:
    """The results dict written to ``results.json`` (without ``timing`` and ``runs``)."""
    totals, units = p_star.log_likelihood(reference)
    training_keys = ("per_device_train_batch_size", "num_train_epochs", "learning_rate", "lr_scheduler_type")
    return {
        "command": command,
        "seeds": list(args.seeds),
        "unit": "token",
        "p_star": {
            "model": f"hf_kd.models.hmm.long_tail_hmm(seed={args.p_star_seed})",
            "num_states": p_star.config.num_states,
            "vocab_size": p_star.config.vocab_size,
            "entropy_rate": float(-totals.sum() / units.sum()),
            "entropy_rate_note": "nats per token, -mean log p* over its own reference samples (p*'s precision and "
            "recall on itself); in expectation no model's recall exceeds -entropy_rate (Gibbs), a sharpened model's "
            "precision can",
            "num_reference_samples": len(reference),
        },
        "teacher": {k: teacher_scores[k] for k in ("precision", "precision_ci", "recall", "recall_ci")},
        "taus": [{k: v for k, v in row.items() if k != "name"} for row in rows],
        "config": dataclasses.asdict(args),
        "training": {k: getattr(training_args, k) for k in (*training_keys, "warmup_steps")},
    }


def _arrays(run: dict) -> dict:
    keys = ("tau", "seed", "precision", "recall", "unit")
    keys += ("precision_log_likelihood", "precision_units", "recall_log_likelihood", "recall_units")
    return {k: run[k] for k in keys}


def format_summary(results: dict) -> str:
    """Text tables (`hf_kd.reporting.format_table`): per tau, precision and recall with 95 % intervals over seeds,
    then the paired differences from the direct student."""
    p_star, teacher = results["p_star"], results["teacher"]

    def table(suffix: str) -> str:
        rows = [{"name": f"{row['tau']:g}", "unit": results["unit"]} for row in results["taus"]]
        for out, row in zip(rows, results["taus"]):
            for key in ("precision", "recall"):
                d = row[key + suffix]
                out.update({key: d["mean"], f"{key}_ci": (d["low"], d["high"])})
        return format_table(rows, label="tau")

    return "\n".join(
        [
            f"p* entropy rate {p_star['entropy_rate']:.3f} nats/token; teacher precision {teacher['precision']:.3f}, "
            f"recall {teacher['recall']:.3f}",
            "Mean over seeds, 95 % t-interval over seeds:",
            table(""),
            "Paired difference from the direct student (tau = 1, same seed), 95 % t-interval over seeds:",
            table("_vs_direct"),
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args, training_args = TrlParser((MiniatureArguments, DistillationConfig)).parse_args_and_config(argv)
    return run(args, training_args, command=shlex.join(["python", "recipes/miniature_lm.py", *argv]))


if __name__ == "__main__":
    main()
