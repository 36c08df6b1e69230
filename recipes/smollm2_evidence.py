"""The paper's LLM finding at CPU scale: precision rises and recall falls as the teacher's temperature drops.

    python recipes/smollm2_evidence.py --config recipes/configs/evidence_smollm2_135m.yaml

p* is the real SmolLM2-135M-Instruct (offline). For each temperature tau (selectivity 1/tau) and seed, an offline
teacher-sample dataset is drawn from p* at tau (`hf_kd.generation`, prompt "The"), and a student (a layer slice of p*,
the same initialisation for every run) is trained on it with the NLL loss (sequence-level KD) for the same number of
steps. tau = 1 is the direct student p''(D): trained on samples of p* itself. Every student is scored against the same
p* reference samples, drawn independently of all training data. Resumable: finished datasets and runs are reused.
Writes `results.json`, `results.md` and `precision_recall.png` to `output_dir`.

`results.json` also holds the paired comparisons with the direct student: per temperature, the per-seed differences
(same seed, so the same initialisation and reference samples) with a 95 % t-interval over seeds, and per run the
bootstrap over sequences of `hf_kd.metrics.compare_students` (recall paired on the shared reference samples); and p*'s
own score on the reference samples (the ceiling of recall). ``--rescore_results PATH`` adds the paired differences
and p*'s own score to an existing results.json without training anything (p*'s reference samples are re-drawn with
their seed).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

import torch
from trl import TrlParser

from hf_kd import CausalLMAdapter, DistillationConfig, DistillationTrainer, precision_recall, slice_layers
from hf_kd.generation import generate_distillation_dataset
from hf_kd.metrics import bootstrap_ci, compare_to_baseline, seed_t_interval
from hf_kd.offline import load_causal_lm
from hf_kd.reporting import format_table, plot_precision_recall


@dataclass
class EvidenceArguments:
    model_name_or_path: str = field(
        default="offline:SmolLM2-135M-Instruct", metadata={"help": "p*, also the teacher."}
    )
    temperatures: list[float] = field(default_factory=lambda: [0.8, 0.875, 0.95, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    prompt: str = field(default="The")
    num_train_samples: int = field(default=384, metadata={"help": "Teacher samples per (temperature, seed)."})
    max_new_tokens: int = field(default=40)
    student_num_layers: int = field(default=6, metadata={"help": "Layers of p* kept in the student (a slice)."})
    eval_num_samples: int = field(default=128)
    generation_batch_size: int = field(default=64)
    rescore_results: str | None = field(
        default=None,
        metadata={"help": "Add paired differences and p*'s own score to this results.json; train nothing."},
    )


def teacher_dataset(evidence, teacher, tokenizer, temperature, seed, root):
    """Samples of p* at `temperature`, generated once (resumable) and cached under `root`."""
    return generate_distillation_dataset(
        teacher,
        tokenizer,
        output_dir=os.path.join(root, f"tau_{temperature:g}_seed_{seed}"),
        num_samples=evidence.num_train_samples,
        prompt=evidence.prompt,
        temperature=temperature,
        max_new_tokens=evidence.max_new_tokens,
        batch_size=evidence.generation_batch_size,
        seed=10_000 * (seed + 1) + round(1000 * temperature),
        progress=False,
    )


def reference_samples(evidence, reference, path):
    """p* samples for recall, drawn once with their own seed and cached as token ids."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    samples = reference.sample(
        evidence.eval_num_samples,
        max_new_tokens=evidence.max_new_tokens,
        generator=torch.Generator().manual_seed(987_654),
        return_tokens=True,
    )
    samples = [list(map(int, s)) for s in samples]
    with open(path, "w") as f:
        json.dump(samples, f)
    return samples


def train_and_score(evidence, training_args, teacher, tokenizer, dataset, reference, ref_samples, tau, seed):
    """Train a fresh slice of p* on `dataset` and score it against the shared reference samples (cached)."""
    temperature = tau
    name = f"tau_{temperature:g}_seed_{seed}"
    args = dataclasses.replace(
        training_args, output_dir=os.path.join(training_args.output_dir, "runs", name), run_name=name, seed=seed
    )
    result_path = os.path.join(args.output_dir, "scores.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    student = slice_layers(teacher, evidence.student_num_layers)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    scores = precision_recall(
        CausalLMAdapter(trainer.model.eval(), tokenizer, prompt=evidence.prompt, progress=False),
        reference,
        num_samples=evidence.eval_num_samples,
        reference_samples=ref_samples,
        sample_kwargs={"max_new_tokens": evidence.max_new_tokens},
        seed=seed,
    )
    row = {
        "name": name,
        "temperature": temperature,
        "seed": seed,
        "train_loss": trainer.state.log_history[-1].get("train_loss"),
        "num_train_steps": trainer.state.global_step,
        **{
            k: (v.tolist() if hasattr(v, "tolist") else list(v) if isinstance(v, tuple) else v)
            for k, v in scores.items()
        },
    }
    os.makedirs(args.output_dir, exist_ok=True)
    with open(result_path, "w") as f:
        json.dump(row, f, indent=2)
    return row


def summarise(runs: list[dict], temperatures: list[float]) -> list[dict]:
    """Mean over seeds of precision and recall per temperature, with a 95 % t-interval over seeds (NaN: one seed)."""
    rows = []
    for tau in temperatures:
        group = [r for r in runs if r["temperature"] == tau]
        row = {"name": f"tau = {tau:g}" + (" (direct)" if tau == 1.0 else ""), "temperature": tau}
        for key in ("precision", "recall"):
            interval = seed_t_interval([r[key] for r in group])
            row[key] = interval["mean"]
            row[f"{key}_ci"] = [interval["low"], interval["high"]]
        row.update(num_seeds=len(group), unit=group[0]["unit"])
        rows.append(row)
    return rows


def paired_vs_direct(runs: list[dict], temperatures: list[float]) -> list[dict]:
    """Per temperature tau < 1, the paired differences from the direct student (tau = 1, same seed).

    `hf_kd.metrics.compare_to_baseline`: ``mean_s (P(tau, s) - P(1, s))`` with a 95 % t-interval over seeds (NaN
    with one seed), for precision and recall; ``excludes_zero`` says whether that interval lies on one side of zero.
    Per run with per-sequence scores, the bootstrap over sequences is stored as ``bootstrap_vs_direct``.
    """
    comparison = compare_to_baseline(runs, "temperature", 1.0)
    for r in runs:
        if (r["temperature"], r["seed"]) in comparison["bootstrap"]:
            r["bootstrap_vs_direct"] = comparison["bootstrap"][r["temperature"], r["seed"]]
    rows = []
    for tau in (t for t in temperatures if t != 1.0):
        row = {"temperature": tau}
        for key, d in comparison["groups"][tau].items():
            row[f"{key}_vs_direct"] = {k: d[k] for k in ("mean", "low", "high", "per_seed", "excludes_zero")}
        rows.append(row)
    return rows


def p_star_on_reference(reference, ref_samples) -> dict:
    """p*'s own mean log-likelihood per token on its reference samples, with a bootstrap CI over sequences."""
    totals, units = reference.log_likelihood(ref_samples)
    mean, ci = bootstrap_ci(totals, units)
    return {"log_likelihood_per_token": mean, "ci": list(ci), "num_samples": len(ref_samples)}


def rescore(evidence, reference, ref_samples) -> dict:
    """Add the paired differences and p*'s own score to an existing results.json (nothing is trained)."""
    with open(evidence.rescore_results) as f:
        results = json.load(f)
    results["paired_vs_direct"] = paired_vs_direct(results["runs"], results["config"]["temperatures"])
    results["p_star_on_reference"] = p_star_on_reference(reference, ref_samples)
    with open(evidence.rescore_results, "w") as f:
        json.dump(results, f, indent=2)
    return results


def main(argv: list[str] | None = None) -> list[dict]:
    evidence, training_args = TrlParser((EvidenceArguments, DistillationConfig)).parse_args_and_config(argv)
    teacher, tokenizer, _ = load_causal_lm(evidence.model_name_or_path, training_args.device)
    reference = CausalLMAdapter(teacher, tokenizer, prompt=evidence.prompt, progress=False)
    out = training_args.output_dir
    os.makedirs(out, exist_ok=True)
    ref_samples = reference_samples(evidence, reference, os.path.join(out, "reference_samples.json"))
    if evidence.rescore_results:
        return rescore(evidence, reference, ref_samples)
    runs = []
    for seed in evidence.seeds:
        for tau in evidence.temperatures:
            dataset = teacher_dataset(evidence, teacher, tokenizer, tau, seed, os.path.join(out, "data"))
            runs.append(
                train_and_score(
                    evidence, training_args, teacher, tokenizer, dataset, reference, ref_samples, tau, seed
                )
            )
            print(f"tau {tau:g} seed {seed}: precision {runs[-1]['precision']:.4f} recall {runs[-1]['recall']:.4f}")
    rows = summarise(runs, evidence.temperatures)
    table = format_table(rows, label="teacher temperature")
    print(table)
    results = {
        "config": dataclasses.asdict(evidence),
        "summary": rows,
        "paired_vs_direct": paired_vs_direct(runs, evidence.temperatures),
        "p_star_on_reference": p_star_on_reference(reference, ref_samples),
        "runs": runs,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("Mean over seeds, 95 % t-interval over seeds:\n\n```\n" + table + "\n```\n")
    plot_precision_recall(rows, os.path.join(out, "precision_recall.png"), title="SmolLM2-135M: p'' vs temperature")
    return rows


if __name__ == "__main__":
    main()
