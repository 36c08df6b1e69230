"""Generate a teacher-sample dataset with the tiny test teacher; run by tests in a subprocess or under torchrun.

`--kill-before-shard N` SIGKILLs this process while shard N (0-based count of shards this process writes) is
written but not yet renamed into place (`kill_switch.kill_before_shard`).
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for conftest
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import make_llama, make_tokenizer  # noqa: E402
from kill_switch import kill_before_shard  # noqa: E402

from hf_kd import generation  # noqa: E402

TEACHER = {"seed": 0, "hidden": 32, "layers": 2}
ARGS = {"prompts": ["the cat", "a dog ran", "red"], "max_new_tokens": 6, "batch_size": 3, "seed": 7, "store_topk": 2}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--kill-before-shard", type=int, default=None)
    args = parser.parse_args()
    if args.kill_before_shard is not None:
        kill_before_shard(args.kill_before_shard)
    tok = make_tokenizer()
    teacher = make_llama(len(tok), **TEACHER)
    ds = generation.generate_distillation_dataset(
        teacher, tok, args.output_dir, args.num_samples, progress=False, command="generate_tiny.py", **ARGS
    )
    print(f"rank {os.environ.get('RANK', 0)}: {len(ds)} rows")


if __name__ == "__main__":
    main()
