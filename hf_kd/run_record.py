"""The config a finished (or half-finished) run was made with, so that a rerun reuses it only when nothing changed.

A recipe writes [`RUN_CONFIG_FILE`] into a run's folder before training; a later invocation compares its own config
with it ([`check_run_dir`]) and either resumes/reuses the run (equal), refuses naming what differs, or, when asked
to retrain, empties the folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["RUN_CONFIG_FILE", "check_run_dir", "config_differences", "write_run_config"]

RUN_CONFIG_FILE = "hf_kd_run_config.json"


def _plain(value: Any) -> Any:
    """The JSON form of `value` (what is written and read back), so live and stored configs compare equal."""
    return json.loads(json.dumps(value, default=str))


def config_differences(stored: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every key whose value differs (a missing key reads as ``<unset>``), sorted."""
    stored, requested = _plain(stored), _plain(requested)
    unset = "<unset>"
    return [
        f"{key}: {stored.get(key, unset)!r} -> {requested.get(key, unset)!r}"
        for key in sorted(stored.keys() | requested.keys())
        if stored.get(key, unset) != requested.get(key, unset)
    ]


def write_run_config(run_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    """Record `config` in `run_dir` (created), atomically."""
    path = Path(run_dir) / RUN_CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_plain(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_run_dir(run_dir: str | os.PathLike, config: dict[str, Any], retrain: bool = False) -> bool:
    """Whether `run_dir` holds a run of exactly `config` (to resume or reuse); refuse or clear it otherwise.

    Args:
        run_dir (`str`): the run's folder (may not exist yet).
        config (`dict`): the requested run's config (JSON-serialisable, `str` used for anything else).
        retrain (`bool`): when the folder holds another run, delete it and return `False` instead of raising.

    Returns:
        `bool`: `True` when the folder holds a run of `config`, `False` when it is absent, empty or was cleared.

    Raises:
        `ValueError`: the folder holds a run with another (or no recorded) config and `retrain` is off; the
        message lists what differs.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return False
    path = run_dir / RUN_CONFIG_FILE
    if path.is_file():
        differences = config_differences(json.loads(path.read_text(encoding="utf-8")), config)
        if not differences:
            return True
        what = f"a run with another config ({'; '.join(differences[:8])}{'; ...' if len(differences) > 8 else ''})"
    else:
        what = "a run with no recorded config (made by an older hf_kd or by hand)"
    if retrain:
        print(f"{run_dir.name}: retraining; the folder held {what}")
        shutil.rmtree(run_dir)
        return False
    raise ValueError(
        f"{run_dir} holds {what}; reusing it would report results of another config. Pass --retrain to train it "
        "again (the folder is replaced), or choose another output_dir."
    )
