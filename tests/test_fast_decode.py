"""The fast decode path (`hf_kd.fast_decode`) computes what `F.linear` computes, and sampling with it draws the same
tokens as the eager path for the same seed."""

import logging

import pytest
import torch
import torch.nn.functional as F
from conftest import make_llama

from hf_kd import fast_decode as fd


@pytest.mark.parametrize("shape", [(1, 7), (4, 7), (3, 1, 7), (2, 5, 7), (64, 7)])
@pytest.mark.parametrize("bias", [False, True])
def test_skinny_linear_matches_float64_product(shape, bias):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(*shape, generator=g), torch.randn(11, 7, generator=g)
    b = torch.randn(11, generator=g) if bias else None
    expected = torch.einsum("...k,nk->...n", x.double(), w.double()) + (b.double() if bias else 0)
    got = fd.skinny_linear(x, w, b)
    assert got.shape == (*shape[:-1], 11) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, F.linear(x, w, b), rtol=1e-5, atol=1e-5)


class _Scaled(torch.nn.Linear):  # a subclass with its own forward (as quantized layers have) must keep it
    def forward(self, x):
        return 2 * super().forward(x)


def _model():
    return torch.nn.Sequential(torch.nn.Linear(7, 9), torch.nn.ReLU(), _Scaled(9, 5, bias=False))


def test_only_plain_linear_layers_switch_and_all_are_restored():
    model = _model()
    x = torch.randn(3, 7)
    with torch.no_grad():
        eager = model(x)
        with fd.fast_decode(model):
            assert "forward" in vars(model[0]) and "forward" not in vars(model[2])
            with fd.fast_decode(model):  # nested: the inner block neither re-patches nor unpatches
                pass
            assert "forward" in vars(model[0])
            fast = model(x)
        assert "forward" not in vars(model[0])
    torch.testing.assert_close(fast, eager, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="boom"), fd.fast_decode(model):
        raise RuntimeError("boom")
    assert "forward" not in vars(model[0])  # restored on an error too


def test_grad_mode_and_wide_inputs_keep_the_eager_kernel_bit_for_bit():
    layer = torch.nn.Linear(7, 9)
    x_small, x_wide = torch.randn(3, 7, requires_grad=True), torch.randn(fd.MAX_ROWS + 1, 7)
    with fd.fast_decode(layer):
        y = layer(x_small)  # autograd on: training keeps F.linear and its gradient
        with torch.no_grad():
            wide = layer(x_wide)
    assert torch.equal(y, F.linear(x_small, layer.weight, layer.bias))
    y.sum().backward()
    torch.testing.assert_close(x_small.grad, layer.weight.detach().sum(0).expand(3, 7), rtol=1e-6, atol=1e-6)
    assert torch.equal(wide, F.linear(x_wide, layer.weight, layer.bias))


def test_environment_switch_and_log(monkeypatch, caplog):
    layer = torch.nn.Linear(3, 3)
    monkeypatch.setenv("HF_KD_FAST_DECODE", "off")
    with fd.fast_decode(layer, "unit-test off"):
        assert "forward" not in vars(layer)
    monkeypatch.setenv("HF_KD_FAST_DECODE", "sometimes")
    with pytest.raises(ValueError, match="HF_KD_FAST_DECODE='sometimes'.*'auto'"), fd.fast_decode(layer):
        pass
    monkeypatch.delenv("HF_KD_FAST_DECODE")
    assert fd.fast_decode_enabled("cpu") and not fd.fast_decode_enabled("meta")
    logger = logging.getLogger("hf_kd.fast_decode")
    monkeypatch.setattr(logger, "propagate", True)
    with caplog.at_level(logging.INFO, logger="hf_kd.fast_decode"), fd.fast_decode(layer, "unit-test on"):
        pass
    assert "hf_kd unit-test on: fast decode path on cpu: 1 linear layers" in caplog.text


def test_sampling_draws_the_same_tokens_and_log_probs_as_eager(tokenizer, monkeypatch):
    """Same seed, same model: identical token ids and per-step log-probs within 1e-4 (generate, batch of 4)."""
    model = make_llama(len(tokenizer), seed=3, hidden=64, layers=2)
    prompt = torch.tensor([[2, 5, 6], [2, 7, 8], [2, 9, 10], [2, 11, 12]])

    def sample():
        torch.manual_seed(123)
        out = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=True,
            max_new_tokens=24,
            min_new_tokens=24,
            top_k=0,
            top_p=1.0,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
        return out.sequences, torch.stack(out.scores, 1).log_softmax(-1)

    calls = []
    skinny = fd.skinny_linear
    monkeypatch.setattr(fd, "skinny_linear", lambda *a: calls.append(1) or skinny(*a))
    eager_ids, eager_lp = sample()
    assert not calls
    with fd.fast_decode(model):
        fast_ids, fast_lp = sample()
    assert torch.equal(fast_ids, eager_ids)
    torch.testing.assert_close(fast_lp, eager_lp, rtol=0, atol=1e-4)
    assert len(calls) >= 23 * 2 * 7  # the fast kernel ran: 7 linear layers per block, 2 blocks, every decode step


@pytest.mark.parametrize("rows", [1, 4, 64])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_weights_compute_the_linear_product(rows, bias):
    layer = torch.nn.Linear(24, 40, bias=bias)
    x = torch.randn(rows, 1, 24)
    with torch.no_grad(), fd.packed_weights(layer):
        packed = getattr(layer, fd.PACKED)
        assert packed.layout == torch._mkldnn
        got = fd.decode_linear(x, layer.weight, layer.bias, packed)
    assert not hasattr(layer, fd.PACKED)
    expected = torch.einsum("...k,nk->...n", x.double(), layer.weight.double()) + (layer.bias.double() if bias else 0)
    torch.testing.assert_close(got.double(), expected.detach(), rtol=1e-5, atol=1e-5)


def test_packed_weights_only_where_they_fit_and_on_the_fast_path(monkeypatch):
    model = _model()
    with pytest.raises(RuntimeError, match="boom"), fd.packed_weights(model):
        assert hasattr(model[0], fd.PACKED) and not hasattr(model[2], fd.PACKED)  # the subclass keeps its own
        with fd.packed_weights(model):  # nested: the outer block owns the copies
            pass
        assert hasattr(model[0], fd.PACKED)
        raise RuntimeError("boom")
    assert not hasattr(model[0], fd.PACKED)  # removed on an error too
    size = sum(p.numel() * 4 for n, p in model.named_parameters() if n.startswith("0.") and n.endswith("weight"))
    monkeypatch.setattr(fd, "_available_memory", lambda: 4 * size - 1)  # copies over a quarter of free memory
    with fd.packed_weights(model):
        assert not hasattr(model[0], fd.PACKED)
    monkeypatch.setattr(fd, "_available_memory", lambda: 4 * size)
    monkeypatch.setenv("HF_KD_FAST_DECODE", "off")
    with fd.packed_weights(model):
        assert not hasattr(model[0], fd.PACKED)
    with torch.enable_grad():  # autograd on: the packed copy is never used (it would not get gradients)
        x = torch.randn(3, 7, requires_grad=True)
        assert torch.equal(fd.decode_linear(x, model[0].weight, model[0].bias, torch.empty(0)), model[0](x))


def test_sampling_with_packed_weights_draws_what_the_eager_path_draws(tokenizer, monkeypatch):
    """Same seeds, a tiny Llama: identical ids and sequence log-probs within 1e-4 (the generation path's kernels)."""
    from hf_kd.sampling import SamplingParams, sample_batch

    model = make_llama(len(tokenizer), seed=3, hidden=64, layers=2)
    prompts = [[2, 5, 6], [2, 7], [2, 9, 10, 11], [2, 12, 13]]
    params = SamplingParams(max_new_tokens=24, temperature=1.2)

    def sample():
        return sample_batch(model, prompts, [1, 2, 3, 4], params, eos_token_ids=[3], pad_token_id=0)

    monkeypatch.setenv("HF_KD_FAST_DECODE", "off")
    eager = sample()
    monkeypatch.setenv("HF_KD_FAST_DECODE", "on")
    with fd.packed_weights(model, "unit-test"):
        assert all(hasattr(m, fd.PACKED) for m in model.modules() if type(m) is torch.nn.Linear)
        packed = sample()
    for a, b in zip(packed, eager, strict=True):
        assert a["completion_ids"] == b["completion_ids"]
        assert a["teacher_logprob"] == pytest.approx(b["teacher_logprob"], abs=1e-4)


def test_packing_falls_back_to_the_unpacked_weights(monkeypatch, caplog):
    model = _model()
    model[0].weight = torch.nn.Parameter(torch.randn(9 * 7 // 3, 3))  # a shard-like weight: not the layer's shape
    with fd.packed_weights(model):
        assert not hasattr(model[0], fd.PACKED)

    def refuse(*args):
        raise RuntimeError("no oneDNN layout for this weight")

    model = _model()
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", refuse)
    monkeypatch.setattr(fd, "_logged", set())
    logger = logging.getLogger("hf_kd.fast_decode")
    monkeypatch.setattr(logger, "propagate", True)
    with caplog.at_level(logging.INFO, logger="hf_kd.fast_decode"), fd.fast_decode(model), fd.packed_weights(model):
        assert not hasattr(model[0], fd.PACKED)
        with torch.no_grad():
            model(torch.randn(2, 7))  # decodes on the unpacked weights
    assert "weights not packed for oneDNN (no oneDNN layout for this weight)" in caplog.text
