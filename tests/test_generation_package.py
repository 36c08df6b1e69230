"""hf_kd.generation as a package: ranks and the barrier from accelerate's PartialState, the vLLM engine's GPU chosen
through vLLM (the process-global CUDA_VISIBLE_DEVICES untouched), and `python -m hf_kd.generation`'s one-line errors.

The two-rank runs (one process vs torchrun --nproc_per_node 2) are in test_generation.py (transformers backend) and
test_generation_vllm.py (vLLM, tests/run_vllm.sh).
"""

import os
import sys
import types

import pytest

from hf_kd import generation
from hf_kd.generation import backends


def test_rank_and_world_are_accelerates():
    from accelerate import PartialState

    state = PartialState()
    assert generation.rank_and_world() == (state.process_index, state.num_processes) == (0, 1)


@pytest.fixture
def fake_vllm(monkeypatch):
    """A stand-in `vllm` module recording the `vllm.LLM` arguments (vLLM itself runs in tests/run_vllm.sh)."""
    calls = []
    vllm = types.ModuleType("vllm")
    vllm.LLM = lambda **kwargs: calls.append(kwargs) or "engine"
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(is_cpu=lambda: False)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    return calls


def test_vllm_engine_picks_its_gpu_through_vllm_not_the_environment(fake_vllm, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    environ = dict(os.environ)
    assert backends.vllm_engine("teacher_dir", None, 3, None, 5, 1, {"enforce_eager": True}) == "engine"
    assert fake_vllm[0]["device_ids"] == [1]  # an index into the visible devices: GPU 5 here
    assert fake_vllm[0]["enforce_eager"] and fake_vllm[0]["max_logprobs"] == 20 and fake_vllm[0]["seed"] == 3
    backends.vllm_engine("teacher_dir", None, 3, None, 5, None, None)  # one process: vLLM's default device
    assert "device_ids" not in fake_vllm[1]
    assert dict(os.environ) == environ


def test_module_command_errors_are_one_line(tmp_path, capsys):
    argv = [str(tmp_path / "no_such_teacher"), "--output_dir", str(tmp_path / "out"), "--num_samples", "2"]
    with pytest.raises(SystemExit) as exit_:
        generation.main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err
    assert err.startswith("python -m hf_kd.generation: error:") and "no_such_teacher" in err
