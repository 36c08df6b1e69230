"""`DistillationTrainer`: trl.DistillationTrainer plus teacher sharpening, three completion sources, seven losses."""

from __future__ import annotations

import warnings

import torch
import trl
from trl.models.utils import unwrap_model_for_generation

from .completions import (
    TEACHER_STATES,
    CompletionSampler,
    dataset_completion_ids,
    draw_source,
    pad_states,
    reuses_sampling_states,
    tokenize_completions,
)
from .distillation_config import DistillationConfig
from .fast_decode import fast_decode, fast_decode_enabled, log_once
from .lm_heads import head_weight_and_bias, logit_postprocessing
from .losses import chunked_distillation_loss, default_chunk_size, logit_postprocess
from .resume import EpochSeededRepeatSampler, last_complete_checkpoint
from .sharpening import check_target_entropy, chunk_slices, entropy_from_log_probs, solve_selectivity, token_entropy
from .target_entropy import solve_head_selectivity
from .topk import check_topk, chunked_topk_distillation_loss, pad_topk_rows, topk_teacher_log_probs
from .trainer_checks import (
    COMPLETION_COLUMN,
    COMPLETION_IDS_COLUMN,
    FINISHED_COLUMN,
    TOPK_COLUMNS,
    check_datasets,
    check_shared_vocab,
    check_sources,
    check_teacher_tokenizer,
    has_topk,
)

__all__ = ["DistillationTrainer"]

_TEACHER_STATS = ("teacher_entropy", "teacher_entropy_sharpened", "selectivity")
# The multimodal inputs TRL's `_compute_loss` forwards to both backbones (VLMs); text-only batches have none.
MULTIMODAL_KEYS = (
    *("pixel_values", "image_grid_thw", "pixel_attention_mask", "spatial_shapes", "image_sizes"),
    *("token_type_ids", "mm_token_type_ids", "image_position_ids"),
)


def _ensure_pad_token(tokenizer) -> None:
    """Pad with EOS (with a warning) when `tokenizer` has no pad token; refuse one with neither."""
    if tokenizer is not None and tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                "the tokenizer has neither a pad token nor an EOS token; set one, e.g. "
                "tokenizer.add_special_tokens({'pad_token': '<pad>'}) and resize the model embeddings."
            )
        warnings.warn(f"tokenizer has no pad token; padding with EOS {tokenizer.eos_token!r}.", stacklevel=3)
        tokenizer.pad_token = tokenizer.eos_token


class DistillationTrainer(trl.DistillationTrainer):
    r"""
    Knowledge distillation of a causal LM with an entropy-controlled (sharpened) teacher.

    Extends [`trl.DistillationTrainer`] (same arguments) with, from [`hf_kd.DistillationConfig`]:

    - **teacher sharpening**: with TRL's `temperature` T (both sides, as in TRL), the teacher's next-token
      distribution is ``softmax(selectivity * z / T)``, in the loss and when the teacher samples; or `selectivity` is
      solved for a `target_entropy` (per batch or per token). At `selectivity=1` the loss is TRL's;
    - **completion sources**: `"student"` (on-policy), `"teacher"` (the sharpened teacher samples: online
      sequence-level KD), `"dataset"` (the `completion` column) or a mixture drawn identically on every rank;
    - **losses**: `"nll"` (no teacher forward), forward/reverse KL, generalized JSD, skew KLs, TVD, all computed in
      token chunks from hidden states (memory bounded at large vocabularies).

    Datasets written by `hf_kd.generate_distillation_dataset` are read as they were sampled: their `completion_ids`
    are used directly (not the re-tokenised text), and samples cut off at the length limit (`finished=False`) get no
    EOS. With `store_topk=K` they also hold the teacher's top-k log-probs per token; on dataset batches the KL-family
    losses then use those (`hf_kd.topk`, tail handled as `args.topk_tail` says) and `teacher_model` may be None.
    Such a dataset's prompts must tokenise as they did at generation (plain text, not a chat template).

    Logged metrics (besides TRL's): `teacher_entropy` and `teacher_entropy_sharpened` (nats per completion token,
    before/after sharpening), `selectivity` (its mean), `entropy` (the student's), `completions/from_<source>`.

    LoRA: pass `peft_config` (target attention/MLP modules, not `lm_head`); `trainer.save_model()` writes the adapter,
    and `trainer.model.merge_and_unload().save_pretrained(path)` writes a merged student.

    Example:

    ```python
    >>> from hf_kd import DistillationConfig, DistillationTrainer
    >>> args = DistillationConfig("out", completion_source="teacher", loss_type="nll", selectivity=2.0)
    >>> trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=dataset)
    >>> trainer.train()
    ```

    As a drop-in for [`trl.DistillationTrainer`]: a `trl.DistillationConfig` is accepted (hf_kd's fields at their
    defaults), models may be given as instances, paths or PeftModels, VLM batches keep their images, and models that
    post-process their logits (``logit_scale``, ``final_logit_softcapping``, ...) are handled as TRL handles them.
    Resuming is exact across epochs (the shuffle of each epoch depends on (seed, epoch) only), and
    ``train(resume_from_checkpoint=True)`` skips a half-written last checkpoint. Saved checkpoints, `save_model`
    and `push_to_hub` write hf_kd's model card.
    """

    _tag_names = ["trl", "distillation", "hf_kd"]

    def __init__(
        self,
        model,
        teacher_model=None,
        args: DistillationConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
        tools=None,
    ):
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
            args = DistillationConfig(f"{str(name).rstrip('/').split('/')[-1] or 'model'}-hf_kd")
        args = DistillationConfig.from_trl(args)
        sources = args.source_probabilities()
        use_topk = sources.get("dataset", 0) > 0 and args.loss_type != "nll" and has_topk(train_dataset, eval_dataset)
        check_sources(args, sources, use_topk, teacher_model, tools, train_dataset, eval_dataset)
        check_datasets(train_dataset, eval_dataset, None, reads_dataset_completions=False)  # before TRL reads them
        _ensure_pad_token(getattr(processing_class, "tokenizer", processing_class))

        super().__init__(
            model=model,
            teacher_model=teacher_model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=peft_config,
            tools=tools,
        )
        # Checked on the models TRL built, whether they were given as instances, paths or PeftModels.
        vocab = check_shared_vocab(self.model, self.teacher_model)
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        check_datasets(train_dataset, eval_dataset, tokenizer, reads_dataset_completions=sources.get("dataset", 0) > 0)
        check_teacher_tokenizer(teacher_model, tokenizer)
        if self._is_vlm and sources.get("teacher", 0) > 0:
            raise ValueError(
                "completion_source='teacher' does not pass images to the teacher's generate yet; with a vision-"
                "language model use completion_source='student' or 'dataset'."
            )
        if args.target_entropy is not None:
            check_target_entropy(args.target_entropy, vocab)
        self.vocab_size = vocab  # the student's lm_head rows, shared with the teacher (checked above)
        self.source_probabilities = sources
        if sources.get("teacher", 0) > 0:  # refuses sampling settings hf_kd.sampling does not implement
            self._sample_teacher = CompletionSampler.for_teacher(self.generation_config, args, self.temperature)
        self._sample_student = self._student_sampler(tools) if sources.get("student", 0) > 0 else None
        teacher = self.accelerator.unwrap_model(self.teacher_model) if self.teacher_model is not None else None
        self._reuse_teacher = sources.get("teacher", 0) > 0 and reuses_sampling_states(teacher, tools)
        self._pending_teacher_states = None
        self.use_topk = use_topk
        self._source = "student"
        self._pending_dataset = None
        self._pending_stats = None

    def _student_sampler(self, tools) -> CompletionSampler | None:
        """hf_kd's sampling layer for on-policy completions (TRL's law at 20-30 % less time a token on CPUs: its
        fused decode step, no `generate` loop), or None where TRL's `generate` stays (the reason is logged once)."""
        why_not = None
        if not fast_decode_enabled(self.accelerator.device):
            why_not = "the fast decode path is off on this device"
        elif self.use_vllm or self._is_vlm or tools:
            why_not = "vLLM, images and tools go through TRL's generation"
        else:
            try:
                sampler = CompletionSampler(
                    self.generation_config, self.temperature, self.args.seed, stream=("student",)
                )
            except ValueError as error:
                why_not = str(error)
        log_once(
            f"hf_kd on-policy student sampling: TRL's generate ({why_not})."
            if why_not
            else "hf_kd on-policy student sampling: hf_kd.sampling.sample_batch (TRL's law; per-row seeds from (seed, "
            "step, process, row), so a resumed run redraws the same completions; $HF_KD_FAST_DECODE=off: TRL's "
            "generate)."
        )
        return None if why_not else sampler

    def _set_signature_columns_if_needed(self):
        # TRL keeps only the prompt (and images) when remove_unused_columns=True; the dataset source needs its columns.
        super()._set_signature_columns_if_needed()
        extra = [COMPLETION_COLUMN, COMPLETION_IDS_COLUMN, FINISHED_COLUMN, *TOPK_COLUMNS, "sample_id"]
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *extra]))

    def _get_train_sampler(self, dataset=None):
        # TRL's sampler, with each epoch's shuffle drawn from (seed, epoch): a resume in any epoch sees that epoch.
        s = super()._get_train_sampler(dataset)
        keys = ("data_source", "mini_repeat_count", "batch_size", "repeat_count", "shuffle", "seed")
        return EpochSeededRepeatSampler(**{k: getattr(s, k) for k in keys})

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """`transformers.Trainer.train`; `resume_from_checkpoint=True` takes the newest *complete* checkpoint, skipping
        (with a warning) one left half-written by a killed run, and starts afresh when there is none."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None, **kwargs):
        """Write hf_kd's model card (`hf_kd.model_card`) to ``output_dir/README.md``: called by checkpoints and
        `push_to_hub` in place of TRL's. Precision and recall are included when a `hf_kd.PrecisionRecallCallback`
        of this trainer has measured them."""
        self._write_model_card(None, model_name, dataset_name, tags, kwargs.get("license"))

    def save_model(self, output_dir=None, _internal_call=False):
        """`transformers.Trainer.save_model`, plus hf_kd's model card (README.md) beside the saved weights."""
        super().save_model(output_dir, _internal_call)
        self._write_model_card(output_dir)

    def _write_model_card(self, output_dir, model_name=None, dataset_name=None, tags=None, license=None):
        from .metrics.callback import PrecisionRecallCallback
        from .model_card import _name_or_path, results_from_trainer, write_trainer_model_card

        overrides = {"model_name": model_name} if model_name else {}
        if dataset_name:
            overrides["datasets"] = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name)
        if license:
            overrides["license"] = license
        results = results_from_trainer(self, **overrides)
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, PrecisionRecallCallback) and callback.last_result:
                reference = _name_or_path(getattr(callback.reference, "model", None))
                results = results.with_precision_recall(callback.last_result, reference)
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        write_trainer_model_card(
            self, output_dir, results=results, tags=list(dict.fromkeys([*self._tag_names, *tags]))
        )

    # ----------------------------------------------------------------------------------------------- completions
    def _generate_and_score_completions(self, inputs):
        # One source per generation batch, drawn from (seed, global step): the same on every rank and after a resume.
        self._source = draw_source(self.source_probabilities, self.args.seed, self.state.global_step)
        self._pending_dataset = inputs if self._source == "dataset" else None
        output = super()._generate_and_score_completions(inputs)
        states, self._pending_teacher_states = self._pending_teacher_states, None
        if states is not None and self._source == "teacher":
            output[TEACHER_STATES] = pad_states(states, output["completion_ids"].shape[1]).to(self.accelerator.device)
        if self._source == "dataset" and self.use_topk and self.args.loss_type != "nll":
            output.update(self._stored_topk(inputs, output["completion_ids"].shape[1]))
        mode = "train" if self.model.training else "eval"
        if len(self.source_probabilities) > 1:
            for name in self.source_probabilities:
                self._metrics[mode][f"completions/from_{name}"].append(float(name == self._source))
        return output

    def _stored_topk(self, inputs, width: int) -> dict[str, torch.Tensor]:
        """The dataset's top-k teacher ids and log-probs as `(B, width, K)` tensors aligned with the completion ids."""
        device = self.accelerator.device
        rows = []
        for x in inputs:
            ids, top_ids, top_lp = x.get(COMPLETION_IDS_COLUMN), x[TOPK_COLUMNS[0]], x[TOPK_COLUMNS[1]]
            if ids is None or len(top_ids) != len(ids) or len(top_lp) != len(ids):
                raise ValueError(
                    f"a dataset row has {len(top_ids)} top-k rows for {None if ids is None else len(ids)} "
                    f"'{COMPLETION_IDS_COLUMN}': the stored top-k must hold one row per completion token (as "
                    "hf_kd.generate_distillation_dataset writes them); do not edit completions of such a dataset."
                )
            rows.append((torch.as_tensor(top_ids, dtype=torch.long), torch.as_tensor(top_lp, dtype=torch.float32)))
            name = (
                f"sample_id {x['sample_id']}" if "sample_id" in x else f"the row with prompt {str(x['prompt'])[:60]!r}"
            )
            check_topk(*rows[-1], self.vocab_size, f"dataset {name}")
        top_ids, top_lp = pad_topk_rows(rows, width)
        return {TOPK_COLUMNS[0]: top_ids.to(device), TOPK_COLUMNS[1]: top_lp.to(device)}

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, has_tool_images=False):
        if self._source == "dataset":
            inputs, self._pending_dataset = self._pending_dataset, None
            if inputs[0].get(COMPLETION_IDS_COLUMN) is not None:  # a generated dataset: the sampled ids as they are
                finished = [x[FINISHED_COLUMN] for x in inputs] if FINISHED_COLUMN in inputs[0] else None
                return dataset_completion_ids(
                    [x[COMPLETION_IDS_COLUMN] for x in inputs],
                    finished,
                    eos_token_id=self._tokenizer.eos_token_id,
                    eos_token_ids=self.eos_token_ids,
                    max_length=self.max_completion_length,
                )
            return tokenize_completions(
                self.processing_class,
                [x["prompt"] for x in inputs],
                [x.get(COMPLETION_COLUMN) for x in inputs],
                prompt_ids,
                eos_token_id=self._tokenizer.eos_token_id,
                max_length=self.max_completion_length,
                chat_template_kwargs=self.chat_template_kwargs,
            )
        if self._source == "teacher":
            # Gathered once for the whole generate under ZeRO-3 (TRL's `ds3_gather_for_generation`), not per token.
            with unwrap_model_for_generation(
                self.teacher_model, self.accelerator, gather_deepspeed3_params=self.args.ds3_gather_for_generation
            ) as teacher:
                key, ids = self._sampling_key(), self._sampling_ids()
                rows = self._sample_teacher(teacher, prompt_ids, key, return_head_inputs=self._reuse_teacher, **ids)
            if self._reuse_teacher:  # the loss reads the teacher's states from its sampling pass (same numbers)
                self._pending_teacher_states = [row["head_inputs"] for row in rows]
            return [row["completion_ids"] for row in rows]
        if self._sample_student is not None:  # on-policy through hf_kd.sampling (TRL's law)
            with (
                unwrap_model_for_generation(
                    self.model_wrapped,
                    self.accelerator,
                    gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                    gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
                ) as student,
                self._dist.summon_full_params(self.model_wrapped, recurse=False),
            ):
                rows = self._sample_student(student, prompt_ids, self._sampling_key(), **self._sampling_ids())
            return [row["completion_ids"] for row in rows]
        # On-policy through TRL's own `generate` (same processors, same RNG), its decode steps on the fast kernels.
        with fast_decode(self.accelerator.unwrap_model(self.model), "on-policy student sampling"):
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, has_tool_images)

    def _sampling_key(self) -> tuple:
        """(mode, global step, process index): what a sampler's per-row seeds are drawn from, besides the run seed."""
        mode = "train" if self.model.training else "eval"
        return mode, self.state.global_step, self.accelerator.process_index

    def _sampling_ids(self) -> dict:
        return {"eos_token_ids": self.eos_token_ids, "pad_token_id": self._tokenizer.pad_token_id}

    # ------------------------------------------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # Gathered here, outside the DDP-wrapped forward, as TRL does for the student entropy.
        stats, self._pending_stats = self._pending_stats, None
        if stats is not None:
            mode = "train" if self.model.training else "eval"
            totals = self.accelerator.gather_for_metrics(stats.reshape(1, -1)).reshape(-1, stats.numel()).sum(0)
            count = totals[0].clamp_min(1)
            for name, value in zip(_TEACHER_STATS, totals[1:]):
                self._metrics[mode][name].append((value / count).item())
        return result

    def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
        args = self.args
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        loss_mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            loss_mask = loss_mask * inputs["tool_mask"]
        multimodal = {k: inputs[k] for k in MULTIMODAL_KEYS if k in inputs}  # images reach both backbones
        forward = (input_ids, attention_mask, inputs["completion_ids"].size(1))

        student_head = unwrapped_student.get_output_embeddings()
        device = student_head.weight.device
        valid = loss_mask.bool().to(device)
        h_s = self._get_last_hidden_state(unwrapped_student, *forward, **multimodal)
        h_s = h_s.to(device)[valid]  # (N, H): scored tokens only
        w_s, b_s = head_weight_and_bias(student_head, h_s.dtype)
        post_s = logit_postprocessing(unwrapped_student)
        common = dict(
            temperature=self.temperature,
            jsd_beta=self.beta,
            skew_alpha=args.skew_alpha,
            num_items_in_batch=num_items_in_batch,
            student_bias=b_s,
            chunk_size=args.loss_chunk_size,
            student_logit_scale=post_s.scale,
            student_final_logit_softcapping=post_s.softcap,
        )
        stats = {}  # summed entropies, filled by the loss from the log-probs it computes anyway
        if args.loss_type == "nll":
            labels = inputs["completion_ids"].to(device)[valid]
            loss = chunked_distillation_loss(h_s, w_s, loss_type="nll", labels=labels, stats=stats, **common)
        elif TOPK_COLUMNS[0] in inputs:  # the dataset's stored teacher top-k replaces the live teacher
            top_ids, top_lp = (inputs[c].to(device)[valid] for c in TOPK_COLUMNS)
            selectivity = self._topk_selectivity(top_lp)
            topk = dict(loss_type=args.loss_type, tail=args.topk_tail, selectivity=selectivity)
            loss = chunked_topk_distillation_loss(h_s, w_s, top_ids, top_lp, **topk, **common)
            self._stash_topk_stats(top_lp, selectivity)
            return loss, self._student_entropy_sum(h_s.detach(), w_s, b_s, post_s), valid.sum()
        else:
            h_t, w_t, b_t, post_t = self._teacher_head_inputs(forward, multimodal, device, valid, inputs)
            selectivity = self._selectivity_for(h_t, w_t, b_t, post_t)
            teacher = dict(teacher_bias=b_t, teacher_logit_scale=post_t.scale)
            teacher["teacher_final_logit_softcapping"] = post_t.softcap
            loss = chunked_distillation_loss(
                h_s, w_s, h_t, w_t, loss_type=args.loss_type, selectivity=selectivity, stats=stats, **teacher, **common
            )
            self._pending_stats = torch.stack(
                [stats.get(k, h_s.new_zeros(())).float() for k in ("num_tokens", *_TEACHER_STATS)]
            )
        return loss, stats.get("student_entropy", h_s.new_zeros(())).float(), valid.sum()

    def _teacher_head_inputs(self, forward, multimodal, device, valid, inputs):
        """The teacher's last hidden states at the scored tokens `(N, H_t)`, its head weight and bias, and its logit
        post-processing; `forward` is ``(input_ids, attention_mask, logits_to_keep)``. Teacher-sampled batches carry
        the states from the sampling pass (`TEACHER_STATES`), so the teacher does not run over them again."""
        unwrapped_teacher = self.accelerator.unwrap_model(self.teacher_model)
        teacher_head = unwrapped_teacher.get_output_embeddings()
        if teacher_head.weight.device != device:  # the loss pairs both heads' logits chunk by chunk
            raise ValueError(
                f"The student `lm_head` is on {device} but the teacher `lm_head` is on "
                f"{teacher_head.weight.device}. Place both on the same device in their `device_map`."
            )
        self.teacher_model.eval()
        if TEACHER_STATES in inputs:
            h_t = inputs[TEACHER_STATES]
        else:
            with torch.no_grad():
                h_t = self._forward_redirection(
                    self.teacher_model,
                    unwrapped_teacher,
                    self._get_last_hidden_state,
                    unwrapped_teacher,
                    *forward,
                    **multimodal,
                )
        h_t = h_t.to(device)[valid]
        w_t, b_t = head_weight_and_bias(teacher_head, h_t.dtype)
        return h_t, w_t, b_t, logit_postprocessing(unwrapped_teacher)

    def _chunk_slices(self, n: int, cap: int | None = None) -> list[slice]:
        """Slices of `n` tokens: `args.loss_chunk_size` (or the losses' automatic size), at most `cap` per chunk."""
        size = self.args.loss_chunk_size or default_chunk_size(self.vocab_size)
        return chunk_slices(n, min(size, cap or n or 1))

    @torch.no_grad()
    def _student_entropy_sum(self, h_s, weight, bias, post) -> torch.Tensor:
        """Sum of the student's token entropy (the top-k path, whose loss does not report it), in small chunks."""
        total = h_s.new_zeros((), dtype=torch.float32)
        for sl in self._chunk_slices(h_s.shape[0], cap=64):
            logits = logit_postprocess(torch.nn.functional.linear(h_s[sl], weight, bias), *post)
            total += token_entropy(logits.float() / self.temperature).sum()
        return total

    @torch.no_grad()
    def _topk_selectivity(self, top_lp) -> float | torch.Tensor:
        """Beta for the stored top-k teacher: `args.selectivity`, or solved for `args.target_entropy` on the
        renormalised top-k at the temperature (``renormalize`` only; `__init__` refuses it with ``bucket``)."""
        args = self.args
        if args.target_entropy is None or top_lp.shape[0] == 0:
            return args.selectivity
        z = top_lp.float() / self.temperature
        selectivity = solve_selectivity(z, args.target_entropy, per_token=args.per_token_selectivity)
        return selectivity if args.per_token_selectivity else selectivity.item()

    @torch.no_grad()
    def _stash_topk_stats(self, top_lp, selectivity) -> None:
        """Teacher entropy metrics over the stored outcomes (top-k, plus the tail bucket with ``bucket``)."""
        n = top_lp.shape[0]
        per_token = isinstance(selectivity, torch.Tensor)
        b = selectivity.float() if per_token else torch.full((n,), float(selectivity), device=top_lp.device)
        sums = torch.zeros(3, device=top_lp.device)
        # At the temperature; `bucket` cannot temper, and runs only where selectivity / temperature = 1.
        unsharpened = 1 / self.temperature if self.args.topk_tail == "renormalize" else 1.0
        for sl in self._chunk_slices(n, cap=4096):
            entropies = []
            for sharpen in (False, True):
                scale = b[sl] / self.temperature if sharpen else unsharpened
                log_p = topk_teacher_log_probs(top_lp[sl], self.args.topk_tail, scale)
                entropies.append(entropy_from_log_probs(log_p).sum())  # 0 log 0 = 0 on an empty tail
            sums += torch.stack([*entropies, b[sl].sum()])
        self._pending_stats = torch.cat([torch.tensor([float(n)], device=top_lp.device), sums])

    @torch.no_grad()
    def _selectivity_for(self, h_t, weight, bias, post) -> float | torch.Tensor:
        """The teacher's selectivity: `args.selectivity`, or solved for `args.target_entropy` (scalar or `(N,)`) on the
        teacher's logits at the temperature (``softmax(selectivity * z / T)`` is the teacher the loss uses)."""
        args = self.args
        if args.target_entropy is None:
            return args.selectivity
        if h_t.shape[0] == 0:
            return 1.0

        def at_temperature(z):  # the teacher the loss uses is softmax(selectivity * post(z) / T)
            return logit_postprocess(z, *post).float() / self.temperature

        return solve_head_selectivity(
            h_t, weight, bias, args.target_entropy, args.per_token_selectivity, args.loss_chunk_size, at_temperature
        )
