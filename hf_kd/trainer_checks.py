"""Checks `hf_kd.DistillationTrainer` runs at construction, so that bad input fails there with a clear message
instead of inside TRL or torch at step 1 (or, worse, trains silently on mismatched tokens)."""

from __future__ import annotations

import os

from .fingerprint import TOKEN_ID_SIGNATURE_COLUMN, token_id_signature

__all__ = ["check_datasets", "check_sources", "check_teacher_tokenizer", "column_names", "has_topk", "iter_datasets"]

# Dataset completions: free text, or (from hf_kd.generation) the sampled ids as they are, whether the teacher
# stopped, and its stored top-k.
COMPLETION_COLUMN = "completion"
COMPLETION_IDS_COLUMN, FINISHED_COLUMN = "completion_ids", "finished"
TOPK_COLUMNS = ("topk_ids", "topk_logprobs")

_CROSS_TOKENIZER = (
    "Token-level distillation compares distributions over the same token ids; for a teacher and student with "
    "different tokenizers use cross-tokenizer distillation (e.g. trl.experimental.gold.GOLDTrainer with "
    "use_uld_loss=True)."
)


def column_names(dataset) -> list[str] | None:
    names = getattr(dataset, "column_names", None)
    if names is None and getattr(dataset, "features", None) is not None:
        names = list(dataset.features)
    return names


def iter_datasets(train_dataset, eval_dataset):
    """(split name, dataset) pairs, eval dicts flattened, Nones dropped."""
    for split, dataset in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
        for ds in dataset.values() if isinstance(dataset, dict) else [dataset]:
            if ds is not None:
                yield split, ds


def has_topk(train_dataset, eval_dataset) -> bool:
    """Whether every given dataset stores the teacher's top-k log-probs (store_topk=K in hf_kd.generation)."""
    found = [column_names(ds) for _, ds in iter_datasets(train_dataset, eval_dataset)]
    return bool(found) and all(names is not None and set(TOPK_COLUMNS) <= set(names) for names in found)


def check_sources(args, sources, use_topk, teacher_model, tools, train_dataset, eval_dataset) -> None:
    """The completion sources and loss of `args` against what is given: a teacher, stored top-k, columns, tools."""
    offline = set(sources) == {"dataset"} and (args.loss_type == "nll" or use_topk)
    if teacher_model is None and not offline:
        raise ValueError(
            f"loss_type={args.loss_type!r} with completion_source={args.completion_source!r} needs a "
            "teacher_model. Without one, train on completion_source='dataset' with loss_type='nll', or with a "
            "KL-family loss on a dataset that stores the teacher's top-k log-probs (columns "
            f"{list(TOPK_COLUMNS)}, written by hf_kd.generate_distillation_dataset(..., store_topk=K))."
        )
    sharpened = args.selectivity != args.temperature or args.target_entropy is not None
    if use_topk and args.topk_tail == "bucket" and sharpened:
        raise ValueError(
            "the dataset stores the teacher's top-k log-probs and topk_tail='bucket' cannot sharpen or temper "
            f"them (the tail's inner shape is unknown; selectivity={args.selectivity}, temperature="
            f"{args.temperature}); set topk_tail='renormalize' to do it on the top-k support, or keep "
            "selectivity / temperature = 1 and sample the dataset at the selectivity you want."
        )
    if tools and set(sources) != {"student"}:
        raise ValueError("tools are only supported with completion_source='student' (multi-turn generation).")
    if sources.get("dataset", 0) > 0:
        for split, ds in iter_datasets(train_dataset, eval_dataset):
            names = column_names(ds)
            if names is not None and not {COMPLETION_COLUMN, COMPLETION_IDS_COLUMN} & set(names):
                raise ValueError(
                    f"completion_source={args.completion_source!r} reads completions from a "
                    f"'{COMPLETION_COLUMN}' column (or '{COMPLETION_IDS_COLUMN}'), but {split} has only {names}. "
                    "Add the column (e.g. dataset.rename_column('response', 'completion')) or use another "
                    "completion_source."
                )


def describe_tokenizer(tokenizer) -> str:
    """``'name' (signature ..., N tokens)`` for error messages."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    return f"{name!r} (signature {token_id_signature(tokenizer)}, {len(tokenizer)} tokens)"


def _encodes_to_nothing(tokenizer, text: str) -> bool:
    return len(tokenizer(text=[text])["input_ids"][0]) == 0


def check_datasets(train_dataset, eval_dataset, tokenizer, reads_dataset_completions: bool) -> None:
    """Prompts present and encodable, a non-empty train set, and generated completion ids from this tokenizer."""
    if train_dataset is not None and hasattr(train_dataset, "__len__") and len(train_dataset) == 0:
        raise ValueError("train_dataset is empty: there is nothing to train on. Check the split and any filtering.")
    for split, ds in iter_datasets(train_dataset, eval_dataset):
        names = column_names(ds)
        if names is None:  # an iterable dataset of unknown columns: TRL reads the prompts as they come
            continue
        if "prompt" not in names:
            raise ValueError(
                f"{split} has no 'prompt' column (columns: {names}); the trainer generates or scores a completion "
                "for every prompt. Rename the column, e.g. dataset.rename_column('question', 'prompt')."
            )
        if tokenizer is not None and hasattr(ds, "__getitem__") and hasattr(ds, "__len__"):
            blank = {p for p in ds["prompt"] if isinstance(p, str) and not p.strip()}
            for prompt in blank:
                if _encodes_to_nothing(tokenizer, prompt):
                    raise ValueError(
                        f"{split} has an empty prompt {prompt!r} and the tokenizer adds no BOS token, so it encodes "
                        "to no token and there is nothing to condition on. Drop such rows (dataset.filter(lambda x: "
                        "x['prompt'].strip() != '')), or give the tokenizer a BOS token that it adds."
                    )
        if reads_dataset_completions and tokenizer is not None and TOKEN_ID_SIGNATURE_COLUMN in names:
            recorded = ds[0][TOKEN_ID_SIGNATURE_COLUMN] if len(ds) else None
            if recorded is not None and recorded != token_id_signature(tokenizer):
                raise ValueError(
                    f"{split}'s completion_ids were written with a tokenizer of signature {recorded} (recorded by "
                    f"hf_kd.generate_distillation_dataset), but the trainer's tokenizer is "
                    f"{describe_tokenizer(tokenizer)}: the ids would be read as other tokens. Train with the "
                    "tokenizer the dataset was generated with, or regenerate the dataset with this one. "
                    + _CROSS_TOKENIZER
                )


def _saved_tokenizer(model):
    """The tokenizer saved next to `model` (a local path, or a model loaded from one); None if there is none."""
    name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", None)
    if not name or not os.path.isdir(name):
        return None  # a Hub id or a model built in code: nothing to read without a download
    if not any(os.path.isfile(os.path.join(name, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        return None  # weights only (AutoTokenizer would build a default tokenizer from the config)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError, TypeError):
        return None


def check_teacher_tokenizer(teacher, student_tokenizer) -> None:
    """The teacher's own tokenizer (when saved beside it) must map text to the same ids as the student's."""
    if teacher is None or student_tokenizer is None:
        return
    teacher_tokenizer = _saved_tokenizer(teacher)
    if teacher_tokenizer is None:
        return
    if token_id_signature(teacher_tokenizer) != token_id_signature(student_tokenizer):
        raise ValueError(
            f"the teacher's tokenizer {describe_tokenizer(teacher_tokenizer)} differs from the student's "
            f"{describe_tokenizer(student_tokenizer)}, so the same id means different text to each. "
            + _CROSS_TOKENIZER
        )


def check_shared_vocab(student, teacher) -> int:
    """The student's vocabulary size (its lm_head rows), after checking that the teacher (if any) has the same."""
    vocab = student.get_output_embeddings().weight.shape[0]
    teacher_vocab = teacher.get_output_embeddings().weight.shape[0] if teacher is not None else vocab
    if teacher_vocab != vocab:
        raise ValueError(
            f"student vocab_size {vocab} != teacher vocab_size {teacher_vocab}: distillation "
            "needs a shared tokenizer and vocabulary. Use a teacher and student from the same family, or resize "
            "one model's embeddings with model.resize_token_embeddings(len(tokenizer)) after aligning tokenizers."
        )
    return vocab
