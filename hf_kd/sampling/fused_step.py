"""A decode step for Llama-style models written out in a few tensor ops, over a KV cache allocated once.

transformers' forward for one new token per row spends about a quarter of a CPU decode step outside the matrix
products (module calls, mask building, growing the cache by concatenation; docs/profile_step.md). `FusedStep` runs
the same layers with the model's own modules for the embeddings, rotary embedding, activation and head, and writes
the norms (one fused `rms_norm` in float32), the attention and the projections by hand: each new key/value goes into
a preallocated cache, query heads attend in groups of ``H / KV`` over their shared key/value head, and every
projection goes through `hf_kd.fast_decode.decode_linear`. The result equals the model's forward to float rounding
(tested against it with left padding, grouped heads, biases and rows leaving the batch).

Only models whose computation is exactly that qualify (`fused_step_support`); any other model decodes through its
own forward.
"""

from __future__ import annotations

import importlib

import torch

from ..fast_decode import linear_forward

__all__ = ["FusedStep", "fused_step_support"]

# Architectures whose decoder layer is: x += o(attn(rotary(q(n1(x))), rotary(k(n1(x))), v(n1(x)))), then
# x += down(act(gate(n2(x))) * up(n2(x))); final norm; head. Qwen2 adds q/k/v biases (handled).
_ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}


def fused_step_support(model) -> str | None:
    """None when `FusedStep` computes `model`'s decode step, else why not (for the log line).

    Args:
        model (`PreTrainedModel`): the model that decodes (a PeftModel or a quantized model does not qualify).
    """
    name = type(model).__name__
    config = getattr(model, "config", None)
    if _ARCHITECTURES.get(name) != getattr(config, "model_type", None):
        return f"{name} is not one of {sorted(_ARCHITECTURES)}"
    if getattr(config, "pretraining_tp", 1) != 1:
        return "pretraining_tp != 1"
    layer_types = getattr(config, "layer_types", None) or []
    if getattr(config, "use_sliding_window", False) or any(t != "full_attention" for t in layer_types):
        return "sliding-window attention"
    projections = [model.get_output_embeddings()]
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        projections += [a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj]
    if any(type(p) is not torch.nn.Linear for p in projections):  # LoRA, quantized: their own forward
        return "adapter or quantized linear layers"
    return None


class FusedStep:
    """One token per running row through a Llama-style model, its keys and values kept in a preallocated cache.

    Built after the prompt's forward (`prefill`), from the cache that forward returned.

    Args:
        model (`PreTrainedModel`): a model for which `fused_step_support` is None.
        cache (`DynamicCache`): the prompt forward's cache, layer i's keys/values `(B, KV, L, D)`.
        attention_mask (`torch.Tensor` of shape `(B, L)`): the prompts' mask (0 on left padding).
        max_new_tokens (`int`): room to leave in the cache.
    """

    def __init__(self, model, cache, attention_mask: torch.Tensor, max_new_tokens: int):
        self.model = model
        self.layers = model.model.layers
        self.rope = importlib.import_module(type(self.layers[0].self_attn).__module__).apply_rotary_pos_emb
        self.length = attention_mask.shape[1]
        first = cache.layers[0].keys
        shape = (first.shape[0], first.shape[1], self.length + max_new_tokens, first.shape[3])
        self.keys, self.values = [], []
        for layer in cache.layers:
            self.keys.append(first.new_empty(shape))
            self.values.append(first.new_empty(shape))
            self.keys[-1][:, :, : self.length] = layer.keys
            self.values[-1][:, :, : self.length] = layer.values
        # Additive attention bias (B, 1, 1, L_max): -inf on the left padding, 0 elsewhere (the new tokens included).
        bias = torch.zeros(shape[0], 1, 1, shape[2], dtype=first.dtype, device=attention_mask.device)
        bias[:, 0, 0, : self.length].masked_fill_(attention_mask == 0, -float("inf"))
        self.bias = bias

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (indices into the current batch) in the cache: finished rows leave the batch."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        self.bias = self.bias.index_select(0, rows)

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Next-token logits `(B, V)` after `tokens` `(B,)` at `positions` `(B,)`; their keys/values join the cache."""
        inner = self.model.model
        x = inner.embed_tokens(tokens[:, None])  # (B, 1, H)
        cos, sin = inner.rotary_emb(x, positions[:, None])
        at, end = self.length, self.length + 1
        for i, layer in enumerate(self.layers):
            x = x + self._attention(layer.self_attn, _rms_norm(layer.input_layernorm, x), cos, sin, i, at, end)
            mlp, h = layer.mlp, _rms_norm(layer.post_attention_layernorm, x)
            x = x + linear_forward(
                mlp.down_proj, mlp.act_fn(linear_forward(mlp.gate_proj, h)) * linear_forward(mlp.up_proj, h)
            )
        self.length = end
        head = self.model.get_output_embeddings()  # called as a module: its hooks see the input
        return head(_rms_norm(inner.norm, x))[:, -1]

    def _attention(self, attn, h, cos, sin, i: int, at: int, end: int) -> torch.Tensor:
        """``o_proj(softmax(q k^T * scaling + bias) v)`` for one new position; writes k, v at column `at`."""
        b, d = h.shape[0], attn.head_dim
        q = linear_forward(attn.q_proj, h).view(b, 1, -1, d).transpose(1, 2)  # (B, Hq, 1, D)
        k = linear_forward(attn.k_proj, h).view(b, 1, -1, d).transpose(1, 2)  # (B, KV, 1, D)
        q, k = self.rope(q, k, cos, sin)
        self.keys[i][:, :, at:end] = k
        self.values[i][:, :, at:end] = linear_forward(attn.v_proj, h).view(b, 1, -1, d).transpose(1, 2)
        keys, values = self.keys[i][:, :, :end], self.values[i][:, :, :end]  # (B, KV, L, D)
        q = q.reshape(b, keys.shape[1], -1, d)  # (B, KV, G, D): query head j reads key/value head j // G
        scores = (q @ keys.transpose(-1, -2)) * attn.scaling + self.bias[:, :, :, :end]  # (B, KV, G, L)
        out = scores.softmax(-1) @ values  # (B, KV, G, D)
        return linear_forward(attn.o_proj, out.reshape(b, 1, -1))


def _rms_norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's RMSNorm, ``w * x / sqrt(mean(x^2) + eps)``, as one op for float32 (transformers' module runs six);
    other dtypes keep the module's own casts."""
    if x.dtype != torch.float32 or norm.weight.dtype != torch.float32:
        return norm(x)
    return torch.nn.functional.rms_norm(x, x.shape[-1:], norm.weight, norm.variance_epsilon)
