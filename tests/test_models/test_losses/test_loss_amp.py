"""Every loss takes half-precision inputs (float16, bfloat16, mixed with a float32 teacher, under
autocast), reduces in float32 and returns a float32 scalar equal to the float32 computation."""
from typing import Dict

import pytest
import torch
import torch.nn as nn

from mmkd.registry import MODELS

HALF = (torch.bfloat16, torch.float16)


def _logits(*shape):
    return lambda: dict(student=torch.randn(*shape) * 3, teacher=torch.randn(*shape) * 3)


def _features(*shape):
    return lambda: dict(student=torch.randn(*shape), teacher=torch.randn(*shape))


def _fsp_maps():
    return dict(student_first=torch.randn(2, 4, 8, 8), student_second=torch.randn(2, 6, 4, 4),
                teacher_first=torch.randn(2, 4, 8, 8), teacher_second=torch.randn(2, 6, 4, 4))


#: loss config -> a function making float32 inputs (its forward's arguments).
LOSSES: Dict[str, tuple] = {
    'kd': (dict(type='KDLoss', tau=4), _logits(4, 10)),
    'kd_pixelwise': (dict(type='KDLoss', tau=1), _logits(2, 5, 4, 4)),
    'fitnets_mean': (dict(type='FitNetsLoss'), _features(2, 8, 4, 4)),
    'fitnets_batchmean': (dict(type='FitNetsLoss', reduction='batchmean'), _features(2, 8, 4, 4)),
    'ofd': (dict(type='OFDLoss', divisor=10.0), _features(2, 8, 4, 4)),
    'fsp': (dict(type='FSPLoss'), _fsp_maps),
    'tekap_logit': (dict(type='TeKAPLoss', num_views=2), _logits(4, 10)),
    'tekap_feature': (dict(type='TeKAPFeatureLoss', loss=dict(type='OFDLoss', divisor=10.0),
                           num_views=2), _features(2, 8, 4, 4)),
    'dearkd_hard': (dict(type='DearKDLogitLoss', label_smoothing=0.1), _logits(4, 10)),
    'dearkd_soft': (dict(type='DearKDLogitLoss', mode='soft'), _logits(4, 10)),
}


def run(loss: nn.Module, inputs: dict) -> torch.Tensor:
    torch.manual_seed(7)  # TeKAP draws its noise in every call
    return loss(**inputs)


def cast(inputs: dict, dtype: torch.dtype, sides=('student', 'teacher', 'embeddings')) -> dict:
    """The floating inputs whose name starts with one of ``sides``, cast to ``dtype``."""
    return {name: value.to(dtype) if value.is_floating_point() and name.startswith(sides)
            else value for name, value in inputs.items()}


@pytest.mark.parametrize('dtype', HALF, ids=str)
@pytest.mark.parametrize('name', list(LOSSES))
def test_half_precision_inputs_give_the_float32_result(name, dtype):
    cfg, make_inputs = LOSSES[name]
    loss = MODELS.build(cfg)
    torch.manual_seed(0)
    half = cast(make_inputs(), dtype)
    for value in half.values():
        value.requires_grad_(value.is_floating_point())
    result = run(loss, half)
    # the float32 computation on the same (rounded) values
    expected = run(loss, {k: v.detach().float() if v.is_floating_point() else v
                          for k, v in half.items()})
    assert result.dtype == torch.float32 and result.dim() == 0
    torch.testing.assert_close(result, expected, rtol=1e-6, atol=1e-7)
    result.backward()
    student = [v for k, v in half.items() if k.startswith(('student', 'embeddings'))]
    assert all(v.grad is not None and v.grad.dtype == dtype for v in student)
    assert all(torch.isfinite(v.grad).all() for v in student)


@pytest.mark.parametrize('name', list(LOSSES))
def test_bfloat16_student_with_a_float32_teacher(name):
    cfg, make_inputs = LOSSES[name]
    loss = MODELS.build(cfg)
    torch.manual_seed(0)
    mixed = cast(make_inputs(), torch.bfloat16, sides=('student', 'embeddings'))
    result = run(loss, mixed)
    expected = run(loss, {k: v.float() if v.is_floating_point() else v
                          for k, v in mixed.items()})
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('name', list(LOSSES))
def test_losses_under_bfloat16_autocast_compute_in_float32(name):
    """Models under autocast hand bfloat16 features and logits (the teacher's too: autocast
    also applies under ``no_grad``) to a loss called inside autocast."""
    cfg, make_inputs = LOSSES[name]
    loss = MODELS.build(cfg)
    torch.manual_seed(0)
    inputs = make_inputs()
    expected = run(loss, inputs)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        from_float32 = run(loss, inputs)
        from_bfloat16 = run(loss, cast(inputs, torch.bfloat16))
    reference = run(loss, {k: v.bfloat16().float() if v.is_floating_point() else v
                           for k, v in inputs.items()})
    assert from_float32.dtype == from_bfloat16.dtype == torch.float32
    torch.testing.assert_close(from_float32, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(from_bfloat16, reference, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('cfg', [dict(type='OFDLoss', divisor=1000.0),
                                 dict(type='FitNetsLoss', reduction='batchmean')],
                         ids=lambda cfg: cfg['type'])
def test_float16_feature_maps_do_not_overflow_the_sum(cfg):
    """Squared distances of ~100 summed over a (2, 64, 16, 16) map exceed float16's 65504."""
    torch.manual_seed(0)
    student = (torch.randn(2, 64, 16, 16) * 10).half()
    teacher = (torch.randn(2, 64, 16, 16) * 10).half()
    loss = MODELS.build(cfg)
    result = loss(student, teacher)
    assert torch.isfinite(result)
    torch.testing.assert_close(result, loss(student.float(), teacher.float()))
