"""Decoding near the CPU's memory bandwidth: the linear layers of a decode step computed as ``(W @ x^T)^T``.

A decode step multiplies a few rows ``x`` (M = rows still sampling, one token each) by every weight ``W`` (N, K) of the
model, so it is bound by reading the weights, not by arithmetic. For such skinny inputs the kernel behind
`torch.nn.functional.linear` (``x @ W^T``) reads ``W`` far below the memory bandwidth on x86 CPUs, while the same
product written ``W @ x^T`` streams ``W`` once. Measured on the 2-core AMD EPYC where hf_kd is developed (float32,
SmolLM2-135M shapes, see docs/profile_step.md): the tied 49,152 x 576 head takes 17.7 ms at M = 4 through ``F.linear``
and 4.9 ms as ``W @ x^T``. The gain holds up to 64 rows for such wide weights but only up to 4 rows for the layers'
small matrices (slower from 8 rows on), so the rule below keeps ``F.linear`` beyond those sizes. MKL streams ``W``
only when ``x^T`` is a transposed view of a row-major ``x`` (3x slower otherwise), so inputs are made row-major.

A frozen model that decodes many steps (offline generation, metrics sampling) can do better still: `packed_weights`
keeps a copy of each weight in oneDNN's blocked layout, which oneDNN multiplies near the bandwidth at any row count
(the head: 3.7 ms at 4 rows, 18 ms at 64 against 37 ms as ``W @ x^T`` and 39 ms through ``F.linear``), at the cost
of the copies' memory and a packing pass; a model in training is never packed (the copies would go stale).

The forms compute the same sums in a different order: results agree to float rounding (relative ~1e-6), not
bit for bit, which is why the path is chosen by a fixed rule (device, rows, grad mode), never by timing: a resumed
run takes the same path as the run it resumes. `torch.compile` of the decode step (static KV cache, inductor) was
measured slower on this CPU (87 s for the first 32-token batch, ~30 s for later ones, against 1.3 s eager), so
there is no compiled path here; on CUDA the fast path stays off (cuBLAS has no such gap) and decoding is eager.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch
from transformers.utils import logging

__all__ = [
    "MAX_ROWS",
    "PACKED",
    "MAX_ROWS_SMALL",
    "WIDE",
    "decode_linear",
    "fast_decode",
    "fast_decode_enabled",
    "linear_forward",
    "log_once",
    "packed_weights",
    "skinny_linear",
]

logger = logging.get_logger(__name__)

# Measured per decode step of SmolLM2-135M (W @ x^T vs F.linear, docs/profile_step.md): the wide head (49,152 rows)
# gains up to M = 64 rows (0.37x at 4, 0.74x at 64); the layers' small matrices (192-1,536 rows) gain at M <= 4
# (0.63-0.70x) and lose from M = 8 on (1.1-1.35x).
MAX_ROWS = 64  # at most this many input rows for a wide weight
MAX_ROWS_SMALL = 4  # at most this many for a weight with fewer than WIDE output rows
WIDE = 16384
_ENV = "HF_KD_FAST_DECODE"  # "0"/"off" forces eager decoding, "1"/"on" forces the fast path; unset: automatic
_logged: set[str] = set()
PACKED = "_hf_kd_packed_weight"  # a linear layer's oneDNN copy of its weight, inside `packed_weights`
_PACKABLE = (torch.float32, torch.bfloat16)


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x W^T + b`` computed as ``(W x^T)^T + b``: the same product as `F.linear`, with another kernel.

    Args:
        x (`torch.Tensor` of shape `(..., K)`): inputs.
        weight (`torch.Tensor` of shape `(N, K)`): the layer's weight.
        bias (`torch.Tensor` of shape `(N,)`, *optional*): the layer's bias.

    Returns:
        `torch.Tensor` of shape `(..., N)`.
    """
    # A row-major x (M, K): MKL streams W for ``W @ x^T`` only when x^T is a transposed view (3x slower otherwise).
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    out = (weight @ rows.T).T.contiguous()  # row-major out: the next ops (softmax, cumsum over V) stream it
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], weight.shape[0])


def fast_decode_enabled(device: torch.device | str) -> bool:
    """Whether decoding on `device` takes the fast path: ``$HF_KD_FAST_DECODE`` if set, else on CPUs only."""
    setting = os.environ.get(_ENV, "auto").strip().lower()
    if setting in ("0", "off", "false", "no"):
        return False
    if setting in ("1", "on", "true", "yes"):
        return True
    if setting != "auto":
        raise ValueError(f"${_ENV}={setting!r} is not understood; use 'auto' (default), 'on' or 'off'.")
    return torch.device(device).type == "cpu"


def decode_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, packed: torch.Tensor | None = None
) -> torch.Tensor:
    """``x W^T + b`` with the kernel the fixed rule picks: oneDNN on the `packed` weight (`packed_weights`) for any
    no-grad input, else `skinny_linear` for no-grad inputs of at most `MAX_ROWS` rows (`MAX_ROWS_SMALL` for weights
    of fewer than `WIDE` output rows), else `F.linear`.

    Args:
        x (`torch.Tensor` of shape `(..., K)`): inputs.
        weight (`torch.Tensor` of shape `(N, K)`): the layer's weight.
        bias (`torch.Tensor` of shape `(N,)`, *optional*): the layer's bias.
        packed (`torch.Tensor`, *optional*): the weight in oneDNN's blocked layout (`packed_weights`).
    """
    if packed is not None and not torch.is_grad_enabled() and x.dtype == packed.dtype:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    rows = x.numel() // max(x.shape[-1], 1)
    if (
        rows <= (MAX_ROWS if weight.shape[0] >= WIDE else MAX_ROWS_SMALL)
        and not torch.is_grad_enabled()  # training keeps autograd's own kernels (and their gradients)
        and x.dim() >= 2
        and x.dtype == weight.dtype
        and weight.dim() == 2
        and x.shape[-1] == weight.shape[1]  # e.g. a ZeRO-3 shard that is not gathered: let F.linear handle it
    ):
        return skinny_linear(x, weight, bias)
    return torch.nn.functional.linear(x, weight, bias)


def linear_forward(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer`'s product through `decode_linear`, on its packed weight inside `packed_weights`."""
    return decode_linear(x, layer.weight, layer.bias, getattr(layer, PACKED, None))


def _available_memory() -> int | None:
    """Bytes of physical memory available now (Linux), or None where unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@contextlib.contextmanager
def packed_weights(model: torch.nn.Module, what: str = "decoding"):
    """Within the block, `model`'s plain linear layers carry a copy of their weight in oneDNN's blocked layout
    (attribute `PACKED`), which `decode_linear` multiplies at the memory bandwidth.

    For a frozen model that decodes many steps (offline generation, metrics sampling): a 64-row decode step of
    SmolLM2-135M goes from 209 to 153 ms (docs/profile_step.md). Packing costs about 0.3 s for that model, and the
    copies take as much memory as the weights, so they are made only on the fast path (``$HF_KD_FAST_DECODE``), for
    float32/bfloat16 weights, and when they take less than a quarter of the memory available; otherwise the block
    runs unchanged. A model being trained must not be packed: its copies would go stale at the next optimizer step.

    Args:
        model (`torch.nn.Module`): the (frozen) model that decodes.
        what (`str`): what is decoding, for the log line.
    """
    param = next(model.parameters(), None)
    layers = [
        m
        for m in model.modules()
        if type(m) is torch.nn.Linear
        and m.weight.dtype in _PACKABLE
        and m.weight.shape == (m.out_features, m.in_features)  # not a ZeRO-3 / FSDP shard
    ]
    size = sum(m.weight.numel() * m.weight.element_size() for m in layers)
    available = _available_memory()
    if (
        param is None
        or not fast_decode_enabled(param.device)
        or param.device.type != "cpu"
        or not torch.backends.mkldnn.is_available()
        or available is None
        or 4 * size > available
        or any(hasattr(m, PACKED) for m in layers)  # nested: the outer block owns the copies
    ):
        yield
        return
    try:
        try:
            with torch.no_grad():
                for m in layers:
                    setattr(m, PACKED, torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), None))
            log_once(f"hf_kd {what}: {len(layers)} linear weights packed for oneDNN ({size / 2**20:.0f} MiB more).")
        except RuntimeError as error:  # a build or layout oneDNN does not take: decode on the unpacked weights
            log_once(f"hf_kd {what}: weights not packed for oneDNN ({error}).")
            _unpack(layers)
        yield
    finally:
        _unpack(layers)


def _unpack(layers: list[torch.nn.Module]) -> None:
    for m in layers:
        if hasattr(m, PACKED):
            delattr(m, PACKED)


def log_once(message: str) -> None:
    """Log `message` at INFO level once per process (which decode path ran)."""
    if message not in _logged:
        _logged.add(message)
        logger.info(message)


@contextlib.contextmanager
def fast_decode(model: torch.nn.Module, what: str = "decoding"):
    """Within the block, `model`'s `nn.Linear` layers compute small no-grad inputs with `skinny_linear`.

    Only layers whose type is exactly `torch.nn.Linear` are switched (quantized or other subclasses keep their own
    forward), only inputs with autograd off and at most `MAX_ROWS` rows (`MAX_ROWS_SMALL` for weights of fewer than
    `WIDE` output rows) take the fast kernel, and every layer gets its own forward back when the block ends, even on
    an error. The path taken is logged once per process and `what`.

    Args:
        model (`torch.nn.Module`): the model that decodes (unwrapped; its parameters' device decides).
        what (`str`): what is decoding, for the log line.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if not fast_decode_enabled(device):
        log_once(f"hf_kd {what}: eager decode path on {device.type} (set ${_ENV}=on to force the fast path).")
        yield
        return
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear and "forward" not in vars(m)]
    log_once(
        f"hf_kd {what}: fast decode path on {device.type}: {len(layers)} linear layers take W @ x^T for inputs of "
        f"<= {MAX_ROWS_SMALL} rows, the wide ones (e.g. the head) for <= {MAX_ROWS} (${_ENV}=off: eager path)."
    )
    for layer in layers:
        layer.forward = functools.partial(linear_forward, layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward
