"""Logit post-processing read from configs equals what each model's own forward applies; FSDP2 heads are gathered."""

import pytest
import torch
from transformers import (
    CohereConfig,
    CohereForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    GraniteConfig,
    GraniteForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from hf_kd.lm_heads import head_weight_and_bias, logit_postprocessing
from hf_kd.losses import logit_postprocess

SMALL = dict(
    vocab_size=30,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
)
MODELS = {
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**SMALL)),
    "cohere": lambda: CohereForCausalLM(CohereConfig(logit_scale=0.25, **SMALL)),
    "granite": lambda: GraniteForCausalLM(GraniteConfig(logits_scaling=4.0, **SMALL)),
    "gemma2": lambda: Gemma2ForCausalLM(Gemma2Config(head_dim=8, final_logit_softcapping=1.5, **SMALL)),
}


@pytest.mark.parametrize("family", list(MODELS))
def test_postprocessing_matches_the_models_own_forward(family):
    torch.manual_seed(0)
    model = MODELS[family]().eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(10)  # large logits, so a softcap is not the identity
        ids = torch.tensor([[1, 5, 7, 9, 2]])
        out = model(input_ids=ids, output_hidden_states=True)
        post = logit_postprocessing(model)
        ours = logit_postprocess(model.get_output_embeddings()(out.hidden_states[-1]), post.scale, post.softcap)
    torch.testing.assert_close(ours, out.logits, atol=1e-5, rtol=1e-5)
    expected = {"llama": (1.0, None), "cohere": (0.25, None), "granite": (0.25, None), "gemma2": (1.0, 1.5)}
    assert (post.scale, post.softcap) == expected[family]


def test_fsdp2_head_is_gathered_once_and_gets_its_gradient(tmp_path):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'pg'}")
    try:
        mesh = init_device_mesh("cpu", (1,))
        head = torch.nn.Linear(4, 6)
        plain_w = head.weight.detach().clone()
        head.weight = torch.nn.Parameter(distribute_tensor(head.weight.detach(), mesh, [Shard(0)]))
        head.bias = torch.nn.Parameter(distribute_tensor(head.bias.detach(), mesh, [Shard(0)]))
        w, b = head_weight_and_bias(head, torch.float32)
        assert not isinstance(w, DTensor) and not isinstance(b, DTensor)
        torch.testing.assert_close(w, plain_w)
        (w.sum() + 2 * b.sum()).backward()
        assert isinstance(head.weight.grad, DTensor)
        torch.testing.assert_close(head.weight.grad.full_tensor(), torch.ones(6, 4))
        torch.testing.assert_close(head.bias.grad.full_tensor(), torch.full((6,), 2.0))
    finally:
        dist.destroy_process_group()
