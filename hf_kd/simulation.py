"""The paper's mixture-of-Gaussians study: distillation from a sharpened teacher trades recall for precision.

p* is a fixed mixture of 8 Gaussians on the 3x3 grid without its centre (covariance 0.025 I). For every seed, a
teacher p' with K' components is fit by EM on n samples of p*; for every selectivity beta a student p'' with K''
components is fit on samples of the teacher whose mixture weights are sharpened to ``a_k**beta / sum_j a_j**beta``;
the direct baseline p''(D) is the same student fit on the n samples of p*. Scores (expected log-likelihoods, higher
is better), always under the TRUE p*:

    precision = E_{x ~ p''} log p*(x)        recall = E_{x ~ p*} log p''(x)

Every fit is the notebook's scikit-learn `GaussianMixture` fit: EM from a k-means start, ``n_init=1``, ``tol=1e-3``,
``reg_covar=1e-6``. Precision and recall come from `hf_kd.metrics.precision_recall` over the models' ``sample`` /
``log_likelihood`` protocol. Per-seed values at high beta are heavy-tailed (a few seeds whose teacher puts its
heaviest component on a broad blob), so results are means over seeds with 95 % percentile-bootstrap intervals over
seeds (`hf_kd.metrics.bootstrap_ci`), with the medians beside them. Used by ``recipes/gmm_simulation.py`` and
``hf-kd simulate``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from .metrics import bootstrap_ci, precision_recall
from .models.gmm import GMMConfig, GMMModel
from .simulation_config import SimulationArguments, SimulationConfig, config_from_args

__all__ = [
    "SimulationArguments",
    "SimulationConfig",
    "SimulationResults",
    "config_from_args",
    "main",
    "plot_simulation",
    "run_from_args",
    "run_simulation",
    "save_results",
    "seed_interval",
    "true_distribution",
]

# Seed offsets of the random streams shared by all selectivities within a seed (teacher draws, student draws).
TEACHER_STREAM, STUDENT_STREAM = 3_571_000, 7_919_000
COLUMNS = (
    "selectivity",
    "precision",
    "precision_low",
    "precision_high",
    "precision_median",
    "recall",
    "recall_low",
    "recall_high",
    "recall_median",
    "seeds_more_precise_less_recall",
)


@dataclass
class SimulationResults:
    """Per-seed scores and their summary. `precision` and `recall` are `(num_seeds, num_selectivities)` tensors;
    the baselines are `(num_seeds,)`. `example` holds the models of the first seed, for the figure."""

    config: SimulationConfig
    precision: torch.Tensor
    recall: torch.Tensor
    baseline_precision: torch.Tensor
    baseline_recall: torch.Tensor
    rows: list[dict] = field(default_factory=list)
    example: dict = field(default_factory=dict, repr=False)

    def table(self) -> str:
        """The summary as a Markdown table: mean [percentile-bootstrap interval over seeds] and median."""
        level = f"{self.config.confidence:.0%}"
        lines = [
            f"| student | precision E_p''[log p*]: mean [{level} CI] | median | recall E_p*[log p'']: mean "
            f"[{level} CI] | median | seeds: precision up and recall down |",
            "|---|---|---|---|---|---|",
        ]
        for row in self.rows:
            name = "direct, p''(D)" if row["selectivity"] == "direct" else f"distilled, beta = {row['selectivity']}"
            wins = row["seeds_more_precise_less_recall"]
            cells = [name]
            for side in ("precision", "recall"):
                cells += [
                    f"{row[side]:.2f} [{row[side + '_low']:.2f}, {row[side + '_high']:.2f}]",
                    f"{row[side + '_median']:.2f}",
                ]
            cells.append("" if wins is None else f"{wins}/{self.config.num_seeds}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def true_distribution(dtype: torch.dtype = torch.float64) -> GMMModel:
    """p*: 8 equal-weight Gaussians with means on {-1, 0, 1}^2 without the centre and covariance 0.025 I."""
    grid = torch.tensor([(i, j) for i in (-1.0, 0.0, 1.0) for j in (-1.0, 0.0, 1.0) if (i, j) != (0.0, 0.0)])
    model = GMMModel(GMMConfig(num_components=8, dim=2, covariance_type="spherical")).to(dtype)
    return model.set_parameters(torch.full((8,), 1 / 8), grid, torch.full((8,), 0.025))


def seed_interval(values: torch.Tensor, confidence: float = 0.95, n_boot: int = 10000) -> dict[str, float]:
    """Mean, percentile-bootstrap interval of the mean, and median of per-seed values (`hf_kd.metrics.bootstrap_ci`
    with one unit per seed). Unlike a t-interval it follows the skew of heavy-tailed seeds.

    Args:
        values (`torch.Tensor` of shape `(S,)`): one value per seed.
        confidence (`float`): coverage of the interval.
        n_boot (`int`): bootstrap replicates.

    Returns:
        `dict`: ``mean``, ``low``, ``high``, ``median``.
    """
    values = values.double()
    mean, (low, high) = bootstrap_ci(values, torch.ones_like(values), n_boot=n_boot, confidence=confidence)
    return {"mean": mean, "low": low, "high": high, "median": float(values.median())}


def _fit(data: torch.Tensor, components: int, covariance_type: str, config: SimulationConfig, seed: int) -> GMMModel:
    model = GMMModel(GMMConfig(num_components=components, dim=2, covariance_type=covariance_type)).double()
    return model.fit(data, max_iter=config.max_iter, tol=config.tol, n_init=config.n_init, seed=seed)


def _scores(student: GMMModel, p_star: GMMModel, truth_eval: torch.Tensor, seed: int) -> tuple[float, float]:
    """(precision, recall) of a student under the true p*, by `hf_kd.metrics.precision_recall`: the student's own
    samples drawn from the `seed` stream, and the shared p* samples `truth_eval` (no interval: seeds give it)."""
    n = truth_eval.shape[0]
    scores = precision_recall(student, p_star, num_samples=n, reference_samples=truth_eval, n_boot=0, seed=seed)
    return scores["precision"], scores["recall"]


@torch.no_grad()
def run_simulation(config: SimulationConfig | None = None, progress: bool = True) -> SimulationResults:
    """Run the study over all seeds and selectivities (see the module docstring).

    Within a seed every selectivity reuses the same random streams (teacher draws, student draws, p* evaluation
    points), so differences between selectivities are not sampling noise between streams.

    Args:
        config ([`SimulationConfig`], *optional*): settings (defaults: the paper's notebook over 100 seeds).
        progress (`bool`): show a tqdm bar over seeds.

    Returns:
        [`SimulationResults`] with per-seed scores, the summary rows and the first seed's models.
    """
    config = config or SimulationConfig()
    p_star = true_distribution()
    per_seed, example = [], {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # every tensor here is tiny: one thread beats two by ~10x on a busy machine
    try:
        for i in tqdm(range(config.num_seeds), desc="gmm simulation (seeds)", disable=not progress):
            scores, models = _run_seed(config, p_star, config.seed + i)
            per_seed.append(scores)
            example = example or models
    finally:
        torch.set_num_threads(threads)
    scores = torch.tensor(per_seed, dtype=torch.float64)  # (S, 1 + num_betas, 2): baseline first; precision, recall
    results = SimulationResults(
        config, scores[:, 1:, 0], scores[:, 1:, 1], scores[:, 0, 0], scores[:, 0, 1], example=example
    )
    results.rows = _summary_rows(results)
    return results


def _run_seed(config: SimulationConfig, p_star: GMMModel, seed: int) -> tuple[list, dict]:
    """One repetition: ``[(precision, recall)]`` of the direct baseline then of each student, and the models."""
    gen = torch.Generator().manual_seed(seed)
    train = p_star.sample(config.num_train_samples, generator=gen)
    truth_eval = p_star.sample(config.num_eval_samples, generator=gen)
    teacher = _fit(train, config.teacher_components, config.teacher_covariance_type, config, seed)
    baseline = _fit(train, config.student_components, config.student_covariance_type, config, seed)
    student_seed = seed + STUDENT_STREAM
    scores, students = [_scores(baseline, p_star, truth_eval, student_seed)], []
    for selectivity in config.selectivities:
        teacher_gen = torch.Generator().manual_seed(seed + TEACHER_STREAM)
        distill_set = teacher.sample(config.num_teacher_samples, selectivity=selectivity, generator=teacher_gen)
        students.append(_fit(distill_set, config.student_components, config.student_covariance_type, config, seed))
        scores.append(_scores(students[-1], p_star, truth_eval, student_seed))
    return scores, dict(p_star=p_star, train=train, teacher=teacher, baseline=baseline, students=students)


def _summary_rows(results: SimulationResults) -> list[dict]:
    config = results.config

    def row(label, precision, recall, wins):
        values = {"selectivity": label, "seeds_more_precise_less_recall": wins}
        for side, per_seed in (("precision", precision), ("recall", recall)):
            stats = seed_interval(per_seed, config.confidence, config.num_bootstrap)
            values.update({side: stats["mean"], **{f"{side}_{k}": stats[k] for k in ("low", "high", "median")}})
        return {k: values[k] for k in COLUMNS}

    rows = [row("direct", results.baseline_precision, results.baseline_recall, None)]
    for j, selectivity in enumerate(config.selectivities):
        more_precise = results.precision[:, j] > results.baseline_precision
        better = more_precise & (results.recall[:, j] < results.baseline_recall)
        label = "inf" if math.isinf(selectivity) else f"{selectivity:g}"
        rows.append(row(label, results.precision[:, j], results.recall[:, j], int(better.sum())))
    return rows


def _jsonable(value):
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def save_results(results: SimulationResults, output_dir: str, stem: str = "gmm_simulation") -> dict[str, str]:
    """Write ``<stem>.json`` (config, summary, per-seed scores), ``<stem>.csv`` (summary) and, when
    ``config.plot``, ``<stem>.png`` into `output_dir`. Returns the paths written."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, f"{stem}.json"), "csv": os.path.join(output_dir, f"{stem}.csv")}
    config = {k: _jsonable(v) for k, v in asdict(results.config).items()}
    per_seed = {
        "seeds": list(range(results.config.seed, results.config.seed + results.config.num_seeds)),
        "precision": results.precision.tolist(),
        "recall": results.recall.tolist(),
        "baseline_precision": results.baseline_precision.tolist(),
        "baseline_recall": results.baseline_recall.tolist(),
    }
    c = results.config
    interval = f"mean over {c.num_seeds} seeds, {c.confidence:.0%} percentile bootstrap ({c.num_bootstrap} resamples)"
    payload = {
        "config": config,
        "interval": interval,
        "summary": results.rows,
        "per_seed": per_seed,
        "table": results.table(),
    }
    with open(paths["json"], "w") as f:
        json.dump(payload, f, indent=2, allow_nan=False)
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(results.rows)
    if results.config.plot:
        paths["png"] = plot_simulation(results, os.path.join(output_dir, f"{stem}.png"))
    return paths


@torch.no_grad()
def plot_simulation(results: SimulationResults, path: str) -> str:
    """Draw the precision-recall frontier (means with their intervals over seeds) and density contours of p*, the
    teacher, the direct baseline and every student of the first seed. Saves a PNG at `path` and returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config, ex = results.config, results.example
    labels = ["inf" if math.isinf(b) else f"{b:g}" for b in config.selectivities]
    colors = plt.cm.viridis(torch.linspace(0, 0.9, len(labels)).tolist())
    fig = plt.figure(figsize=(14, 6.6), layout="constrained")
    grid = fig.add_gridspec(3, 2 + math.ceil((3 + len(labels)) / 3))
    ax = fig.add_subplot(grid[:, :2])
    _draw_frontier(ax, results.rows, colors, labels)
    ax.set_xlabel(r"recall  $E_{x\sim p^*}\,\log p''(x)$   (higher: better coverage)")
    ax.set_ylabel(r"precision  $E_{x\sim p''}\,\log p^*(x)$   (higher: better samples)")
    ax.set_title(f"Precision-recall over {config.num_seeds} seeds (mean, {config.confidence:.0%} bootstrap CI)")
    ax.legend(fontsize=8, loc="lower left")
    # Zoom on the points crowded near the baseline when the sweep spans a much wider recall range.
    recalls = [r["recall"] for r in results.rows]
    span = max(recalls) - min(recalls)
    near = [r for r in results.rows if abs(r["recall"] - recalls[0]) < 0.15 * span]
    if span > 0 and len(near) >= 3:
        inset = ax.inset_axes([0.55, 0.5, 0.42, 0.42])
        _draw_frontier(inset, results.rows, colors, labels)
        lo, hi = min(r["recall_low"] for r in near), max(r["recall_high"] for r in near)
        bottom, top = min(r["precision_low"] for r in near), max(r["precision_high"] for r in near)
        inset.set_xlim(lo - 0.1 * (hi - lo), hi + 0.3 * (hi - lo))  # room for the labels
        inset.set_ylim(bottom - 0.1 * (top - bottom), top + 0.1 * (top - bottom))
        inset.tick_params(labelsize=7)
        ax.indicate_inset_zoom(inset, edgecolor="0.4")

    xs = torch.linspace(-2, 2, 160, dtype=torch.float64)
    points = torch.cartesian_prod(xs, xs)
    truth = ex["p_star"].log_prob(points).exp().reshape(160, 160).T

    def contour(cell, model, title, color, scatter=None):
        sub = fig.add_subplot(cell)
        sub.contourf(xs, xs, truth, levels=8, cmap="Greys", alpha=0.6)
        if model is not None:
            density = model.log_prob(points).exp().reshape(160, 160).T
            sub.contour(xs, xs, density, levels=6, colors=[color], linewidths=1.0)
        if scatter is not None:
            sub.scatter(scatter[:, 0], scatter[:, 1], s=4, color=color)
        sub.set_title(title, fontsize=9)
        sub.set_xticks([]), sub.set_yticks([])
        sub.set_aspect("equal")

    cells = [grid[r, c] for r in range(3) for c in range(2, grid.ncols)]
    contour(cells[0], None, f"p* and its n={config.num_train_samples} samples", "crimson", ex["train"])
    contour(cells[1], ex["teacher"], f"teacher p' (K'={config.teacher_components})", "tab:blue")
    contour(cells[2], ex["baseline"], "direct p''(D)", "crimson")
    for cell, student, label, color in zip(cells[3:], ex["students"], labels, colors):
        contour(cell, student, f"student, beta = {label}", color)
    fig.suptitle(f"Distilling a sharpened Gaussian-mixture teacher (grey: p*; seed {config.seed})")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bar(row: dict, side: str) -> list[list[float]]:
    """Asymmetric error bar ``[[mean - low], [high - mean]]`` for matplotlib."""
    return [[row[side] - row[f"{side}_low"]], [row[f"{side}_high"] - row[side]]]


def _errorbar(ax, row: dict, **style) -> None:
    """`row` as a point (recall, precision) with its asymmetric interval bars."""
    xerr, yerr = _bar(row, "recall"), _bar(row, "precision")
    ax.errorbar(row["recall"], row["precision"], xerr=xerr, yerr=yerr, capsize=3, **style)


def _draw_frontier(ax, rows: list[dict], colors, labels: list[str]) -> None:
    for row, color, label in zip(rows[1:], colors, labels):
        _errorbar(ax, row, fmt="o", color=color, label=f"distilled, beta = {label}")
        ax.annotate(
            f"β={label}",
            (row["recall"], row["precision"]),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=7,
            color=color,
            clip_on=True,
        )
    ax.plot([r["recall"] for r in rows[1:]], [r["precision"] for r in rows[1:]], color="0.6", zorder=0)
    _errorbar(ax, rows[0], fmt="*", color="crimson", markersize=12, label="direct, p''(D)")
    ax.grid(alpha=0.3)


def run_from_args(args: SimulationArguments) -> SimulationResults:
    """Run the study from parsed `hf-kd simulate` options, print the table and write JSON, CSV and PNG
    (what ``hf-kd simulate`` and ``recipes/gmm_simulation.py`` do)."""
    from .validation import check_output_dir

    config = config_from_args(args)
    check_output_dir(args.output_dir, "--output-dir")  # before the sweep, not after
    results = run_simulation(config, progress=args.progress)
    print(results.table())
    for kind, path in save_results(results, args.output_dir).items():
        print(f"wrote {kind}: {path}")
    return results


def main(argv: list[str] | None = None) -> SimulationResults:
    """Command-line entry point: parse `argv` and call [`run_from_args`]."""
    from .cli import run_command

    return run_command("simulate", argv, prog="python recipes/gmm_simulation.py")
