"""Mixed precision for every method, on the CPU with bfloat16 autocast.

mmengine's ``AmpOptimWrapper`` refuses the CPU (it asserts a CUDA/NPU/MLU/MUSA device), so the
runs here train through tools/train.py's code path with the plain ``OptimWrapper`` inside
``torch.autocast('cpu', dtype=torch.bfloat16)`` — what AmpOptimWrapper's ``optim_context`` does
on a GPU, around the same ``train_step``. ``tools/train.py --amp`` itself (AmpOptimWrapper,
float16 with dynamic loss scaling or bfloat16) runs in the CUDA test at the end and in
tools/gpu_check.py.
"""
import copy
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from helpers import (REPO, SMALL_MHCA_VIT, SMALL_MHCA_VIT_DATAFREE, THIN_DIGITS_TEACHER, config_path, digits_options,
                     tiny_classifier)
from mmkd.apis.train import build_train_runner, enable_amp
from mmkd.datafree import DeepInversionSynthesizer
from mmkd.models import build_model_from_cfg
from mmkd.models.connectors import (AlignerConnector, ConvBNConnector, OFDTeacherConnector,
                                    ResizeConnector)
from mmkd.utils.errors import ConfigError

BF16 = torch.bfloat16
TEACHER = THIN_DIGITS_TEACHER
SHORT_SWITCH = {
    'param_scheduler': [dict(type='ConstantLR', factor=1.0, by_epoch=True)],
    'custom_hooks': [dict(type='DistillSwitchHook', stop_at=2)],
}
SMALL_VIT = {**SMALL_MHCA_VIT, **SHORT_SWITCH}
SMALL_VIT_DATAFREE = {**SMALL_MHCA_VIT_DATAFREE, **SHORT_SWITCH}
OFD_EMPIRICAL = {
    **{f'model.distiller.tap_pairs.{i}.teacher_connector.margin_source': 'empirical'
       for i in range(4)},
    'custom_hooks': [dict(type='OFDMarginHook', num_batches=2)],
}
# method -> (digits config, cfg_options beyond the shortening ones)
METHODS = {
    'kd': ('digits/kd_resnet18_w32_w4.py', {}),
    'fitnets': ('digits/fitnets_resnet18_w32_w4.py', {}),
    'ofd': ('digits/ofd_resnet18_w32_w4.py', {}),  # margins from the teacher's BNs
    'ofd_empirical_margins': ('digits/ofd_resnet18_w32_w4.py', OFD_EMPIRICAL),
    'fsp': ('digits/fsp_one_stage_resnet18_w32_w4.py', {}),
    'tekap': ('digits/tekap_logit_feature_resnet18_w32_w4.py', {}),
    'dearkd': ('digits/dearkd_resnet18_w32_mhca_vit.py', SMALL_VIT),  # aligner + MHCA ViT
    'df_dearkd': ('digits/dearkd_datafree_resnet18_w32_mhca_vit.py', SMALL_VIT_DATAFREE),
}


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory) -> str:
    """A teacher whose BN layers look trained (a fresh ResNet zero-initialises each block's
    last BN, which leaves OFD's pre-ReLU taps without negative responses)."""
    torch.manual_seed(0)
    teacher = build_model_from_cfg(copy.deepcopy(TEACHER), 'teacher')
    teacher.init_weights()
    for module in teacher.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    path = str(tmp_path_factory.mktemp('amp') / 'teacher.pth')
    torch.save({'state_dict': teacher.state_dict()}, path)
    return path


def method_options(method: str, teacher_ckpt: str, tmp_path) -> dict:
    """Two training iterations of 10 images, no validation."""
    options = digits_options(epochs=1)
    options.update(val_dataloader=None, val_cfg=None, val_evaluator=None)
    options.update({'model.teacher.cfg_path': TEACHER['cfg_path'],
                    'model.teacher_ckpt': teacher_ckpt, 'train_dataloader.batch_size': 10,
                    'train_dataloader.dataset.shots_per_class': 2})
    config, extra = METHODS[method]
    options.update(copy.deepcopy(extra))
    if 'param_scheduler' in extra:
        options.pop('param_scheduler.T_max')
    if method == 'df_dearkd':  # iteration-based: 2 iterations on 20 synthesised images
        for key in ('train_dataloader.dataset.shots_per_class', 'train_cfg.max_epochs',
                    'param_scheduler.T_max'):
            options.pop(key, None)
        options.update({
            'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2,
            'default_hooks.checkpoint.interval': 2,
            'param_scheduler': [dict(type='ConstantLR', factor=1.0, by_epoch=False)],
            'train_dataloader.dataset.teacher.cfg_path': TEACHER['cfg_path'],
            'train_dataloader.dataset.teacher_ckpt': teacher_ckpt,
            'train_dataloader.dataset.num_per_class': 2,
            'train_dataloader.dataset.batch_size': 20,
            'train_dataloader.dataset.cache_file': str(tmp_path / 'synthetic.pth'),
            'train_dataloader.dataset.synthesizer.resolution_schedule': [(16, 2), (32, 3)],
        })
    return options


class LossLog(Hook):
    """The losses of every training iteration, and the dtypes of the student's and teacher's
    first stages' outputs (to see that autocast is on)."""

    def __init__(self) -> None:
        self.rows, self.dtypes = [], set()

    def before_train(self, runner) -> None:
        model = runner.model
        for side, net in (('student', model.student), ('teacher', model.teacher)):
            first = next(m for name, m in net.backbone.named_children()
                         if name in ('layer1', 'layers', 'patch_embed'))
            first.register_forward_hook(
                lambda m, a, out, side=side: self.dtypes.add((side, _dtype_of(out))))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.rows.append(dict(outputs))


def _dtype_of(output) -> torch.dtype:
    while isinstance(output, (tuple, list)):
        output = output[0]
    return output.dtype


def losses_of(model, data, autocast: bool) -> dict:
    """The algorithm's losses on one batch (same noise for TeKAP's views), in float32 or under
    bfloat16 autocast."""
    torch.manual_seed(0)
    with torch.no_grad(), torch.autocast('cpu', dtype=BF16, enabled=autocast):
        return model(**model.data_preprocessor(copy.deepcopy(data), True), mode='loss')


@pytest.mark.parametrize('method', list(METHODS))
def test_method_trains_under_bfloat16_autocast_with_float32_losses(method, teacher_ckpt,
                                                                   tmp_path):
    config, _ = METHODS[method]
    runner = build_train_runner(config_path(config), work_dir=str(tmp_path / 'work'),
                                cfg_options=method_options(method, teacher_ckpt, tmp_path))
    log = LossLog()
    runner.register_hook(log)
    with torch.autocast('cpu', dtype=BF16):
        runner.train()

    assert len(log.rows) == 2
    assert ('student', BF16) in log.dtypes and ('teacher', BF16) in log.dtypes
    distill_names = {k for k in log.rows[0] if k.startswith('loss_')}
    assert distill_names, log.rows[0]
    for row in log.rows:
        for name, value in row.items():
            assert value.dtype == torch.float32, (name, value.dtype)  # reduced in float32
            assert math.isfinite(float(value)), (name, value)
    if method == 'ofd_empirical_margins':  # measured on bfloat16 teacher features
        margins = [c.margin for c in runner.model.distiller.connectors.values()
                   if isinstance(c, OFDTeacherConnector)]
        assert len(margins) == 4 and all(bool(m.isfinite().all() and m.lt(0).any())
                                         for m in margins)

    # Each distillation loss under autocast is the float32 loss up to the rounding of the
    # networks' bfloat16 activations (at most 1.6 % here); a loss reduced in bfloat16 is off
    # by far more (KD's KL divergence reduced in bfloat16 came out -0.015 on this batch, in
    # float32 0.0046).
    model, data = runner.model, next(iter(runner.train_dataloader))
    reference, mixed = losses_of(model, data, False), losses_of(model, data, True)
    for name in distill_names:
        assert mixed[name].dtype == torch.float32
        torch.testing.assert_close(mixed[name], reference[name], rtol=0.05, atol=1e-5,
                                   msg=lambda m, name=name: f'{name}: {m}')


def test_connectors_accept_inputs_of_another_precision():
    torch.manual_seed(0)
    feature = torch.randn(2, 4, 6, 6)
    half = feature.to(BF16)
    conv_bn = ConvBNConnector(4, 8).eval()
    # A float32 connector fed bfloat16 student features (outside autocast) computes in
    # float32 on them.
    out = conv_bn(half)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, conv_bn(half.float()))
    # A bfloat16 connector fed a float32 feature computes in bfloat16.
    conv_bn_half = copy.deepcopy(conv_bn).to(BF16)
    assert conv_bn_half(feature).dtype == BF16
    # Under autocast, autocast decides (conv in bfloat16).
    with torch.autocast('cpu', dtype=BF16):
        assert conv_bn(feature).dtype == BF16

    aligner = AlignerConnector(8, 6, (4, 4), num_extra_tokens=1)
    tokens = torch.randn(2, 1 + 3 * 3, 8)
    out = aligner(tokens.to(BF16))
    assert out.dtype == torch.float32 and out.shape == (2, 6, 4, 4)
    torch.testing.assert_close(out, aligner(tokens.to(BF16).float()))

    # Connectors without weights keep the input's precision, OFD's margin buffer included.
    assert ResizeConnector(size=(3, 3), mode='bilinear')(half).dtype == BF16
    ofd = OFDTeacherConnector(4)
    ofd.set_margin(torch.tensor([-0.5, -1.0, -0.25, 0.0]))
    expected = torch.maximum(feature, ofd.margin)
    assert ofd(half).dtype == BF16
    torch.testing.assert_close(ofd(half).float(), expected.to(BF16).float())
    ofd_half = copy.deepcopy(ofd).to(BF16)
    assert ofd_half(feature).dtype == torch.float32
    torch.testing.assert_close(ofd_half(feature), expected)


def test_deep_inversion_synthesis_in_bfloat16():
    torch.manual_seed(0)
    cfg = tiny_classifier(width=4, num_classes=3)
    cfg['data_preprocessor'] = dict(num_classes=3, mean=[100.0] * 3, std=[50.0] * 3)
    teacher = build_model_from_cfg(cfg)
    teacher.init_weights()
    dtypes = []
    teacher.backbone.layer1.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    synthesizer = DeepInversionSynthesizer(image_size=16, resolution_schedule=[(8, 2), (16, 2)],
                                           lr=0.1, warmup_iters=1, jitter=0, flip=False,
                                           amp_dtype='bfloat16')
    images, history = synthesizer.synthesize(teacher, torch.tensor([0, 1, 2, 0, 1, 2]),
                                             torch.Generator().manual_seed(1),
                                             return_history=True)
    assert set(dtypes) == {BF16} and len(dtypes) == 4
    assert images.dtype == torch.float32 and images.shape == (6, 3, 16, 16)
    assert len(history) == 4 and all(math.isfinite(v) for v in history)
    with pytest.raises(ConfigError, match='amp_dtype'):
        DeepInversionSynthesizer(image_size=16, resolution_schedule=[(16, 1)], amp_dtype='fp8')


def test_amp_dtype_is_checked_before_the_device():
    cfg = Config.fromfile(config_path('digits/kd_resnet18_w32_w4.py'))
    cfg.optim_wrapper.dtype = 'float32'
    with pytest.raises(ConfigError, match="--amp-dtype float16 or --amp-dtype bfloat16"):
        enable_amp(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU message')
def test_train_tool_amp_bfloat16_on_the_cpu_names_the_fix(tmp_path):
    result = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'),
         config_path('digits/kd_resnet18_w32_w4.py'), '--amp-dtype', 'bfloat16',
         '--work-dir', str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert 'needs a CUDA (or NPU) device' in result.stderr
    assert 'Fix: train on a GPU, or drop --amp' in result.stderr
    assert 'Traceback' not in result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason='AmpOptimWrapper needs CUDA')
@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_amp_optim_wrapper_trains_a_distillation_config_on_cuda(dtype, teacher_ckpt, tmp_path):
    if dtype == 'bfloat16' and not torch.cuda.is_bf16_supported():
        pytest.skip('this GPU has no bfloat16')
    options = method_options('ofd', teacher_ckpt, tmp_path)
    options['optim_wrapper.dtype'] = dtype
    runner = build_train_runner(config_path(METHODS['ofd'][0]), work_dir=str(tmp_path),
                                amp=True, cfg_options=options)
    log = LossLog()
    runner.register_hook(log)
    runner.train()
    assert type(runner.optim_wrapper).__name__ == 'AmpOptimWrapper'
    assert ('student', getattr(torch, dtype)) in log.dtypes
    assert all(v.dtype == torch.float32 and math.isfinite(float(v))
               for row in log.rows for v in row.values())
