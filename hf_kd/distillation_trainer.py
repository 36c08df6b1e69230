"""`DistillationTrainer`: trl.DistillationTrainer plus teacher sharpening, three completion sources, seven losses."""

from __future__ import annotations

import math
import warnings

import torch
import trl
from transformers import PreTrainedModel

from .completions import dataset_completion_ids, draw_source, sample_completions, tokenize_completions
from .distillation_config import DistillationConfig
from .losses import chunked_distillation_loss, default_chunk_size
from .sharpening import entropy_from_log_probs, solve_selectivity, token_entropy
from .topk import chunked_topk_distillation_loss, topk_teacher_log_probs

__all__ = ["DistillationTrainer"]

COMPLETION_COLUMN = "completion"
_TEACHER_STATS = ("teacher_entropy", "teacher_entropy_sharpened", "selectivity")
# Written by hf_kd.generation: the sampled ids (used as they are), whether the teacher stopped, its stored top-k.
COMPLETION_IDS_COLUMN, FINISHED_COLUMN = "completion_ids", "finished"
TOPK_COLUMNS = ("topk_ids", "topk_logprobs")
# Logit post-processing TRL's kernel applies and our loss does not: refuse such models rather than train wrongly.
_UNSUPPORTED_LOGIT_ATTRS = ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def _column_names(dataset) -> list[str] | None:
    names = getattr(dataset, "column_names", None)
    if names is None and getattr(dataset, "features", None) is not None:
        names = list(dataset.features)
    return names


def _datasets(train_dataset, eval_dataset):
    """(split name, dataset) pairs, eval dicts flattened, Nones dropped."""
    for split, dataset in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
        for ds in dataset.values() if isinstance(dataset, dict) else [dataset]:
            if ds is not None:
                yield split, ds


def _has_topk(train_dataset, eval_dataset) -> bool:
    """Whether every given dataset stores the teacher's top-k log-probs (store_topk=K in hf_kd.generation)."""
    found = [_column_names(ds) for _, ds in _datasets(train_dataset, eval_dataset)]
    return bool(found) and all(names is not None and set(TOPK_COLUMNS) <= set(names) for names in found)


def _check_logit_postprocessing(model) -> None:
    if not isinstance(model, PreTrainedModel):
        return
    config = model.config.get_text_config()
    for attr in _UNSUPPORTED_LOGIT_ATTRS + ("final_logit_softcapping",):
        value = getattr(config, attr, None)
        if value is not None and not (attr in _UNSUPPORTED_LOGIT_ATTRS and value == 1):
            raise ValueError(
                f"{type(model).__name__} sets config.{attr}={value}; hf_kd's chunked losses project hidden states "
                "with the plain lm_head and would ignore it. Use trl.DistillationTrainer for this model family."
            )


class DistillationTrainer(trl.DistillationTrainer):
    r"""
    Knowledge distillation of a causal LM with an entropy-controlled (sharpened) teacher.

    Extends [`trl.DistillationTrainer`] (same arguments) with, from [`hf_kd.DistillationConfig`]:

    - **teacher-only sharpening**: the teacher's next-token distribution is ``softmax(selectivity * z)``, in the loss
      and when the teacher samples; or beta is solved for a `target_entropy` (per batch or per token);
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
    before/after sharpening), `selectivity` (mean beta used), `entropy` (the student's), `completions/from_<source>`.

    LoRA: pass `peft_config` (target attention/MLP modules, not `lm_head`); `trainer.save_model()` writes the adapter,
    and `trainer.model.merge_and_unload().save_pretrained(path)` writes a merged student.

    Example:

    ```python
    >>> from hf_kd import DistillationConfig, DistillationTrainer
    >>> args = DistillationConfig("out", completion_source="teacher", loss_type="nll", selectivity=2.0)
    >>> trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=dataset)
    >>> trainer.train()
    ```
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
        if not isinstance(args, DistillationConfig):
            raise ValueError(
                f"args must be an hf_kd.DistillationConfig (got {type(args).__name__}); it carries selectivity, "
                "completion_source and loss_type. Build one with hf_kd.DistillationConfig(output_dir, ...)."
            )
        sources = args.source_probabilities()
        use_topk = sources.get("dataset", 0) > 0 and args.loss_type != "nll" and _has_topk(train_dataset, eval_dataset)
        offline = set(sources) == {"dataset"} and (args.loss_type == "nll" or use_topk)
        if teacher_model is None and not offline:
            raise ValueError(
                f"loss_type={args.loss_type!r} with completion_source={args.completion_source!r} needs a "
                "teacher_model. Without one, train on completion_source='dataset' with loss_type='nll', or with a "
                "KL-family loss on a dataset that stores the teacher's top-k log-probs (columns "
                f"{list(TOPK_COLUMNS)}, written by hf_kd.generate_distillation_dataset(..., store_topk=K))."
            )
        if use_topk and args.topk_tail == "bucket" and (args.selectivity != 1 or args.target_entropy is not None):
            raise ValueError(
                "the dataset stores the teacher's top-k log-probs and topk_tail='bucket' cannot sharpen them (the "
                "tail's inner shape is unknown); set topk_tail='renormalize' to sharpen on the top-k support, or "
                "keep selectivity=1 and sample the dataset at the selectivity you want."
            )
        if tools and set(sources) != {"student"}:
            raise ValueError("tools are only supported with completion_source='student' (multi-turn generation).")
        if sources.get("dataset", 0) > 0:
            for split, ds in _datasets(train_dataset, eval_dataset):
                names = _column_names(ds)
                if names is not None and not {COMPLETION_COLUMN, COMPLETION_IDS_COLUMN} & set(names):
                    raise ValueError(
                        f"completion_source={args.completion_source!r} reads completions from a "
                        f"'{COMPLETION_COLUMN}' column (or '{COMPLETION_IDS_COLUMN}'), but {split} has only {names}. "
                        "Add the column (e.g. dataset.rename_column('response', 'completion')) or use another "
                        "completion_source."
                    )
        if isinstance(model, PreTrainedModel) and isinstance(teacher_model, PreTrainedModel):
            v_s = model.config.get_text_config().vocab_size
            v_t = teacher_model.config.get_text_config().vocab_size
            if v_s != v_t:
                raise ValueError(
                    f"student vocab_size {v_s} != teacher vocab_size {v_t}: distillation needs a shared tokenizer and "
                    "vocabulary. Use a teacher and student from the same family, or resize one model's embeddings "
                    "with model.resize_token_embeddings(len(tokenizer)) after aligning the tokenizers."
                )
        for m in (model, teacher_model):
            _check_logit_postprocessing(m)
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if tokenizer is not None and tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(
                    "the tokenizer has neither a pad token nor an EOS token; set one, e.g. "
                    "tokenizer.add_special_tokens({'pad_token': '<pad>'}) and resize the model embeddings."
                )
            warnings.warn(f"tokenizer has no pad token; padding with EOS {tokenizer.eos_token!r}.", stacklevel=2)
            tokenizer.pad_token = tokenizer.eos_token

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
        vocab = self.model.config.get_text_config().vocab_size
        if args.target_entropy is not None and args.target_entropy >= math.log(vocab):
            raise ValueError(
                f"target_entropy={args.target_entropy} nats is unreachable: with a vocabulary of {vocab} the entropy "
                f"lies in (0, log V = {math.log(vocab):.4f}); choose a value inside that range."
            )
        self.source_probabilities = sources
        self.use_topk = use_topk
        self._source = "student"
        self._pending_dataset = None
        self._pending_stats = None

    def _set_signature_columns_if_needed(self):
        # TRL keeps only the prompt (and images) when remove_unused_columns=True; the dataset source needs its columns.
        super()._set_signature_columns_if_needed()
        extra = [COMPLETION_COLUMN, COMPLETION_IDS_COLUMN, FINISHED_COLUMN, *TOPK_COLUMNS]
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *extra]))

    # ----------------------------------------------------------------------------------------------- completions
    def _generate_and_score_completions(self, inputs):
        # One source per generation batch, drawn from (seed, global step): the same on every rank and after a resume.
        self._source = draw_source(self.source_probabilities, self.args.seed, self.state.global_step)
        self._pending_dataset = inputs if self._source == "dataset" else None
        output = super()._generate_and_score_completions(inputs)
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
        k = rows[0][0].shape[-1]
        out_ids = torch.zeros(len(rows), width, k, dtype=torch.long)
        out_lp = torch.zeros(len(rows), width, k, dtype=torch.float32)
        for i, (top_ids, top_lp) in enumerate(rows):
            n = min(width, top_ids.shape[0])
            if top_ids.shape[-1] != k:
                raise ValueError(f"rows store different top-k sizes ({top_ids.shape[-1]} and {k}); use one K.")
            out_ids[i, :n], out_lp[i, :n] = top_ids[:n], top_lp[:n]
        return {TOPK_COLUMNS[0]: out_ids.to(device), TOPK_COLUMNS[1]: out_lp.to(device)}

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
            return sample_completions(
                self.accelerator.unwrap_model(self.teacher_model),
                prompt_ids,
                self.generation_config,
                pad_token_id=self._tokenizer.pad_token_id,
                eos_token_ids=self.eos_token_ids,
                selectivity=self.args.selectivity,
                target_entropy=self.args.target_entropy,
                per_token=self.args.per_token_selectivity,
            )
        return super()._generate_single_turn(prompt_ids, images, multimodal_fields, has_tool_images)

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
        valid = loss_mask.bool()
        logits_to_keep = inputs["completion_ids"].size(1)

        student_head = unwrapped_student.get_output_embeddings()
        h_s = self._get_last_hidden_state(unwrapped_student, input_ids, attention_mask, logits_to_keep)
        h_s = h_s.to(student_head.weight.device)[valid.to(student_head.weight.device)]  # (N, H): scored tokens only
        common = dict(
            temperature=self.temperature,
            jsd_beta=self.beta,
            skew_alpha=args.skew_alpha,
            num_items_in_batch=num_items_in_batch,
            student_bias=student_head.bias,
            chunk_size=args.loss_chunk_size,
        )
        stats = {}  # summed entropies, filled by the loss from the log-probs it computes anyway
        if args.loss_type == "nll":
            labels = inputs["completion_ids"][valid].to(h_s.device)
            loss = chunked_distillation_loss(
                h_s, student_head.weight, loss_type="nll", labels=labels, stats=stats, **common
            )
        elif TOPK_COLUMNS[0] in inputs:  # the dataset's stored teacher top-k replaces the live teacher
            top_ids, top_lp = (inputs[c].to(h_s.device)[valid.to(h_s.device)] for c in TOPK_COLUMNS)
            beta = self._topk_selectivity(top_lp)
            loss = chunked_topk_distillation_loss(
                h_s, student_head.weight, top_ids, top_lp, loss_type=args.loss_type, tail=args.topk_tail,
                selectivity=beta, **common,
            )  # fmt: skip
            self._stash_topk_stats(top_lp, beta)
            return loss, self._student_entropy_sum(h_s.detach(), student_head.weight, student_head.bias), valid.sum()
        else:
            unwrapped_teacher = self.accelerator.unwrap_model(self.teacher_model)
            self.teacher_model.eval()
            with torch.no_grad():
                h_t = self._forward_redirection(
                    self.teacher_model,
                    unwrapped_teacher,
                    self._get_last_hidden_state,
                    unwrapped_teacher,
                    input_ids,
                    attention_mask,
                    logits_to_keep,
                )
            teacher_head = unwrapped_teacher.get_output_embeddings()
            h_t = h_t.to(h_s.device)[valid.to(h_s.device)]
            beta = self._selectivity_for(h_t, teacher_head.weight, teacher_head.bias)
            loss = chunked_distillation_loss(
                h_s,
                student_head.weight,
                h_t,
                teacher_head.weight,
                loss_type=args.loss_type,
                selectivity=beta,
                teacher_bias=teacher_head.bias,
                stats=stats,
                **common,
            )
            self._pending_stats = torch.stack(
                [stats.get(k, h_s.new_zeros(())).float() for k in ("num_tokens", *_TEACHER_STATS)]
            )
        return loss, stats.get("student_entropy", h_s.new_zeros(())).float(), valid.sum()

    def _chunks(self, n: int, cap: int | None = None):
        size = self.args.loss_chunk_size
        if size is None:  # the automatic size of hf_kd.losses
            size = default_chunk_size(self.model.config.get_text_config().vocab_size)
        size = min(size, cap or n or 1)
        return [slice(i, i + size) for i in range(0, n, size)]

    @torch.no_grad()
    def _student_entropy_sum(self, h_s, weight, bias) -> torch.Tensor:
        """Sum of the student's token entropy (the top-k path, whose loss does not report it), in small chunks."""
        total = h_s.new_zeros((), dtype=torch.float32)
        for sl in self._chunks(h_s.shape[0], cap=64):
            total += token_entropy(torch.nn.functional.linear(h_s[sl], weight, bias).float() / self.temperature).sum()
        return total

    @torch.no_grad()
    def _topk_selectivity(self, top_lp) -> float | torch.Tensor:
        """Beta for the stored top-k teacher: `args.selectivity`, or solved for `args.target_entropy` on the
        renormalised top-k (``renormalize`` only; `__init__` refuses sharpening with ``bucket``)."""
        args = self.args
        if args.target_entropy is None or top_lp.shape[0] == 0:
            return args.selectivity
        beta = solve_selectivity(top_lp.float(), args.target_entropy, per_token=args.per_token_selectivity)
        return beta if args.per_token_selectivity else beta.item()

    @torch.no_grad()
    def _stash_topk_stats(self, top_lp, beta) -> None:
        """Teacher entropy metrics over the stored outcomes (top-k, plus the tail bucket with ``bucket``)."""
        n = top_lp.shape[0]
        b = beta.float() if isinstance(beta, torch.Tensor) else torch.full((n,), float(beta), device=top_lp.device)
        sums = torch.zeros(3, device=top_lp.device)
        for sl in self._chunks(n, cap=4096):
            entropies = []
            for sharpen in (False, True):
                log_p = topk_teacher_log_probs(top_lp[sl], self.args.topk_tail, b[sl] if sharpen else 1.0)
                entropies.append(entropy_from_log_probs(log_p).sum())  # 0 log 0 = 0 on an empty tail
            sums += torch.stack([*entropies, b[sl].sum()])
        self._pending_stats = torch.cat([torch.tensor([float(n)], device=top_lp.device), sums])

    @torch.no_grad()
    def _selectivity_for(self, h_t, weight, bias) -> float | torch.Tensor:
        """The teacher's beta: `args.selectivity`, or solved for `args.target_entropy` (scalar or `(N,)`)."""
        args = self.args
        if args.target_entropy is None:
            return args.selectivity
        if h_t.shape[0] == 0:
            return 1.0
        if args.per_token_selectivity:  # each token is independent: solve chunk by chunk, memory bounded
            logits = (torch.nn.functional.linear(h_t[sl], weight, bias).float() for sl in self._chunks(h_t.shape[0]))
            parts = [solve_selectivity(z, args.target_entropy, per_token=True) for z in logits]
            return torch.cat(parts).to(h_t.dtype)
        # One beta for the batch couples every token: this needs the (N, V) teacher logits of the scored tokens.
        logits = torch.nn.functional.linear(h_t, weight, bias).float()
        return solve_selectivity(logits, args.target_entropy).item()
