"""mmcv's ops without bfloat16 kernels under autocast (mmkd/utils/compat.py).

On the CPU: ``roi_align``, ``nms`` and the deformable convolutions have CPU kernels, so the
shim's casting is checked there against mmcv's own unwrapped code, values and gradients, and a
tiny RetinaNet and Faster R-CNN distillation train and predict under bfloat16 autocast (with
mmcv's ops as released, the same steps fail). ``sigmoid_focal_loss`` (RetinaNet's loss on CUDA),
``softmax_focal_loss`` and ``roi_pool`` have no CPU kernel: here only their wrapping is checked
(the same code as the CPU ops'); their CUDA run is in the last test, which only a GPU runs, and
in ``tools/gpu_check.py``'s ops and train sections.
"""
import copy
import importlib
import math

import mmcv.ops
import pytest
import torch
from mmdet.models.losses import focal_loss as mmdet_focal_loss
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.optim import OptimWrapper
from mmengine.structures import InstanceData

from helpers import save_checkpoint_of
from mmkd.registry import MODELS
from mmkd.utils.compat import MMCV_AUTOCAST_OPS

BF16 = torch.bfloat16
FUNCTIONS = {name: getattr(importlib.import_module(module), name)
             for module, name, _ in MMCV_AUTOCAST_OPS}


def unwrapped(function: type) -> type:
    """An autograd Function with mmcv's own forward and backward of ``function``, as released
    (what the shim wrapped)."""
    members = dict(forward=staticmethod(function.forward.__wrapped__))
    if 'backward' in vars(function):
        members['backward'] = staticmethod(function.backward.__wrapped__)
    return type(f'Unwrapped{function.__name__}', (torch.autograd.Function, ), members)


@pytest.fixture
def mmcv_as_released(monkeypatch):
    """Within the test, mmcv's ops run their own forward and backward, unwrapped."""
    def restore():
        for function in FUNCTIONS.values():
            monkeypatch.setattr(function, 'forward',
                                staticmethod(function.forward.__wrapped__))
            if 'backward' in vars(function):
                monkeypatch.setattr(function, 'backward',
                                    staticmethod(function.backward.__wrapped__))
    return restore


def test_every_listed_op_is_wrapped_on_its_class_where_mmcv_and_mmdet_call_it():
    for module, name, kernel_dtypes in MMCV_AUTOCAST_OPS:
        function = FUNCTIONS[name]
        assert function.forward.__wrapped__.__module__ == module
        assert function.forward.__wrapped__.__qualname__ == f'{name}.forward'
        assert function.forward.mmkd_kernel_dtypes is kernel_dtypes
        assert BF16 not in kernel_dtypes['cuda']
    # the names bound at import call the class's forward at every call
    assert mmcv.ops.sigmoid_focal_loss.__self__ is FUNCTIONS['SigmoidFocalLossFunction']
    assert mmdet_focal_loss._sigmoid_focal_loss.__self__ is FUNCTIONS['SigmoidFocalLossFunction']
    assert mmcv.ops.roi_align.__self__ is FUNCTIONS['RoIAlignFunction']


# -- the ops with CPU kernels, against mmcv's own code ----------------------------------------
def op_inputs(name: str, dtype: torch.dtype) -> tuple:
    """(floating inputs, other arguments) of one call of the op ``name``: features of the given
    dtype, each input with a gradient a leaf (a convolution's weight stays float32, as a
    parameter does under autocast)."""
    generator = torch.Generator().manual_seed(0)

    def randn(*shape, scale=1.0):
        return (torch.randn(shape, generator=generator) * scale).to(dtype)

    if name == 'NMSop':
        corners = torch.rand((40, 2), generator=generator) * 50
        boxes = torch.cat([corners, corners + 5 + torch.rand((40, 2), generator=generator) * 20],
                          dim=1)
        return (boxes.to(dtype), torch.rand(40, generator=generator).to(dtype)), (0.5, 0, 0, -1)
    if name == 'RoIAlignFunction':
        rois = torch.tensor([[0, 1.5, 2.0, 20.0, 17.5], [1, 4.0, 0.5, 30.0, 30.0]])
        return (randn(2, 4, 16, 16), rois.to(dtype)), ((3, 3), 0.5, 2, 'avg', True)
    weight = torch.randn((6, 4, 3, 3), generator=generator) * 0.2
    offset = randn(2, 18, 8, 8, scale=0.5)
    if name == 'DeformConv2dFunction':
        return (randn(2, 4, 8, 8), offset, weight), (1, 1, 1, 1, 1, False, 32)
    mask = torch.rand((2, 9, 8, 8), generator=generator).to(dtype)
    return (randn(2, 4, 8, 8), offset, mask, weight, torch.zeros(6)), (1, 1, 1, 1, 1)


def run_op(function: type, name: str, floats: tuple, others: tuple):
    """(output, gradients of the floating inputs) of one call and backward."""
    leaves = tuple(t.detach().clone().requires_grad_(name != 'NMSop') for t in floats)
    out = function.apply(*leaves, *others)
    if name == 'NMSop':
        return out, ()
    # small integers as the output's gradient: exact in every dtype
    (out.float() * (torch.arange(out.numel()) % 7 - 3).view_as(out)).sum().backward()
    return out.detach(), tuple(leaf.grad for leaf in leaves)


def same(a, b) -> bool:
    """Equal tensors of the same dtype, or both ``None``."""
    return (a is None and b is None) or (a.dtype == b.dtype and torch.equal(a, b))


CPU_OPS = ['NMSop', 'RoIAlignFunction', 'DeformConv2dFunction', 'ModulatedDeformConv2dFunction']


@pytest.mark.parametrize('name', CPU_OPS)
def test_bfloat16_under_cpu_autocast_runs_the_float32_kernel_and_casts_gradients_back(name):
    function = FUNCTIONS[name]
    floats, others = op_inputs(name, BF16)
    # the kernel has no bfloat16, and without autocast the shim leaves the call alone
    with pytest.raises((RuntimeError, NotImplementedError)):
        run_op(function, name, floats, others)

    with torch.autocast('cpu', dtype=BF16):
        out, grads = run_op(function, name, floats, others)
    # mmcv's own code on the same values in float32, without autocast
    reference, reference_grads = run_op(unwrapped(function), name,
                                        tuple(t.float() for t in floats), others)
    if name == 'NMSop':
        assert torch.equal(out, reference)
    else:  # computed in float32, returned as a bfloat16 kernel would
        assert out.dtype == BF16 and torch.equal(out, reference.to(BF16))
        assert grads[0].dtype == BF16  # autograd casts the float32 gradient back
        for grad, expected, value in zip(grads, reference_grads, floats):
            assert (grad is None) == (expected is None)  # (RoIs get none)
            if grad is not None:
                assert grad.dtype == value.dtype and torch.equal(grad, expected.to(grad.dtype))


@pytest.mark.parametrize('name', CPU_OPS)
def test_float32_and_float16_calls_are_mmcv_s_own_bit_for_bit(name):
    function = FUNCTIONS[name]
    floats, others = op_inputs(name, torch.float32)
    released = run_op(unwrapped(function), name, floats, others)
    for context in (torch.autocast('cpu', enabled=False), torch.autocast('cpu', dtype=BF16)):
        with context:
            out, grads = run_op(function, name, floats, others)
        assert torch.equal(out, released[0])
        assert all(same(g, r) for g, r in zip(grads, released[1]))
    if name == 'NMSop':  # the CPU nms reads float32 only: float16 is cast, as bfloat16 is
        return
    # CPU kernels with float16: float16 autocast passes through, output in float16
    floats, _ = op_inputs(name, torch.float16)
    with torch.autocast('cpu', dtype=torch.float16):
        out, grads = run_op(function, name, floats, others)
        released = run_op(unwrapped(function), name, floats, others)
    assert out.dtype == torch.float16 and torch.equal(out, released[0])
    assert all(same(g, r) for g, r in zip(grads, released[1]))


# -- tiny detectors distilled under bfloat16 autocast -----------------------------------------
def tiny_detector(kind: str, width: int) -> dict:
    """A stock mmdet detector at tiny widths, 3 classes."""
    feat = 16
    common = dict(backbone=dict(depth=18, base_channels=width, stem_channels=width,
                                init_cfg=None),
                  neck=dict(in_channels=[width, 2 * width, 4 * width, 8 * width],
                            out_channels=feat))
    if kind == 'retinanet':  # score_thr 0: predictions reach the nms despite a random head
        return dict(cfg_path='mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', **common,
                    bbox_head=dict(in_channels=feat, feat_channels=feat, num_classes=3),
                    test_cfg=dict(score_thr=0.0))
    return dict(cfg_path='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', **common,
                rpn_head=dict(in_channels=feat, feat_channels=feat),
                roi_head=dict(bbox_roi_extractor=dict(out_channels=feat),
                              bbox_head=dict(in_channels=feat, fc_out_channels=32,
                                             num_classes=3)))


def det_batch(seed: int, size: int = 64) -> dict:
    """Two uint8 images with 2 boxes each, as mmdet's pipeline and collate give them."""
    generator = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                                    generator=generator))
        corner = torch.rand((2, 2), generator=generator) * size / 2
        boxes = torch.cat([corner, corner + size / 4 + torch.rand((2, 2), generator=generator)
                           * size / 4], dim=1)
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=HorizontalBoxes(boxes),
                                           labels=torch.randint(0, 3, (2, ),
                                                                generator=generator))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def build_distillation(kind: str, tmp_path):
    """FitNets on backbone.layer3 between two tiny detectors of ``kind``."""
    teacher = tiny_detector(kind, 16)
    ckpt = save_checkpoint_of(teacher, str(tmp_path / 'teacher.pth'))
    torch.manual_seed(1)
    model = MODELS.build(dict(
        type='SingleTeacherDistill', architecture=tiny_detector(kind, 8), teacher=teacher,
        teacher_ckpt=ckpt, dry_run_shape=(3, 64, 64),
        distiller=dict(type='ConfigurableDistiller', tap_pairs=[dict(
            name='hint', student='backbone.layer3', teacher='backbone.layer3',
            student_connector=dict(type='ConvBNConnector'), loss=dict(type='FitNetsLoss'))])))
    model.init_weights()
    return model.train()


def train_and_predict(model, autocast: bool) -> tuple:
    """Two training steps and one prediction, under bfloat16 autocast or not; (the losses of
    each step, the predictions, the dtypes of the student's backbone outputs)."""
    optim_wrapper = OptimWrapper(torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.01))
    dtypes = set()
    handle = model.student.backbone.register_forward_hook(
        lambda module, args, out: dtypes.add(out[-1].dtype))
    try:
        with torch.autocast('cpu', dtype=BF16, enabled=autocast):
            losses = [model.train_step(det_batch(seed), optim_wrapper) for seed in range(2)]
            predictions = model.val_step(det_batch(2))
    finally:
        handle.remove()
    return losses, predictions, dtypes


@pytest.mark.parametrize('kind', ['retinanet', 'faster_rcnn'])
def test_detector_distillation_trains_and_predicts_under_bfloat16_autocast(kind, tmp_path,
                                                                          mmcv_as_released):
    model = build_distillation(kind, tmp_path)
    initial = copy.deepcopy(model.state_dict())
    losses, predictions, dtypes = train_and_predict(model, autocast=True)
    assert dtypes == {BF16}
    for step in losses:
        assert 'loss_hint' in step
        assert all(math.isfinite(float(value)) for value in step.values()), step
    for prediction in predictions:
        scores = prediction.pred_instances.scores
        assert len(scores) > 0 and bool(torch.isfinite(scores.float()).all())
        assert bool(torch.isfinite(prediction.pred_instances.bboxes.float()).all())

    # mmcv as released: the same steps stop (nms: RPN proposals in training, predictions of
    # RetinaNet; roi_align after it)
    mmcv_as_released()
    model.load_state_dict(initial)
    with pytest.raises((RuntimeError, NotImplementedError)):
        train_and_predict(model, autocast=True)


def test_float32_detector_losses_are_those_of_mmcv_as_released(tmp_path, mmcv_as_released):
    model = build_distillation('faster_rcnn', tmp_path)
    data = model.data_preprocessor(det_batch(0), True)

    def losses():
        torch.manual_seed(0)  # the RoI sampler draws
        with torch.no_grad():
            return model(**copy.deepcopy(data), mode='loss')

    def flat(losses: dict) -> dict:  # (RPN losses come as a list per level)
        return {f'{key}.{index}': value for key, values in losses.items()
                for index, value in enumerate(values if isinstance(values, list) else [values])}

    shimmed = flat(losses())
    mmcv_as_released()
    released = flat(losses())
    assert set(shimmed) == set(released) and any('rpn' in key for key in shimmed)
    assert all(torch.equal(shimmed[key], released[key]) for key in shimmed), \
        {key: (shimmed[key], released[key]) for key in shimmed}


@pytest.mark.skipif(not torch.cuda.is_available(), reason='the focal loss has no CPU kernel')
def test_cuda_ops_under_bfloat16_autocast():  # pragma: no cover (GPU only)
    if not torch.cuda.is_bf16_supported():
        pytest.skip('this GPU has no bfloat16')
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn((64, 8), generator=generator) * 3).to('cuda', BF16)
    target = torch.randint(0, 9, (64, ), generator=generator).cuda()
    leaf = logits.clone().requires_grad_(True)
    with torch.autocast('cuda', dtype=BF16):
        loss = mmcv.ops.sigmoid_focal_loss(leaf, target, 2.0, 0.25, None, 'sum')
    loss.backward()
    reference_leaf = logits.float().requires_grad_(True)
    reference = mmcv.ops.sigmoid_focal_loss(reference_leaf, target, 2.0, 0.25, None, 'sum')
    reference.backward()
    assert loss.dtype == torch.float32 and torch.equal(loss, reference)
    assert leaf.grad.dtype == BF16 and torch.equal(leaf.grad, reference_leaf.grad.to(BF16))
    for name in ('RoIAlignFunction', 'DeformConv2dFunction'):
        floats, others = op_inputs(name, BF16)
        floats = tuple(t.cuda() for t in floats)
        with torch.autocast('cuda', dtype=BF16):
            out, _ = run_op(FUNCTIONS[name], name, floats, others)
        reference, _ = run_op(FUNCTIONS[name], name, tuple(t.float() for t in floats), others)
        assert torch.equal(out, reference)
