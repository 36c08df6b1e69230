"""`PrecisionRecallCallback`: likelihood precision and recall of the student at every evaluation of a Trainer."""

from __future__ import annotations

import warnings

import torch
from transformers import TrainerCallback

from .generative import as_generative_model
from .likelihood import precision_recall
from .lm_adapter import CausalLMAdapter

__all__ = ["PrecisionRecallCallback"]


class PrecisionRecallCallback(TrainerCallback):
    """At each evaluation, sample from the student, score against a fixed reference, and log the results.

    Logs ``eval_precision``, ``eval_recall``, ``eval_precision_ci_half_width`` and ``eval_recall_ci_half_width``
    (names follow the trainer's ``eval_`` prefix) into the evaluation metrics and, when the callback is attached
    with [`~PrecisionRecallCallback.attach`], through ``trainer.log`` to every ``report_to`` integration. The
    reference samples are drawn (or given) once and reused, so successive evaluations score recall on the same
    samples and can be compared with a paired bootstrap. Student samples are drawn with seed
    ``seed + global_step``, so a run is reproducible.

    The work runs on the main process only: fine for DDP, not for sharded students (FSDP, ZeRO-3).

    Args:
        reference: the reference model: a protocol model, a ``(model, tokenizer)`` pair, or a model id / path.
        reference_samples (*optional*): samples of the reference; drawn once on the first evaluation when absent.
        tokenizer (*optional*): the student's tokenizer (default: the trainer's `processing_class`).
        num_samples (`int`): student samples per evaluation (and reference samples when drawn here).
        prompt (`str`, *optional*): sample completions of it and score them conditioned on it.
        sample_kwargs (`dict`, *optional*): passed to ``sample`` (e.g. ``{"max_new_tokens": 64}``).
        unit (`str`): ``"auto"``, ``"token"`` or ``"byte"``.
        n_boot (`int`), confidence (`float`): bootstrap settings.
        seed (`int`): base seed of sampling and bootstrap.
        metric_prefix (`str`): prefix of the logged names.
        adapter_kwargs (`dict`, *optional*): passed to the [`CausalLMAdapter`]s built here (batch sizes, ...).
    """

    def __init__(
        self,
        reference,
        reference_samples=None,
        tokenizer=None,
        num_samples: int = 64,
        prompt=None,
        sample_kwargs: dict | None = None,
        unit: str = "auto",
        n_boot: int = 1000,
        confidence: float = 0.95,
        seed: int = 0,
        metric_prefix: str = "eval_",
        adapter_kwargs: dict | None = None,
    ):
        if num_samples < 2:
            raise ValueError(f"num_samples must be at least 2 for a bootstrap interval (got {num_samples}).")
        self.adapter_kwargs = {"progress": False, **(adapter_kwargs or {})}
        self.reference = as_generative_model(reference, **self.adapter_kwargs)
        self.reference_samples = reference_samples
        self.tokenizer = tokenizer
        self.num_samples = num_samples
        self.prompt = prompt
        self.sample_kwargs = dict(sample_kwargs or {})
        self.unit, self.n_boot, self.confidence, self.seed = unit, n_boot, confidence, seed
        self.metric_prefix = metric_prefix
        self.trainer = None
        self._warned = False
        self.last_result: dict | None = None

    def attach(self, trainer) -> PrecisionRecallCallback:
        """Add the callback to `trainer` and log through ``trainer.log`` (so ``report_to`` sees the metrics)."""
        self.trainer = trainer
        trainer.add_callback(self)
        return self

    def compute(self, model, tokenizer, step: int) -> dict[str, float]:
        """The metrics for `model` at `step`, with the names and values this callback logs."""
        if tokenizer is None:
            raise ValueError("PrecisionRecallCallback needs the student's tokenizer: pass tokenizer= to it.")
        student = CausalLMAdapter(model, tokenizer, **self.adapter_kwargs)
        if self.reference_samples is None:
            gen = torch.Generator().manual_seed(self.seed + 1)
            kwargs = {**self.sample_kwargs, **({"prompt": self.prompt} if self.prompt is not None else {})}
            self.reference_samples = self.reference.sample(self.num_samples, generator=gen, **kwargs)
        result = precision_recall(
            student,
            self.reference,
            num_samples=self.num_samples,
            reference_samples=self.reference_samples,
            unit=self.unit,
            prompt=self.prompt,
            sample_kwargs=self.sample_kwargs,
            n_boot=self.n_boot,
            confidence=self.confidence,
            seed=self.seed + step,
        )
        self.last_result = result
        p = self.metric_prefix
        return {
            f"{p}precision": result["precision"],
            f"{p}recall": result["recall"],
            f"{p}precision_ci_half_width": (result["precision_ci"][1] - result["precision_ci"][0]) / 2,
            f"{p}recall_ci_half_width": (result["recall_ci"][1] - result["recall_ci"][0]) / 2,
        }

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return
        tokenizer = self.tokenizer or kwargs.get("processing_class") or kwargs.get("tokenizer")
        logs = self.compute(model, tokenizer, state.global_step)
        if metrics is not None:
            metrics.update(logs)  # what trainer.evaluate() returns
        if self.trainer is not None:
            self.trainer.log(logs)
        else:
            state.log_history.append({**logs, "step": state.global_step})
            if not self._warned:
                self._warned = True
                warnings.warn(
                    "PrecisionRecallCallback was added without attach(trainer): its metrics reach trainer.evaluate() "
                    "and state.log_history but not the report_to integrations. Use callback.attach(trainer).",
                    UserWarning,
                    stacklevel=2,
                )
