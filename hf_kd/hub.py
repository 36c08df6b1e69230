"""Push a distilled student (weights, tokenizer, model card) and optionally its teacher-sample dataset to the Hub.

The upload folder is built first, from an allow-list of files: for a model the weights, configs, tokenizer and
adapter files, the remote-code modules its config names, and the card (no scripts, optimizer states,
`training_args.bin`, `trainer_state.json` or checkpoints); for a dataset the parquet shards, the card and the
generation record. Every text file in it is sanitised (`hf_kd.sanitize`: tokens, secret options and keys, URL
credentials, local paths), vocabulary entries excepted; then it goes up through `huggingface_hub.HfApi`
(`create_repo` + `upload_folder`).
[`prepare_model_folder`] and [`prepare_dataset_folder`] build the folders alone, to inspect them before pushing.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard

from .model_card import DistillationResults, render_model_card
from .sanitize import is_hub_id, is_local_path, local_basename, sanitize_text, sanitize_value

__all__ = [
    "DATA_FILE_PATTERNS",
    "MODEL_FILE_PATTERNS",
    "prepare_dataset_folder",
    "prepare_model_folder",
    "push_distilled_student",
]

MODEL_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "adapter_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
)  # plus the remote-code modules that config.json's `auto_map` names (e.g. the GMM's), and nothing else
DATA_FILE_PATTERNS = ("data/*.parquet",)  # plus README.md and generation_args.json, both sanitised
_WEIGHTS = ("*.safetensors", "pytorch_model*.bin")
# Vocabularies are data, not prose: rewriting a token that looks like a path would break the tokenizer.
_VOCABULARY_FILES = ("vocab.json", "vocab.txt", "merges.txt")
_TEXT_SUFFIXES = (".json", ".jinja", ".py", ".md", ".txt")
# JSON subtrees holding vocabulary entries, kept verbatim
_VOCABULARY_KEYS = {"tokenizer.json": ("model", "added_tokens"), "tokenizer_config.json": ("added_tokens_decoder",)}


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def _remote_code_files(src: Path) -> list[str]:
    """The modules named by config.json's `auto_map` (``"modeling_gmm.GMMModel"`` -> ``modeling_gmm.py``) and the
    sibling modules they import relatively (``from .kmeans import ...``), which transformers copies on save and
    fetches on load with them."""
    from transformers.dynamic_module_utils import get_relative_import_files

    if not (src / "config.json").is_file():
        return []
    auto_map = json.loads((src / "config.json").read_text(encoding="utf-8")).get("auto_map") or {}
    refs = [r for v in auto_map.values() for r in (v if isinstance(v, list) else [v]) if isinstance(r, str)]
    names = {f"{r.rsplit('.', 1)[0]}.py" for r in refs if "--" not in r and "." in r}  # "repo--x.Y": code elsewhere
    names = {n for n in names if (src / n).is_file()}
    names |= {Path(f).name for n in names for f in get_relative_import_files(str(src / n))}
    return sorted(names)


def _sanitize_file(path: Path, base_model: str | None) -> None:
    """Sanitise one uploaded text file in place (see `hf_kd.sanitize`); vocabulary entries are left as they are.

    In JSON files every string is sanitised, secret-named keys (``hub_token``, ``api_key``, ...) are redacted, and a
    PEFT adapter's local ``base_model_name_or_path`` becomes the card's `base_model`.
    """
    if path.name in _VOCABULARY_FILES or path.suffix not in _TEXT_SUFFIXES:
        return
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".json":
        clean = sanitize_text(text)
    else:
        data = json.loads(text)
        if not isinstance(data, dict):
            return
        kept = {k: data[k] for k in _VOCABULARY_KEYS.get(path.name, ()) if k in data}
        base = data.get("base_model_name_or_path")
        clean_data = {**sanitize_value({k: v for k, v in data.items() if k not in kept}), **kept}
        for key, value in data.items():  # relative local paths too (`./run`, a folder that exists here)
            if key.endswith("name_or_path") and isinstance(value, str) and value and is_local_path(value):
                clean_data[key] = local_basename(value)
        if isinstance(base, str) and base_model and is_local_path(base):
            clean_data["base_model_name_or_path"] = base_model
        clean_data = {k: clean_data[k] for k in data}  # the original key order
        clean = text if clean_data == data else json.dumps(clean_data, indent=2, ensure_ascii=False) + "\n"
    if clean != text:
        path.write_text(clean, encoding="utf-8")


def _as_card(card: ModelCard | DistillationResults | dict | str, repo_id: str | None) -> ModelCard:
    if isinstance(card, (DistillationResults, dict)):
        return render_model_card(card, repo_id=repo_id)
    if isinstance(card, str):
        return ModelCard(card)
    if isinstance(card, ModelCard):
        return ModelCard(str(card))  # a copy: we may add the dataset to its metadata
    raise ValueError(f"card must be a ModelCard, its text, or DistillationResults (got {type(card).__name__}).")


def prepare_model_folder(
    output_dir: str | os.PathLike,
    card: ModelCard | DistillationResults | dict | str,
    folder: str | os.PathLike,
    repo_id: str | None = None,
    extra_files: tuple[str | os.PathLike, ...] = (),
) -> list[str]:
    """Build the exact folder that [`push_distilled_student`] uploads for the model.

    Args:
        output_dir (`str`): a `save_pretrained` / `trainer.save_model` folder (full model or PEFT adapter).
        card: the model card: a `ModelCard`, its text, or results to render with [`render_model_card`].
        folder (`str`): where to build it (created; must be empty).
        repo_id (`str`, *optional*): the target repository (for rendering the card).
        extra_files (`tuple`, *optional*): more files to publish at the top level (e.g. a precision-recall plot).

    Returns:
        `list[str]`: the relative paths in `folder`, sorted (always including ``README.md``).
    """
    src, dst = Path(output_dir), Path(folder)
    if not (src / "config.json").is_file() and not (src / "adapter_config.json").is_file():
        raise ValueError(
            f"{src.name!r} has no config.json or adapter_config.json: save the student first, "
            "e.g. trainer.save_model(output_dir) and tokenizer.save_pretrained(output_dir)."
        )
    names = sorted(p.name for p in src.iterdir() if p.is_file() and _matches(p.name, MODEL_FILE_PATTERNS))
    names = sorted({*names, *_remote_code_files(src)})
    if not any(_matches(n, _WEIGHTS) for n in names):
        raise ValueError(f"{src.name!r} holds no weights (*.safetensors): save the student with save_pretrained.")
    dst.mkdir(parents=True, exist_ok=True)
    if any(dst.iterdir()):
        raise ValueError(f"the upload folder {dst.name!r} is not empty; pass a new or empty folder.")
    card = _as_card(card, repo_id)
    base_model = card.data.base_model if isinstance(card.data.base_model, str) else None
    for extra in map(Path, extra_files):
        if not extra.is_file():
            raise ValueError(f"extra file {extra.name!r} does not exist.")
    for name in names:
        shutil.copy2(src / name, dst / name)
        _sanitize_file(dst / name, base_model)
    for extra in map(Path, extra_files):
        shutil.copy2(extra, dst / extra.name)
        _sanitize_file(dst / extra.name, base_model)
    ModelCard(sanitize_text(str(card))).save(dst / "README.md")
    return sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())


def prepare_dataset_folder(dataset_dir: str | os.PathLike, folder: str | os.PathLike) -> list[str]:
    """Build the folder uploaded as the teacher-sample dataset: its shards, its card and its generation record.

    `dataset_dir` is either what `hf_kd.generation.generate_distillation_dataset` writes (``data/*.parquet``,
    ``README.md`` and ``generation_args.json``, the last two sanitised; nothing else is uploaded, and shards that do
    not belong to the recorded run are refused) or a `datasets` `save_to_disk` folder (written out as
    ``data/<split>-00000-of-00001.parquet``).

    Returns:
        `list[str]`: the relative paths in `folder`, sorted.
    """
    src, dst = Path(dataset_dir), Path(folder)
    if not src.is_dir():
        raise ValueError(f"dataset_dir {src.name!r} is not a folder.")
    dst.mkdir(parents=True, exist_ok=True)
    if (src / "dataset_dict.json").is_file() or (src / "state.json").is_file():
        from datasets import Dataset, load_from_disk

        loaded = load_from_disk(str(src))
        splits = {"train": loaded} if isinstance(loaded, Dataset) else dict(loaded)
        for split, ds in splits.items():
            (dst / "data").mkdir(exist_ok=True)
            ds.to_parquet(str(dst / "data" / f"{split}-00000-of-00001.parquet"))
    else:
        from .generation import ARGS_FILE, stray_shards

        shards = sorted(p for p in (src / "data").glob("*.parquet") if p.is_file()) if (src / "data").is_dir() else []
        if (src / ARGS_FILE).is_file() and (stray := stray_shards(src)):
            raise ValueError(
                f"dataset_dir {src.name!r} holds shards that its {ARGS_FILE} does not account for "
                f"({', '.join(stray)}); remove them before pushing."
            )
        for path in shards:
            (dst / "data").mkdir(exist_ok=True)
            shutil.copy2(path, dst / "data" / path.name)
    if not any(dst.rglob("*")):
        raise ValueError(
            f"dataset_dir {src.name!r} holds no data files (data/*.parquet) and is not a save_to_disk folder; "
            "generate one with `hf-kd generate`."
        )
    for name in ("README.md", "generation_args.json"):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            _sanitize_file(dst / name, None)
    return sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())


def push_distilled_student(
    output_dir: str | os.PathLike,
    repo_id: str,
    card: ModelCard | DistillationResults | dict | str,
    dataset_dir: str | os.PathLike | None = None,
    dataset_repo_id: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload distilled student (hf_kd)",
    extra_files: tuple[str | os.PathLike, ...] = (),
) -> dict[str, Any]:
    """Upload a distilled student with its model card, and optionally its teacher-sample dataset.

    Args:
        output_dir (`str`): the saved student (see [`prepare_model_folder`]).
        repo_id (`str`): the model repository, ``owner/name`` (created if missing).
        card: a `ModelCard`, its text, or [`DistillationResults`] (rendered with [`render_model_card`]).
        dataset_dir (`str`, *optional*): teacher samples to publish too (see [`prepare_dataset_folder`]).
        dataset_repo_id (`str`, *optional*): their dataset repository; defaults to ``<repo_id>-teacher-samples``.
            It is added to the model card's `datasets`.
        private (`bool`): create the repositories private.
        token (`str`, *optional*): a Hub token; default: the logged-in one (`hf auth login` or `HF_TOKEN`).
        commit_message (`str`): the commit message of both uploads.
        extra_files (`tuple`, *optional*): more files for the model repository (e.g. a precision-recall plot).

    Returns:
        `dict`: ``model_url`` and ``model_files`` (the uploaded relative paths), plus ``dataset_url`` and
        ``dataset_files`` when a dataset was pushed.
    """
    if not is_hub_id(repo_id) or "/" not in repo_id:
        raise ValueError(f"repo_id={repo_id!r} must be a Hub repository id 'owner/name'.")
    if dataset_dir is None and dataset_repo_id is not None:
        raise ValueError("dataset_repo_id is set but dataset_dir is not; pass the generated dataset's folder too.")
    dataset_repo_id = dataset_repo_id or f"{repo_id}-teacher-samples"
    if dataset_dir is not None and (not is_hub_id(dataset_repo_id) or "/" not in dataset_repo_id):
        raise ValueError(f"dataset_repo_id={dataset_repo_id!r} must be a Hub repository id 'owner/name'.")
    card = _as_card(card, repo_id)
    api = HfApi(token=token)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hf_kd_upload_") as tmp:
        if dataset_dir is not None:
            folder = Path(tmp) / "dataset"
            out["dataset_files"] = prepare_dataset_folder(dataset_dir, folder)
            url = api.create_repo(dataset_repo_id, repo_type="dataset", private=private, exist_ok=True)
            api.upload_folder(
                repo_id=dataset_repo_id, folder_path=folder, repo_type="dataset", commit_message=commit_message
            )
            out["dataset_url"] = str(url)
            datasets = card.data.datasets or []
            card.data.datasets = list(dict.fromkeys([*datasets, dataset_repo_id]))
        folder = Path(tmp) / "model"
        out["model_files"] = prepare_model_folder(output_dir, card, folder, repo_id=repo_id, extra_files=extra_files)
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", commit_message=commit_message)
        out["model_url"] = str(url)
    return sanitize_value(out)
