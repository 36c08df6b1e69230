"""The files of a teacher-sample dataset: parquet schema, shard names, atomic writes, the run's argument record."""

from __future__ import annotations

import glob
import json
import math
import os

from ..fingerprint import TOKEN_ID_SIGNATURE_COLUMN, fingerprint_changes

__all__ = [
    "ARGS_FILE",
    "arrow_schema",
    "check_or_record_arguments",
    "refuse_stray_shards",
    "remove_stale_temporaries",
    "shard_path",
    "stray_shards",
    "write_atomic",
]

ARGS_FILE = "generation_args.json"


def arrow_schema(store_topk: int):
    """The parquet schema of the shards (the columns of `hf_kd.generation`'s docstring)."""
    import pyarrow as pa

    fields = [
        ("sample_id", pa.int64()),
        ("prompt", pa.string()),
        ("completion", pa.string()),
        ("completion_ids", pa.list_(pa.int32())),
        ("num_tokens", pa.int32()),
        ("finished", pa.bool_()),
        ("teacher_logprob", pa.float64()),
        ("sampling_logprob", pa.float64()),
        ("mean_selectivity", pa.float64()),
        (TOKEN_ID_SIGNATURE_COLUMN, pa.string()),
    ]
    if store_topk:
        fields += [("topk_ids", pa.list_(pa.list_(pa.int32()))), ("topk_logprobs", pa.list_(pa.list_(pa.float32())))]
    return pa.schema(fields)


def shard_path(output_dir: str, k: int, num_shards: int) -> str:
    """Shard `k` of `num_shards`: ``output_dir/data/train-0000k-of-0000n.parquet``."""
    return os.path.join(output_dir, "data", f"train-{k:05d}-of-{num_shards:05d}.parquet")


def stray_shards(output_dir: str | os.PathLike, num_samples: int | None = None, batch_size: int | None = None):
    """The parquet files in ``output_dir/data`` that are not shards of the run recorded there (sorted names).

    `load_dataset(output_dir)` would read them with the real shards, so runs and pushes refuse them. The run is
    the one in ``generation_args.json`` unless `num_samples` and `batch_size` are given.
    """
    output_dir = os.fspath(output_dir)
    if num_samples is None or batch_size is None:
        with open(os.path.join(output_dir, ARGS_FILE)) as f:
            record = json.load(f)
        num_samples, batch_size = record.get("num_samples"), record.get("batch_size")
        if not isinstance(num_samples, int) or not isinstance(batch_size, int):
            return []  # not written by generate_distillation_dataset: nothing to compare with
    num_shards = math.ceil(num_samples / batch_size)
    expected = {os.path.basename(shard_path(output_dir, k, num_shards)) for k in range(num_shards)}
    found = glob.glob(os.path.join(output_dir, "data", "*.parquet"))
    return sorted(name for name in map(os.path.basename, found) if name not in expected)


def refuse_stray_shards(output_dir: str, num_samples: int, batch_size: int) -> None:
    """Raise a `ValueError` naming the parquet files of ``output_dir/data`` that are not this run's shards."""
    if stray := stray_shards(output_dir, num_samples, batch_size):
        raise ValueError(
            f"{os.path.join(output_dir, 'data')} holds {len(stray)} parquet file(s) that are not shards of this run "
            f"({', '.join(stray[:3])}{', ...' if len(stray) > 3 else ''}); load_dataset would read them as rows of "
            "this dataset. Remove them, or use a new output_dir."
        )


def write_atomic(table, path: str) -> None:
    """Write a pyarrow table to `path` through a temporary file and a rename."""
    import pyarrow.parquet as pq

    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # a reader (or a resumed run) sees the whole shard or none of it


def remove_stale_temporaries(output_dir: str) -> None:
    """Remove the temporary shard files a killed run left (call once every shard is in place)."""
    for stale in glob.glob(os.path.join(output_dir, "data", ".*.tmp-*")):
        os.remove(stale)


def check_or_record_arguments(output_dir: str, record: dict) -> None:
    """Record the run's arguments in ``generation_args.json``, or refuse a resume whose arguments or teacher differ."""
    path = os.path.join(output_dir, ARGS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        ignored = ("command", "teacher_fingerprint")
        changed = {k for k in record.keys() | previous.keys() if k not in ignored and record.get(k) != previous.get(k)}
        if changed:
            raise ValueError(
                f"{output_dir} holds a run with different arguments ({', '.join(sorted(changed))}); resuming would "
                "mix two distributions. Use a new output_dir, or the same arguments to resume."
            )
        if changes := fingerprint_changes(previous.get("teacher_fingerprint"), record["teacher_fingerprint"]):
            raise ValueError(
                f"{output_dir} was sampled from a different teacher: its {', '.join(changes)} changed. Resuming "
                "would mix two teachers' samples in one dataset; resume with the original teacher, or use a new "
                "output_dir."
            )
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, path)
