"""The algorithm's opt-in teacher options (teacher_dtype, memory_format, teacher_inference_mode):
validated at build, training a tiny real mmpretrain OFD pair, the teacher unchanged."""
import copy

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmpretrain.structures import DataSample

from helpers import tiny_classifier
from mmkd.models import build_model_from_cfg
from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError

TEACHER = tiny_classifier(width=8)
STUDENT = tiny_classifier(width=4)


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    teacher = build_model_from_cfg(copy.deepcopy(TEACHER), 'teacher')
    with torch.no_grad():  # trained-looking BN: non-zero scales and shifts
        for module in teacher.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    path = str(tmp_path_factory.mktemp('teacher') / 'teacher.pth')
    torch.save({'state_dict': teacher.state_dict()}, path)
    return path


def build(ckpt: str, **options):
    taps = [dict(name=f'stage{i}', student=f'backbone.layer{i}', recorder='PreReLU',
                 student_connector=dict(type='ConvBNConnector'),
                 teacher_connector=dict(type='OFDTeacherConnector'),
                 loss=dict(type='OFDLoss', loss_weight=1 / 2**(4 - i))) for i in range(1, 5)]
    torch.manual_seed(1)
    algorithm = MODELS.build(dict(
        type='mmkd.OverhaulFeatureDistillation', architecture=copy.deepcopy(STUDENT),
        teacher=copy.deepcopy(TEACHER), teacher_ckpt=ckpt, dry_run_shape=(3, 32, 32),
        distiller=dict(type='ConfigurableDistiller', tap_pairs=taps), **options))
    algorithm.init_weights()
    return algorithm.train()


def batch(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return dict(inputs=list(images),
                data_samples=[DataSample().set_gt_label(i % 10) for i in range(4)])


def assert_teacher_unchanged(algorithm, ckpt: str) -> None:
    """Every teacher tensor equals its checkpoint value (in the dtype it is stored in)."""
    saved = torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']
    current = algorithm.teacher.state_dict()
    assert set(saved) == set(current)
    for key, value in current.items():
        assert torch.equal(value, saved[key].to(value.dtype)), key


@pytest.mark.parametrize('options', [
    dict(teacher_dtype='bf16'),
    dict(memory_format='channels_last'),
    dict(teacher_inference_mode=True),
], ids=lambda options: '-'.join(f'{k}={v}' for k, v in options.items()))
def test_option_trains_two_iterations(teacher_ckpt, options):
    algorithm = build(teacher_ckpt, **options)
    optim_wrapper = build_optim_wrapper(algorithm, dict(
        type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9),
        constructor='mmkd.DefaultOptimWrapperConstructor'))
    student_before = copy.deepcopy(algorithm.student.state_dict())
    for seed in range(2):
        log_vars = algorithm.train_step(batch(seed), optim_wrapper)
        assert all(torch.isfinite(torch.as_tensor(v)).all() for v in log_vars.values())
        assert log_vars['loss_stage1'] > 0
    assert_teacher_unchanged(algorithm, teacher_ckpt)
    moved = [k for k, v in algorithm.student.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, student_before[k])]
    assert moved


def _losses(algorithm, seed: int = 0) -> dict:
    data = algorithm.data_preprocessor(batch(seed), True)
    with torch.no_grad():
        return algorithm.loss(data['inputs'], data['data_samples'])


def test_bf16_teacher_weights_and_losses_close_to_float32(teacher_ckpt):
    reference = _losses(build(teacher_ckpt))
    algorithm = build(teacher_ckpt, teacher_dtype='bf16')
    conv = algorithm.teacher.backbone.layer1[0].conv1
    assert conv.weight.dtype == torch.bfloat16
    assert algorithm.teacher.backbone.layer1[0].bn1.weight.dtype == torch.float32
    assert algorithm.student.backbone.layer1[0].conv1.weight.dtype == torch.float32
    losses = _losses(algorithm)
    for name, value in reference.items():
        assert losses[name].dtype == torch.float32
        assert losses[name].item() == pytest.approx(value.item(), rel=5e-2), name
    # the distillation terms do change (the teacher ran in bfloat16), but little
    assert any(losses[f'loss_stage{i}'] != reference[f'loss_stage{i}'] for i in range(1, 5))


def test_records_are_cast_back_to_the_students_dtype(teacher_ckpt):
    algorithm = build(teacher_ckpt, teacher_dtype='bf16', teacher_inference_mode=True)
    manager = algorithm.distiller.teacher_recorders
    manager.release = lambda: None  # keep the records to look at them
    _losses(algorithm)
    record = manager.get_record_data('stage1')
    assert record.dtype == torch.float32 and not record.is_inference()


def test_channels_last_and_inference_mode_keep_the_losses(teacher_ckpt):
    contiguous = build(teacher_ckpt)
    reference = _losses(contiguous)
    channels_last = build(teacher_ckpt, memory_format='channels_last')
    # the same values (a seeded init fills NHWC memory in another order)
    channels_last.load_state_dict(contiguous.state_dict())
    weight = channels_last.student.backbone.layer1[0].conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    for name, value in _losses(channels_last).items():
        torch.testing.assert_close(value, reference[name], rtol=1e-4, atol=1e-6)
    for name, value in _losses(build(teacher_ckpt, teacher_inference_mode=True)).items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=0)


@pytest.mark.parametrize('option, value, allowed', [
    ('teacher_dtype', 'float8', "['bf16', 'fp16'] or None"),
    ('memory_format', 'nhwc', "['channels_last', 'contiguous']"),
    ('teacher_inference_mode', 'yes', 'True or False'),
])
def test_bad_values_are_config_errors(teacher_ckpt, option, value, allowed):
    with pytest.raises(ConfigError, match=f'{option} must be one of|{option} must be True') \
            as error:
        build(teacher_ckpt, **{option: value})
    assert allowed in str(error.value) and repr(value) in str(error.value)


def test_loading_a_low_precision_teacher_into_a_float32_one_warns(teacher_ckpt, recwarn):
    saved = build(teacher_ckpt, teacher_dtype='bf16').state_dict()
    assert any(v.dtype == torch.bfloat16 for k, v in saved.items() if k.startswith('teacher.'))
    with pytest.warns(UserWarning, match=r"lower precision .*teacher_dtype='bf16'"):
        build(teacher_ckpt).load_state_dict(saved)
    # resumed as it ran, or a float32 checkpoint: nothing to say
    recwarn.clear()
    build(teacher_ckpt, teacher_dtype='bf16').load_state_dict(saved)
    build(teacher_ckpt).load_state_dict(build(teacher_ckpt).state_dict())
    assert not [w for w in recwarn if 'lower precision' in str(w.message)]
