"""Checks of user input shared by the API, the CLI and the recipes: raised early, naming the problem and the fix.

Every check raises `ValueError`; the `hf-kd` command prints such errors as one line
(``hf-kd <command>: error: ...``) and exits with status 2.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["check_model_path", "check_output_dir", "check_output_file", "check_token_ids", "parse_dtype"]

DTYPES = ("float32", "float16", "bfloat16", "float64")


def dtype_name(dtype) -> str:
    """``"float32"`` for ``torch.float32``; ``"auto"`` for `None` (the checkpoint's own dtype)."""
    return str(dtype).removeprefix("torch.") if dtype is not None else "auto"


def parse_dtype(dtype):
    """A `torch.dtype` from a name (``"bfloat16"``, ``"torch.float16"``) or a dtype; `None` stays `None`."""
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name == "auto":
        return None
    if name not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not a floating-point torch dtype; use one of {', '.join(DTYPES)}.")
    return getattr(torch, name)


def check_model_path(name_or_path, what: str = "model") -> None:
    """Refuse a local model path that does not exist or holds no checkpoint (transformers would call it a bad repo id).

    Hub ids (``owner/name``) pass; anything that reads as a local path (absolute, ``./``, ``~``, or an existing
    file) must be a folder with a ``config.json`` (or a PEFT ``adapter_config.json``).
    """
    from .sanitize import is_hub_id

    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(f"the {what} must be a Hub id ('owner/name') or a local folder (got {name_or_path!r}).")
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if name.startswith("offline:"):
        from .offline import OFFLINE_MODELS

        if name not in OFFLINE_MODELS:
            raise ValueError(
                f"the {what} {name!r} is not an offline model; the offline names are {sorted(OFFLINE_MODELS)}."
            )
        return
    if path.exists():
        if not path.is_dir() or not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
            raise ValueError(
                f"the {what} {name!r} is not a checkpoint folder (no config.json); give the folder that "
                "save_pretrained wrote, or a Hub id 'owner/name'."
            )
        return
    # `owner/name` is a Hub id unless `owner` is a folder here (then it is a mistyped local path)
    if is_hub_id(name) and not ("/" in name and Path(name.split("/")[0]).is_dir()):
        return
    raise ValueError(
        f"the {what} {name!r} does not exist on this machine and is not a Hub id; give an existing checkpoint "
        "folder (save_pretrained output) or a Hub id 'owner/name'."
    )


def check_output_file(path, option: str = "--output") -> Path | None:
    """Check, before any work, that results can be written to `path` (its folder exists and is writable)."""
    if path is None:
        return None
    if not str(path).strip():
        raise ValueError(f"{option} is empty; give a file name, e.g. {option} results.json.")
    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a folder; give a file name inside it.")
    parent = target.parent
    if not parent.is_dir():
        raise ValueError(f"{option} {str(path)!r}: the folder {str(parent)!r} does not exist; create it first.")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{option} {str(path)!r}: the folder {str(parent)!r} is not writable.")
    return target


def check_output_dir(path, option: str = "output_dir") -> Path:
    """Check, before any work, that `path` names a folder that is or can be created (an empty name is refused)."""
    if path is None or not str(path).strip():
        raise ValueError(f"{option} is empty; name a folder for the output, e.g. {option}=teacher_samples.")
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a file; give a folder.")
    existing = next(p for p in (target, *target.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK):
        raise ValueError(f"{option} {str(path)!r} cannot be written ({str(existing)!r} is not writable).")
    return target


def check_token_ids(ids, vocab_size: int, name: str = "eos_token_ids") -> list[int]:
    """Refuse token ids outside ``[0, vocab_size)`` (an EOS outside the vocabulary could never be sampled)."""
    ids = list(ids)
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < vocab_size]
    if bad:
        raise ValueError(
            f"{name} {bad} are outside the model's vocabulary [0, {vocab_size}); no completion could end with "
            "them. Use the tokenizer's ids (e.g. tokenizer.eos_token_id) or leave them unset."
        )
    return ids
