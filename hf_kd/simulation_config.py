"""Settings of the mixture-of-Gaussians study and its command-line options (`hf-kd simulate`).

Kept apart from `hf_kd.simulation` so that `hf-kd simulate --help` answers without importing torch.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

__all__ = ["SimulationConfig", "add_simulation_arguments", "config_from_args"]


@dataclass
class SimulationConfig:
    """Settings of the mixture-of-Gaussians study (defaults: the paper's notebook, repeated over 100 seeds).

    Args:
        teacher_components (`int`): K', components of the teacher p'.
        student_components (`int`): K'', components of the students p'' and of the direct baseline.
        num_train_samples (`int`): n, samples of p* the teacher and the baseline are fit on.
        num_teacher_samples (`int`): samples of the sharpened teacher each student is fit on.
        num_eval_samples (`int`): samples drawn to estimate each precision and recall (fresh p* samples for recall,
            where the notebook reuses the n training points).
        selectivities (`tuple[float, ...]`): betas of the sweep (``inf`` = the heaviest teacher component only).
        num_seeds (`int`): independent repetitions (new p* samples, teacher, students).
        seed (`int`): first seed; seeds ``seed .. seed + num_seeds - 1`` are run.
        teacher_covariance_type, student_covariance_type (`str`): ``"full"``, ``"diag"`` or ``"spherical"``.
        max_iter (`int`), tol (`float`), n_init (`int`): EM settings of every fit (scikit-learn's defaults: each fit
            starts from k-means; ``n_init > 1`` keeps the best of that many starts).
        confidence (`float`), num_bootstrap (`int`): the percentile-bootstrap interval over seeds.
        output_dir (`str`, *optional*): where `save_results` writes ``gmm_simulation.{json,csv,png}``.
        plot (`bool`): also draw the PNG figure.
    """

    teacher_components: int = 4
    student_components: int = 1
    num_train_samples: int = 100
    num_teacher_samples: int = 1000
    num_eval_samples: int = 10000
    selectivities: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 100.0, math.inf)
    num_seeds: int = 100
    seed: int = 0
    teacher_covariance_type: str = "diag"
    student_covariance_type: str = "diag"
    max_iter: int = 100
    tol: float = 1e-3
    n_init: int = 1
    confidence: float = 0.95
    num_bootstrap: int = 10000
    output_dir: str | None = None
    plot: bool = True

    def __post_init__(self):
        self.selectivities = tuple(float(b) for b in self.selectivities)
        if not self.selectivities or any(math.isnan(b) or b <= 0 for b in self.selectivities):
            raise ValueError(f"selectivities must be non-empty and all > 0 (got {self.selectivities}).")
        counts = {
            "teacher_components": self.teacher_components,
            "student_components": self.student_components,
            "num_teacher_samples": self.num_teacher_samples,
            "num_eval_samples": self.num_eval_samples,
            "num_seeds": self.num_seeds,
            "n_init": self.n_init,
            "max_iter": self.max_iter,
        }
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1 (got {value}).")
        largest = max(self.teacher_components, self.student_components)
        if self.num_train_samples < largest:
            raise ValueError(
                f"num_train_samples={self.num_train_samples} is smaller than the {largest} components to fit on "
                "them; raise num_train_samples or lower the component counts."
            )
        if self.num_teacher_samples < self.student_components:
            raise ValueError("num_teacher_samples must be at least student_components.")
        if not 0 < self.confidence < 1 or self.num_bootstrap < 10:
            raise ValueError(
                f"the interval over seeds needs 0 < confidence < 1 and num_bootstrap >= 10 (got {self.confidence} "
                f"and {self.num_bootstrap}); e.g. 0.95 and 10000."
            )


def add_simulation_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the [`SimulationConfig`] options (``--teacher-components`` ...) to an argparse parser."""
    d = SimulationConfig()
    parser.add_argument("--teacher-components", type=int, default=d.teacher_components, help="K' of the teacher.")
    parser.add_argument("--student-components", type=int, default=d.student_components, help="K'' of students.")
    parser.add_argument("--num-train-samples", type=int, default=d.num_train_samples, help="n samples of p*.")
    parser.add_argument("--num-teacher-samples", type=int, default=d.num_teacher_samples, help="Distillation set.")
    parser.add_argument("--num-eval-samples", type=int, default=d.num_eval_samples, help="Samples per score.")
    parser.add_argument("--selectivities", type=float, nargs="+", default=list(d.selectivities),
                        help="Betas of the sweep ('inf' = heaviest teacher component).")  # fmt: skip
    parser.add_argument("--num-seeds", type=int, default=d.num_seeds, help="Independent repetitions.")
    parser.add_argument("--seed", type=int, default=d.seed, help="First seed.")
    for who in ("teacher", "student"):
        parser.add_argument(
            f"--{who}-covariance-type",
            choices=("full", "diag", "spherical"),
            default=getattr(d, f"{who}_covariance_type"),
            help=f"Covariance of the {who}'s components.",
        )
    parser.add_argument("--max-iter", type=int, default=d.max_iter, help="EM iterations.")
    parser.add_argument("--tol", type=float, default=d.tol, help="EM tolerance on the mean log-likelihood.")
    parser.add_argument("--n-init", type=int, default=d.n_init, help="k-means starts per EM fit (keeps the best).")
    parser.add_argument("--confidence", type=float, default=d.confidence, help="Coverage of the seed intervals.")
    parser.add_argument("--num-bootstrap", type=int, default=d.num_bootstrap, help="Bootstrap replicates over seeds.")
    parser.add_argument("--output-dir", default="gmm_simulation_output", help="Where JSON, CSV and PNG go.")
    parser.add_argument("--no-plot", dest="plot", action="store_false", help="Skip the PNG figure (default: drawn).")
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="Hide the progress bar (default: shown)."
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimulationConfig:
    """Build a [`SimulationConfig`] from parsed `add_simulation_arguments` options."""
    names = SimulationConfig.__dataclass_fields__
    return SimulationConfig(**{k: v for k, v in vars(args).items() if k in names})
