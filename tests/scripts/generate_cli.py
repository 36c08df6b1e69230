"""`python -m hf_kd.generation ARGS`, optionally preempted: `generate_cli.py [--kill-before-shard N] ARGS`.

The vLLM tests use it: vLLM starts its engine in a spawned process, which needs a `__main__` guard like this one.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kill_switch import kill_before_shard  # noqa: E402

from hf_kd import generation  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--kill-before-shard"]:
        kill_before_shard(int(argv[1]))
        argv = argv[2:]
    generation.main(argv)
