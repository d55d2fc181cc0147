"""CrossKD: its losses against hand computations, the cross-head pass against a hand-run of the
teacher's head layers on the student's features, the gradients (to the student through the
frozen teacher head, none into the teacher), the checks made at build, and the GFL and
RetinaNet configs for one training iteration on tiny real data."""
import math
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.losses import GIoULoss, KnowledgeDistillationKLDivLoss
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

from data_factory import det_data_options, make_coco_detection
from helpers import (REPO, assert_teacher_unchanged, config_path, save_checkpoint_of,
                     train_recorded)
from mmkd.apis.export import student_state_dict
from mmkd.models import build_model_from_cfg
from mmkd.models.losses import KDDistributionLoss, KDQualityFocalLoss
from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError, ShapeMismatchError

GFL = 'mmdet::gfl/gfl_r50_fpn_1x_coco.py'
RETINANET = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'


def tiny_detector(cfg_path, width, feat=32, classes=3, **head):
    """A stock detector config at tiny widths (GFL's GroupNorm needs 32 channels)."""
    return dict(cfg_path=cfg_path,
                backbone=dict(depth=18, base_channels=width, stem_channels=width, init_cfg=None),
                neck=dict(in_channels=[width, 2 * width, 4 * width, 8 * width],
                          out_channels=feat),
                bbox_head=dict(in_channels=feat, feat_channels=feat, num_classes=classes,
                               **head))


def build_crosskd(tmp_path, cfg_path, student=None, teacher=None, seed=0, **kwargs):
    teacher = teacher or tiny_detector(cfg_path, 16)
    ckpt = save_checkpoint_of(teacher, str(tmp_path / 'teacher.pth'), seed=seed)
    torch.manual_seed(seed + 1)
    model = MODELS.build(dict(type='CrossKDDistill', architecture=student or tiny_detector(
        cfg_path, 8), teacher=teacher, teacher_ckpt=ckpt, **kwargs))
    model.init_weights()
    return model.train(), ckpt


def batch(seed=0, size=64):
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for boxes, labels in [([[5., 5., 40., 50.], [20., 10., 60., 30.]], [0, 2]),
                          ([[10., 12., 50., 44.]], [1])]:
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                             batch_input_shape=(size, size),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes),
                                           labels=torch.tensor(labels))
        samples.append(sample)
    return torch.randn(2, 3, size, size, generator=generator), samples


# -- the losses --------------------------------------------------------------------------------
def test_kd_quality_focal_loss_by_hand_with_its_gradient():
    pred = torch.tensor([[0.0, 2.0], [-1.0, 0.5]], requires_grad=True)
    target = torch.tensor([[0.0, -1.0], [1.0, 0.5]])
    weight = torch.tensor([1.0, 0.5])
    loss = KDQualityFocalLoss(beta=1.0, loss_weight=2.0)(pred, target, weight, avg_factor=3.0)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected, grads = 0.0, []
    for row, (p_row, t_row) in enumerate(zip(pred.tolist(), target.tolist())):
        for p, t in zip(p_row, t_row):
            q, s = sig(p), sig(t)
            bce = -(s * math.log(q) + (1 - s) * math.log(1 - q))
            expected += weight[row].item() * bce * abs(q - s)
            # d/dp [bce * |q - s|] = (q - s) |q - s| + bce * sign(q - s) * q (1 - q), with
            # sign(0) = 0 (two entries have q = s)
            sign = (q > s) - (q < s)
            grads.append(weight[row].item() * ((q - s) * abs(q - s) + bce * sign * q * (1 - q)))
    assert loss.item() == pytest.approx(2.0 * expected / 3.0, rel=1e-5)
    loss.backward()
    torch.testing.assert_close(pred.grad.flatten(), 2.0 / 3.0 * torch.tensor(grads))
    # equal logits: the focal factor |q - s| is 0, so is the loss and (sign(0) = 0) its gradient
    equal = target.clone().requires_grad_(True)
    loss = KDQualityFocalLoss(beta=1.0)(equal, target)
    loss.backward()
    assert loss.item() == 0 and equal.grad.abs().max() == 0


def test_kd_distribution_loss_sums_the_kl_over_bins():
    generator = torch.Generator().manual_seed(0)
    pred = torch.randn(8, 17, generator=generator, requires_grad=True)
    target = torch.randn(8, 17, generator=generator) * 2
    weight = torch.rand(8, generator=generator)
    loss = KDDistributionLoss(tau=2.0, loss_weight=3.0)(pred, target, weight, avg_factor=4.0)
    p_t = torch.softmax(target / 2, dim=1)
    kl = (p_t * (p_t.log() - torch.log_softmax(pred.detach() / 2, dim=1))).sum(1) * 4
    assert loss.item() == pytest.approx((3.0 * (weight * kl).sum() / 4.0).item(), rel=1e-5)
    # mmdet's KnowledgeDistillationKLDivLoss averages over the bins: 17 times smaller
    mmdet_loss = KnowledgeDistillationKLDivLoss(loss_weight=3.0, T=2)(
        pred, target, weight, avg_factor=4.0)
    assert loss.item() == pytest.approx(17 * mmdet_loss.item(), rel=1e-5)
    loss.backward()
    closed_form = 3.0 * weight[:, None] * 2 * (torch.softmax(pred.detach() / 2, 1) - p_t) / 4.0
    torch.testing.assert_close(pred.grad, closed_form)


@pytest.mark.parametrize('cfg', [dict(type='KDQualityFocalLoss', beta=-1),
                                 dict(type='KDQualityFocalLoss', loss_weight=0),
                                 dict(type='KDDistributionLoss', tau=0)])
def test_crosskd_loss_hyper_parameters_are_checked_at_build(cfg):
    with pytest.raises(ConfigError, match=cfg['type']):
        MODELS.build(cfg)


# -- the cross-head pass ---------------------------------------------------------------------
def held_features(detector, inputs, branch, index):
    """By hand: each level's head feature after ``index`` stacked convs, before the last one's
    activation."""
    features = []
    for x in detector.extract_feat(inputs):
        convs = getattr(detector.bbox_head, f'{branch}_convs')
        for conv in convs[:index - 1]:
            x = conv(x)
        last = convs[index - 1]
        x = last.conv(x)
        features.append(last.norm(x) if last.with_norm else x)
    return features


def by_hand_alignment(student, teacher):
    def stats(x):
        values = x.transpose(0, 1).reshape(x.shape[1], -1)
        return values.mean(1).view(1, -1, 1, 1), values.std(1).view(1, -1, 1, 1)

    s_mean, s_std = stats(student)
    t_mean, t_std = stats(teacher)
    return (student - s_mean) / (s_std + 1e-6) * t_std + t_mean


@pytest.mark.parametrize('cfg_path,layers', [(GFL, ('gfl_cls', 'gfl_reg')),
                                             (RETINANET, ('retina_cls', 'retina_reg'))])
def test_cross_head_is_the_teacher_head_on_aligned_student_features(tmp_path, cfg_path, layers):
    model, _ = build_crosskd(tmp_path, cfg_path, reused_head_idx=2)
    inputs, samples = batch()
    model.loss(inputs, samples)
    teacher_head = model.teacher.bbox_head
    with torch.no_grad():
        for branch, layer in zip(('cls', 'reg'), layers):
            students = held_features(model.student, inputs, branch, 2)
            teachers = held_features(model.teacher, inputs, branch, 2)
            for level, (s, t) in enumerate(zip(students, teachers)):
                x = F.relu(by_hand_alignment(s, t))
                for conv in getattr(teacher_head, f'{branch}_convs')[2:]:
                    x = conv(x)
                x = getattr(teacher_head, layer)(x)
                if cfg_path == GFL and branch == 'reg':
                    x = teacher_head.scales[level](x)
                cross = model.cross_head(level)[0 if branch == 'cls' else 1]
                torch.testing.assert_close(cross, x, rtol=1e-4, atol=1e-5)


def teacher_outputs_and_targets(model, inputs, samples):
    """The teacher's per-level class and box outputs, the student head's anchors (per image,
    as ``get_targets`` leaves them) and its ``get_targets`` for the batch (the label assignment
    the algorithm reads)."""
    teacher_cls, teacher_reg = model.teacher(inputs, None, mode='tensor')
    head, metas = model.student.bbox_head, [s.metainfo for s in samples]
    anchors, flags = head.get_anchors([c.shape[-2:] for c in teacher_cls], metas, device='cpu')
    targets = head.get_targets(anchors, flags, [s.gt_instances for s in samples], metas)
    return teacher_cls, teacher_reg, anchors, targets


def test_gfl_losses_equal_a_hand_computation(tmp_path):
    model, _ = build_crosskd(tmp_path, GFL)
    inputs, samples = batch()
    losses = model.loss(inputs, samples)
    head = model.student.bbox_head
    with torch.no_grad():
        # the label assignment the algorithm read is the head's own
        teacher_cls, teacher_reg, _, targets = teacher_outputs_and_targets(model, inputs,
                                                                           samples)
        labels, label_weights, num_pos = targets[1], targets[2], targets[5]
        assert num_pos == sum(int(((lab >= 0) & (lab < 3)).sum()) for lab in labels) > 0
        cls, dist, box, weight_sum = 0.0, 0.0, 0.0, 0.0
        for level, (t_cls, t_reg) in enumerate(zip(teacher_cls, teacher_reg)):
            x_cls, x_reg = model.cross_head(level)
            t_c = t_cls.permute(0, 2, 3, 1).reshape(-1, 3)
            x_c = x_cls.permute(0, 2, 3, 1).reshape(-1, 3)
            q, s = x_c.sigmoid(), t_c.sigmoid()
            bce = -(s * q.log() + (1 - s) * (1 - q).log())
            lw = label_weights[level].reshape(-1, 1)
            cls += (lw * bce * (q - s).abs()).sum() / num_pos
            w = t_c.max(1)[0].sigmoid() * (lw[:, 0] > 0)
            weight_sum += w.sum()
            t_bins = t_reg.permute(0, 2, 3, 1).reshape(-1, 17)
            x_bins = x_reg.permute(0, 2, 3, 1).reshape(-1, 17)
            p_t = t_bins.softmax(1)
            kl = (p_t * (p_t.log() - x_bins.log_softmax(1))).sum(1)
            dist += 3.0 * (w.repeat_interleave(4) * kl).sum() / 4.0
            stride = head.prior_generator.strides[level][0]
            # get_targets returns the anchors per level, (B, N, 4) (it concatenated the lists
            # passed to it in place)
            centers = head.anchor_center(targets[0][level].reshape(-1, 4)) / stride
            project = torch.linspace(0, 16, 17)

            def boxes(reg):
                distances = (reg.permute(0, 2, 3, 1).reshape(-1, 4, 17).softmax(2)
                             * project).sum(2)
                return torch.stack([centers[:, 0] - distances[:, 0],
                                    centers[:, 1] - distances[:, 1],
                                    centers[:, 0] + distances[:, 2],
                                    centers[:, 1] + distances[:, 3]], dim=1)

            box += GIoULoss(loss_weight=2.0, reduction='none')(boxes(x_reg), boxes(t_reg)) @ w
    assert losses['loss_crosskd_cls'].item() == pytest.approx(cls.item(), rel=1e-4)
    assert losses['loss_crosskd_dist'].item() == pytest.approx((dist / weight_sum).item(),
                                                               rel=1e-4)
    assert losses['loss_crosskd_box'].item() == pytest.approx((box / weight_sum).item(),
                                                              rel=1e-4)
    assert all(losses[k] > 0 for k in ('loss_crosskd_cls', 'loss_crosskd_dist',
                                       'loss_crosskd_box'))


def test_retinanet_losses_equal_a_hand_computation(tmp_path):
    model, _ = build_crosskd(tmp_path, RETINANET)
    inputs, samples = batch()
    losses = model.loss(inputs, samples)
    head = model.student.bbox_head
    with torch.no_grad():
        teacher_cls, teacher_reg, anchors, targets = teacher_outputs_and_targets(model, inputs,
                                                                                 samples)
        label_weights, num_pos = targets[1], targets[4]
        assert any(bool((lw == 0).any()) for lw in label_weights)  # ignored anchors exist
        cls, box = 0.0, 0.0
        for level, (t_cls, t_reg) in enumerate(zip(teacher_cls, teacher_reg)):
            x_cls, x_reg = model.cross_head(level)
            t_c = t_cls.permute(0, 2, 3, 1).reshape(-1, 3)
            x_c = x_cls.permute(0, 2, 3, 1).reshape(-1, 3)
            q, s = x_c.sigmoid(), t_c.sigmoid()
            bce = -(s * q.log() + (1 - s) * (1 - q).log())
            lw = label_weights[level].reshape(-1, 1)
            cls += (lw * bce * (q - s).abs()).sum() / num_pos
            w = t_c.max(1)[0].sigmoid() * (lw[:, 0] > 0)
            level_anchors = anchors[0][level].repeat(2, 1)
            decode = lambda reg: head.bbox_coder.decode(  # noqa: E731
                level_anchors, reg.permute(0, 2, 3, 1).reshape(-1, 4))
            box += GIoULoss(reduction='none')(decode(x_reg), decode(t_reg)) @ w / num_pos
    assert losses['loss_crosskd_cls'].item() == pytest.approx(cls.item(), rel=1e-4)
    assert losses['loss_crosskd_box'].item() == pytest.approx(box.item(), rel=1e-4)
    assert 'loss_crosskd_dist' not in losses


@pytest.mark.parametrize('cfg_path', [GFL, RETINANET])
def test_crosskd_gradient_reaches_the_student_through_the_frozen_teacher_head(tmp_path,
                                                                               cfg_path):
    model, ckpt = build_crosskd(tmp_path, cfg_path)
    losses = model.loss(*batch())  # only the cross-head losses are backpropagated
    sum(v for k, v in losses.items() if k.startswith('loss_crosskd')).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert_teacher_unchanged(model.teacher, ckpt)
    grads = {name: p.grad for name, p in model.student.named_parameters()}
    reached = {name for name, g in grads.items() if g is not None and g.abs().sum() > 0}
    for prefix in ('backbone.layer4.', 'neck.', 'bbox_head.cls_convs.2.', 'bbox_head.reg_convs.0.'):
        assert any(name.startswith(prefix) for name in reached), prefix
    # the student's own layers after the handover are not on the cross path
    for prefix in ('bbox_head.cls_convs.3.', 'bbox_head.reg_convs.3.'):
        assert not any(name.startswith(prefix) for name in reached), prefix


def test_without_distillation_the_teacher_does_not_run(tmp_path):
    model, _ = build_crosskd(tmp_path, GFL)
    calls = []
    handle = model.teacher.register_forward_pre_hook(lambda *args: calls.append(1))
    model.distillation_enabled = False  # as DistillSwitchHook does
    losses = model.loss(*batch())
    handle.remove()
    assert not calls and all(k.startswith('student.') for k in losses)


def test_crosskd_and_a_feature_distiller_together(tmp_path):
    # CrossKD+PKD: the distiller's taps record in the same teacher and student passes
    model, _ = build_crosskd(tmp_path, GFL, dry_run_shape=(3, 64, 64), distiller=dict(
        type='ConfigurableDistiller',
        tap_pairs=[dict(name='pkd', student='neck', loss=dict(type='PKDLoss', loss_weight=6))]))
    losses = model.loss(*batch())
    assert {'loss_pkd', 'loss_crosskd_cls', 'loss_crosskd_box', 'loss_crosskd_dist'} <= set(
        losses)
    assert math.isfinite(losses['loss_pkd'].item()) and losses['loss_pkd'] > 0


# -- checks at build -----------------------------------------------------------------------------
def test_crosskd_refuses_what_it_cannot_distil(tmp_path):
    with pytest.raises(ConfigError, match='same dense head.*GFLHead.*RetinaHead'):
        build_crosskd(tmp_path, GFL, teacher=tiny_detector(RETINANET, 16))
    with pytest.raises(ConfigError, match='reused_head_idx must be an integer from 0 to'):
        build_crosskd(tmp_path, GFL, reused_head_idx=5)
    with pytest.raises(ShapeMismatchError, match='after 3 stacked cls convs .* 64 channels '
                       ".*takes 32"):
        build_crosskd(tmp_path, GFL, student=tiny_detector(GFL, 8, feat=64))
    with pytest.raises(ShapeMismatchError, match='num_classes=4 .* num_classes=3'):
        build_crosskd(tmp_path, GFL, student=tiny_detector(GFL, 8, classes=4))
    with pytest.raises(ConfigError, match='loss_dist_kd .* RetinaHead has none'):
        build_crosskd(tmp_path, RETINANET, loss_dist_kd=dict(type='KDDistributionLoss'))
    with pytest.raises(ConfigError, match='calculate_student_loss must be True'):
        build_crosskd(tmp_path, GFL, calculate_student_loss=False)
    # the head's input is a valid handover point too (reused_head_idx=0)
    model, _ = build_crosskd(tmp_path, GFL, reused_head_idx=0)
    assert all(math.isfinite(v.item()) for k, v in model.loss(*batch()).items()
               if k.startswith('loss_crosskd'))


# -- the configs ---------------------------------------------------------------------------------
@pytest.mark.parametrize('config,cls_layer', [
    ('crosskd/crosskd_gfl_r101_r50_fpn_1x_coco.py', 'gfl_cls'),
    ('crosskd/crosskd_retinanet_r101_r50_fpn_2x_coco.py', 'retina_cls'),
], ids=['gfl', 'retinanet'])
def test_config_trains_one_iteration(tmp_path, config, cls_layer):
    cfg = Config.fromfile(config_path(config))
    info = make_coco_detection(tmp_path / 'data', image_size=(64, 64))
    ckpt = save_checkpoint_of(dict(cfg.model.teacher, pretrained=False),
                              str(tmp_path / 'teacher.pth'))
    options = dict(det_data_options(info, max_iters=1, save_checkpoint=False),
                   **{'model.teacher.pretrained': False, 'model.teacher_ckpt': ckpt,
                      'model.architecture.backbone.init_cfg': None})
    # the teacher's own forward runs every layer once per level; the cross-head pass runs its
    # fourth stacked convs and prediction layers a second time; no loss, no NMS
    counted = {'backbone': 1, 'neck': 1, 'bbox_head.cls_convs.0': 5,
               'bbox_head.cls_convs.2': 5, 'bbox_head.cls_convs.3': 10,
               'bbox_head.reg_convs.3': 10, f'bbox_head.{cls_layer}': 10,
               'bbox_head.loss_cls': 0, 'bbox_head.loss_bbox': 0}
    record = train_recorded(cfg, str(tmp_path / 'work'), options, count=tuple(counted))
    runner, calls = record.runner, record.calls
    assert calls == counted
    logged = runner.message_hub.log_scalars
    names = {'loss_crosskd_cls', 'loss_crosskd_box'} | (
        {'loss_crosskd_dist'} if cls_layer == 'gfl_cls' else set())
    assert {k[len('train/'):] for k in logged if k.startswith('train/loss_')} == names
    assert all(math.isfinite(logged[f'train/{n}'].current()) and logged[f'train/{n}'].current()
               > 0 for n in names)
    assert any(key.startswith('train/student.') for key in logged)
    assert_teacher_unchanged(runner.model.teacher, ckpt)
    moved = record.moved('student')
    assert any(name.startswith('bbox_head.cls_convs.0.') for name in moved), moved
    stock = build_model_from_cfg(dict(cfg.model.architecture, pretrained=False), 'student')
    stock.load_state_dict(student_state_dict(runner.model.state_dict()), strict=True)


def test_gfl_config_trains_on_two_processes_with_dist_train_and_gloo(tmp_path):
    """tools/dist_train.sh with 2 CPU processes (gloo): the cross-head gradient passes through
    the teacher's layers, which DDP ignores; GFL averages the number of positives over the
    processes (mmengine's all_reduce)."""
    cfg = Config.fromfile(config_path('crosskd/crosskd_gfl_r101_r50_fpn_1x_coco.py'))
    info = make_coco_detection(tmp_path / 'data', image_size=(64, 64))
    ckpt = save_checkpoint_of(dict(cfg.model.teacher, pretrained=False),
                              str(tmp_path / 'teacher.pth'))
    cfg.merge_from_dict(dict(det_data_options(info, max_iters=2, batch_size=1),
                             **{'model.teacher.pretrained': False, 'model.teacher_ckpt': ckpt,
                                'model.architecture.backbone.init_cfg': None}))
    config = str(tmp_path / 'crosskd_gloo.py')
    cfg.dump(config)
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ('NNODES', 'NODE_RANK', 'MASTER_ADDR')}
    env.update(PYTHON=sys.executable, PORT=str(port), OMP_NUM_THREADS='1')
    work_dir = tmp_path / 'work'
    run = subprocess.run(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), config, '2',
                          '--work-dir', str(work_dir)], env=env, capture_output=True, text=True,
                         timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert 'Distributed training: True' in output and 'loss_crosskd_box' in output
    state = torch.load(work_dir / 'iter_2.pth', weights_only=True)['state_dict']
    teacher = torch.load(ckpt, weights_only=True)['state_dict']
    assert all(torch.equal(state[f'teacher.{k}'], v) for k, v in teacher.items())
    stock = build_model_from_cfg(dict(cfg.model.architecture, pretrained=False), 'student')
    stock.load_state_dict(student_state_dict(state), strict=True)
