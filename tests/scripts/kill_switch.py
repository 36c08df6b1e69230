"""Preempt a generation run at the worst moment: SIGKILL while shard N is written but not yet renamed into place."""

import os
import signal

from hf_kd.generation import schema


def kill_before_shard(n: int) -> None:
    """Patch `os.replace` (as `hf_kd.generation.schema` calls it; this process only) to SIGKILL before shard n lands.

    The shard's temporary file is left behind, as a real preemption would leave it.
    """
    real_replace, written = os.replace, []

    def replace_or_die(src, dst):
        if str(dst).endswith(".parquet"):
            if len(written) == n:
                os.kill(os.getpid(), signal.SIGKILL)
            written.append(dst)
        return real_replace(src, dst)

    schema.os.replace = replace_or_die  # the module's `os` is the os module: patched for this process only
