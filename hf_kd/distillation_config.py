"""`DistillationConfig`: trl.DistillationConfig plus teacher sharpening, completion sources and loss types."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import trl

from .completion_sources import COMPLETION_SOURCES, parse_completion_source
from .losses import LOSS_TYPES
from .sharpening import check_selectivity
from .topk import TAIL_MODES

__all__ = ["COMPLETION_SOURCES", "DistillationConfig", "parse_completion_source"]


def _cuda_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass
class DistillationConfig(trl.DistillationConfig):
    r"""
    Configuration for [`hf_kd.DistillationTrainer`]: [`trl.DistillationConfig`] plus the fields below. TRL's fields
    keep their meaning: `temperature` T divides both the student's and the teacher's logits in the loss (and is the
    sampling temperature), `beta` is the generalized-JSD mixing weight (0 = forward KL, 1 = reverse KL).
    `selectivity` sharpens the teacher on top of T.

    Parameters:
        selectivity (`float`, *optional*, defaults to `1.0`):
            Teacher sharpening beta > 0: the teacher's next-token distribution becomes ``softmax(beta * z / T)``
            (temperature ``T / beta``), in the loss and when the teacher samples completions. `1.0` is TRL's teacher;
            `float("inf")` is its argmax (greedy sampling; only with `loss_type="nll"`).
        target_entropy (`float`, *optional*):
            Instead of a fixed `selectivity`, choose beta so that the sharpened teacher ``softmax(beta * z / T)`` has
            this mean token entropy (nats) on the completion tokens, per batch (or per token, see
            `per_token_selectivity`).
        per_token_selectivity (`bool`, *optional*, defaults to `False`):
            With `target_entropy`, solve one beta per token instead of one per batch.
        completion_source (`str` or `dict[str, float]`, *optional*, defaults to `"student"`):
            Who writes the completions: `"student"` (on-policy, TRL's behaviour), `"teacher"` (the sharpened teacher
            samples them: online sequence-level KD), `"dataset"` (the dataset's `completion` column, off-policy) or a
            dict of probabilities over these, drawn once per generation batch, identically on every rank.
        loss_type (`str`, *optional*, defaults to `"generalized_jsd"`):
            One of `"nll"`, `"forward_kl"`, `"reverse_kl"`, `"generalized_jsd"` (weight `beta`), `"skew_forward_kl"`,
            `"skew_reverse_kl"`, `"tvd"` (see `hf_kd.losses`). `"nll"` needs no teacher forward pass.
        skew_alpha (`float`, *optional*, defaults to `0.1`):
            Skew of the skew KL losses (DistiLLM), in [0, 1).
        loss_chunk_size (`int`, *optional*):
            Tokens per chunk of the memory-bounded loss (logits are never materialised for the whole batch). By
            default about ``2**22`` logits (16 MB in float32) per chunk, i.e. ``2**22 // vocab_size`` tokens.
        topk_tail (`str`, *optional*, defaults to `"bucket"`):
            With `completion_source="dataset"` on a dataset that stores the teacher's top-k log-probs
            (`hf_kd.generate_distillation_dataset(..., store_topk=K)`), the KL-family losses use them instead of a
            live teacher, and this says how the teacher's mass outside its top-k (the *tail*) is handled:
            `"bucket"`: the tail is one extra outcome (teacher mass ``1 - sum_k p_k``, student mass outside the
            teacher's top-k), an exact divergence between coarse-grained distributions (never above the full one,
            equal when K = vocab); sharpening or tempering is impossible then. `"renormalize"`: teacher
            and student are restricted to the teacher's top-k ids and renormalised there; the teacher is sharpened
            exactly on that support (`selectivity`, or `target_entropy` solved on the top-k). `"bucket"` needs
            ``selectivity / temperature = 1``. See `hf_kd.topk`.

    > [!NOTE]
    > Defaults differ from [`trl.DistillationConfig`] so that a CPU run works out of the box: `bf16` defaults to `True`
    > only when a CUDA device with bf16 support is present, `dataloader_pin_memory` only when CUDA is available, and
    > `gradient_checkpointing` defaults to off (no deprecation warning is raised unless you set it).
    """

    selectivity: float = field(
        default=1.0,
        metadata={"help": "Teacher sharpening beta > 0: the teacher becomes softmax(beta * logits)."},
    )
    target_entropy: float | None = field(
        default=None,
        metadata={"help": "Solve beta so the sharpened teacher's mean token entropy (nats) equals this value."},
    )
    per_token_selectivity: bool = field(
        default=False, metadata={"help": "With target_entropy, solve one beta per token instead of per batch."}
    )
    # Typed `str` for the CLI parser (a JSON string); a dict passed from Python is accepted too.
    completion_source: str | None = field(
        default="student",
        metadata={"help": "'student', 'teacher', 'dataset' or a JSON dict of probabilities over them."},
    )
    loss_type: str = field(default="generalized_jsd", metadata={"help": f"One of {', '.join(LOSS_TYPES)}."})
    skew_alpha: float = field(default=0.1, metadata={"help": "Skew of the skew KL losses, in [0, 1)."})
    loss_chunk_size: int | None = field(
        default=None,
        metadata={"help": "Tokens per chunk of the memory-bounded loss; default: about 2**22 logits per chunk."},
    )
    topk_tail: str = field(
        default="bucket",
        metadata={
            "help": "With stored top-k teacher log-probs: 'bucket' (the tail mass is one extra outcome; exact "
            "coarse-grained divergence, no sharpening) or 'renormalize' (both restricted to the teacher's top-k)."
        },
    )

    # CPU-sane overrides of TRL's defaults (bf16 is unusable on CPU; checkpointing warns under transformers 5).
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing (off by default)."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; defaults to True only on CUDA devices that support it."}
    )
    dataloader_pin_memory: bool | None = field(
        default=None, metadata={"help": "Pin dataloader memory; defaults to True only when CUDA is available."}
    )

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = bool(_cuda_bf16() and not self.fp16)
        if self.dataloader_pin_memory is None:  # pinning without an accelerator only warns
            self.dataloader_pin_memory = torch.cuda.is_available()
        super().__post_init__()
        self.completion_source = parse_completion_source(self.completion_source)
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type={self.loss_type!r} is unknown; choose one of {LOSS_TYPES}.")
        check_selectivity(self.selectivity)
        if math.isinf(self.selectivity) and self.loss_type != "nll":
            raise ValueError(
                "selectivity=inf (greedy teacher) only works with loss_type='nll'; token-level losses need a finite "
                "selectivity (e.g. 100)."
            )
        if self.target_entropy is not None:
            if self.selectivity != 1.0:
                raise ValueError(
                    f"selectivity={self.selectivity} and target_entropy={self.target_entropy} are both set; they are "
                    "two ways to choose beta. Keep selectivity=1.0 and set target_entropy, or drop target_entropy."
                )
            if not self.target_entropy > 0:
                raise ValueError(
                    f"target_entropy must be > 0 nats (got {self.target_entropy}); 0 would be the greedy teacher, use "
                    "selectivity=float('inf') with loss_type='nll' for that."
                )
        elif self.per_token_selectivity:
            raise ValueError("per_token_selectivity=True needs target_entropy (a beta is solved per token).")
        if not 0.0 <= self.skew_alpha < 1.0:
            raise ValueError(f"skew_alpha must be in [0, 1) (got {self.skew_alpha}); DistiLLM uses 0.1.")
        if self.loss_chunk_size is not None and self.loss_chunk_size < 1:
            raise ValueError(
                f"loss_chunk_size must be >= 1 (got {self.loss_chunk_size}); leave it None for the automatic size."
            )
        if self.topk_tail not in TAIL_MODES:
            raise ValueError(f"topk_tail={self.topk_tail!r} is unknown; choose one of {TAIL_MODES}.")
        if self.loss_type == "nll" and self.completion_source == "student":
            raise ValueError(
                "loss_type='nll' with completion_source='student' trains the student on its own samples (no teacher "
                "signal). Use completion_source='teacher' or 'dataset', or a token-level loss such as 'forward_kl'."
            )
        if self.use_vllm and self.completion_source != "student":
            raise ValueError(
                "use_vllm=True generates with the student's weights only; with completion_source="
                f"{self.completion_source!r} set use_vllm=False (the teacher samples through transformers' generate)."
            )

    @classmethod
    def from_trl(cls, args) -> DistillationConfig:
        """`args` as an hf_kd config: a `trl.DistillationConfig` keeps its values, hf_kd's fields their defaults."""
        if isinstance(args, cls):
            return args
        if isinstance(args, trl.DistillationConfig):
            return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init})
        raise ValueError(
            f"args must be an hf_kd.DistillationConfig or a trl.DistillationConfig (got {type(args).__name__}); build "
            "one with hf_kd.DistillationConfig(output_dir, ...)."
        )

    def source_probabilities(self) -> dict[str, float]:
        """The completion sources as a dict of probabilities (a single source has probability 1)."""
        if isinstance(self.completion_source, str):
            return {self.completion_source: 1.0}
        return dict(self.completion_source)
