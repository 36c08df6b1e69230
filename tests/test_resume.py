"""Exact resume across epochs, and a half-written checkpoint skipped with a warning."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trl.trainer.utils import RepeatSampler

from hf_kd.resume import EpochSeededRepeatSampler, last_complete_checkpoint

SCRIPT = Path(__file__).resolve().parent / "scripts" / "resume_run.py"
SOURCES = ("student", "teacher", "dataset")


def run(*args):
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, timeout=600)
    return done.returncode, done.stderr.decode()[-3000:]


def test_sigkill_after_checkpoint_6_resumes_to_the_same_weights(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    code, err = run(full, "full")
    assert code == 0, err
    for source in SOURCES:
        code, err = run(killed, "kill", source)
        assert code == -9, err  # SIGKILL right after checkpoint-6 was written
        assert last_complete_checkpoint(killed / source).endswith("checkpoint-6")
    # A crash while writing checkpoint-9 of the teacher run: a directory with weights but no trainer_state.json.
    partial = killed / "teacher" / "checkpoint-9"
    shutil.copytree(killed / "teacher" / "checkpoint-6", partial)
    (partial / "trainer_state.json").unlink()
    code, err = run(killed, "resume")
    assert code == 0, err
    assert "skipping" in err and "checkpoint-9" in err and "incomplete" in err
    for source in SOURCES:
        a = load_file(full / f"full-{source}.safetensors")
        b = load_file(killed / f"resume-{source}.safetensors")
        start = load_file(killed / source / "checkpoint-6" / "model.safetensors")
        assert any((a[k] - start[k]).abs().max() > 1e-3 for k in start)  # epochs 2-3 moved the weights
        for k in a:
            torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=f"{source} {k}")


def test_each_epoch_has_its_own_reproducible_order():
    data = list(range(16))
    ours = EpochSeededRepeatSampler(data, mini_repeat_count=1, batch_size=4, repeat_count=1, seed=5)
    trl = RepeatSampler(data, mini_repeat_count=1, batch_size=4, repeat_count=1, seed=5)
    orders = []
    for epoch in range(3):
        ours.set_epoch(epoch)
        orders.append(list(ours))
    assert orders[0] == list(trl)  # epoch 0 is TRL's order
    assert len({tuple(o) for o in orders}) == 3 and all(sorted(o) == data for o in orders)
    fresh = EpochSeededRepeatSampler(data, mini_repeat_count=1, batch_size=4, repeat_count=1, seed=5)
    fresh.set_epoch(2)  # a resumed run's new sampler, in epoch 2
    assert list(fresh) == orders[2]


def test_incomplete_checkpoints_are_skipped_with_a_warning(tmp_path):
    def checkpoint(step, state=True, weights=True, state_text=None):
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        if weights:
            (path / "model.safetensors").write_bytes(b"x")
        if state:
            (path / "trainer_state.json").write_text(state_text or json.dumps({"global_step": step}))

    assert last_complete_checkpoint(tmp_path) is None
    checkpoint(3)
    checkpoint(6)
    checkpoint(9, weights=False)  # killed before the weights landed
    checkpoint(12, state_text='{"global_st')  # killed while writing the state
    checkpoint(15, state=False)
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name
    with pytest.warns(UserWarning) as record:
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-6")
    assert [str(w.message).split(":")[0] for w in record] == [
        f"skipping {tmp_path / f'checkpoint-{n}'}" for n in (15, 12, 9)
    ]
