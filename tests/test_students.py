import pytest
import torch
from conftest import make_llama

from hf_kd.students import init_student, slice_layers


def test_full_slice_is_the_teacher_and_partial_slice_keeps_first_and_last():
    teacher = make_llama(25, layers=5)
    ids = torch.tensor([[2, 5, 6, 7, 8]])
    torch.testing.assert_close(slice_layers(teacher, 5)(ids).logits, teacher(ids).logits)
    student = slice_layers(teacher, 3)
    assert student.config.num_hidden_layers == 3 and teacher.config.num_hidden_layers == 5
    for new, old in zip(student.model.layers, [teacher.model.layers[i] for i in (0, 2, 4)]):
        torch.testing.assert_close(new.mlp.up_proj.weight, old.mlp.up_proj.weight)
    assert (
        student.model.layers[0].mlp.up_proj.weight.data_ptr() != teacher.model.layers[0].mlp.up_proj.weight.data_ptr()
    )


def test_sliced_student_generates_with_a_consistent_kv_cache():
    student = slice_layers(make_llama(25, layers=4), 2)
    ids = torch.tensor([[2, 5, 6]])
    cached = student.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
    uncached = student.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    torch.testing.assert_close(cached, uncached)


def test_scratch_student_from_teacher_config_with_overrides(tmp_path):
    teacher = make_llama(25, layers=3)
    student = init_student("scratch", teacher=teacher, num_layers=1, config_overrides={"intermediate_size": 8})
    assert student.config.num_hidden_layers == 1 and student.config.intermediate_size == 8
    assert student.config.vocab_size == teacher.config.vocab_size
    teacher.save_pretrained(tmp_path)
    loaded = init_student("pretrained", name_or_path=str(tmp_path))
    torch.testing.assert_close(loaded.lm_head.weight, teacher.lm_head.weight)


def test_bad_student_init_arguments():
    teacher = make_llama(25, layers=3)
    with pytest.raises(ValueError, match=r"num_layers must be in \[1, 3\]"):
        slice_layers(teacher, 4)
    with pytest.raises(ValueError, match="unknown"):
        init_student("distil", teacher=teacher)
    with pytest.raises(ValueError, match="needs student_name_or_path"):
        init_student("pretrained")
    with pytest.raises(ValueError, match="not a field"):
        init_student("scratch", teacher=teacher, config_overrides={"hiden_size": 8})
