"""Settings of the mixture-of-Gaussians study, which are also the options of `hf-kd simulate` (parsed by TRL's
`TrlParser` in `hf_kd.cli`: ``--config x.yaml``, then flags).

Kept apart from `hf_kd.simulation` so that `hf-kd simulate --help` answers without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal

__all__ = ["SimulationArguments", "SimulationConfig", "config_from_args"]

CovarianceType = Literal["full", "diag", "spherical"]


def _help(text: str) -> dict:
    return {"help": text}


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
        selectivities (`list[float]`, stored as a tuple): betas of the sweep (``inf`` = the heaviest teacher
            component only).
        num_seeds (`int`): independent repetitions (new p* samples, teacher, students).
        seed (`int`): first seed; seeds ``seed .. seed + num_seeds - 1`` are run.
        teacher_covariance_type, student_covariance_type (`str`): ``"full"``, ``"diag"`` or ``"spherical"``.
        max_iter (`int`), tol (`float`), n_init (`int`): EM settings of every fit (scikit-learn's defaults: each fit
            starts from k-means; ``n_init > 1`` keeps the best of that many starts).
        confidence (`float`), num_bootstrap (`int`): the percentile-bootstrap interval over seeds.
        output_dir (`str`, *optional*): where `save_results` writes ``gmm_simulation.{json,csv,png}``.
        plot (`bool`): also draw the PNG figure.
    """

    teacher_components: int = field(default=4, metadata=_help("K' of the teacher."))
    student_components: int = field(default=1, metadata=_help("K'' of the students."))
    num_train_samples: int = field(default=100, metadata=_help("n samples of p*."))
    num_teacher_samples: int = field(default=1000, metadata=_help("Distillation set."))
    num_eval_samples: int = field(default=10000, metadata=_help("Samples per score."))
    # a list for the parser (nargs="+"); stored as a tuple by __post_init__
    selectivities: list[float] = field(
        default_factory=lambda: [1.0, 2.0, 5.0, 10.0, 100.0, math.inf],
        metadata=_help("Betas of the sweep ('inf' = heaviest teacher component)."),
    )
    num_seeds: int = field(default=100, metadata=_help("Independent repetitions."))
    seed: int = field(default=0, metadata=_help("First seed."))
    teacher_covariance_type: CovarianceType = field(default="diag", metadata=_help("Covariance of the teacher's."))
    student_covariance_type: CovarianceType = field(default="diag", metadata=_help("Covariance of the students'."))
    max_iter: int = field(default=100, metadata=_help("EM iterations."))
    tol: float = field(default=1e-3, metadata=_help("EM tolerance on the mean log-likelihood."))
    n_init: int = field(default=1, metadata=_help("k-means starts per EM fit (keeps the best)."))
    confidence: float = field(default=0.95, metadata=_help("Coverage of the seed intervals."))
    num_bootstrap: int = field(default=10000, metadata=_help("Bootstrap replicates over seeds."))
    output_dir: str | None = field(default=None, metadata=_help("Where JSON, CSV and PNG go (default: none)."))
    plot: bool = field(default=True, metadata=_help("Draw the PNG figure."))

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


@dataclass
class SimulationArguments(SimulationConfig):
    """The options of `hf-kd simulate`: a [`SimulationConfig`] that writes to ``gmm_simulation_output`` unless told
    otherwise, and a progress bar (``--no_progress`` hides it)."""

    output_dir: str = field(default="gmm_simulation_output", metadata=_help("Where JSON, CSV and PNG go."))
    progress: bool = field(default=True, metadata=_help("Show the progress bar."))


def config_from_args(args: SimulationArguments) -> SimulationConfig:
    """The [`SimulationConfig`] of parsed `hf-kd simulate` options (without the command's own ``progress``)."""
    return SimulationConfig(**{f.name: getattr(args, f.name) for f in fields(SimulationConfig)})
