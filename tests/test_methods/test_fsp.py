"""FSP: the FSP matrix and loss against hand computations, the ``taps`` form of tap pairs, the
two-stage schedule of the digits config, and end-to-end training of every FSP config."""
import pytest
import torch
from mmengine.config import Config
from mmpretrain.structures import DataSample

from data_factory import det_data_options, make_coco_detection
from helpers import config_path, save_checkpoint_of, tiny_classifier, train_recorded
from mmkd.models.distillers.tap_pairs import expand_tap_pairs
from mmkd.models.losses import FSPLoss, fsp_matrix
from mmkd.registry import MODELS

# -- the FSP matrix and the loss ------------------------------------------------------------


def test_fsp_matrix_equals_hand_computation():
    first = torch.tensor([[[[1., 2.], [3., 4.]], [[0., 1.], [1., 0.]]]])  # (1, 2, 2, 2)
    second = torch.tensor([[[[2., 1.], [0., 1.]]]])  # (1, 1, 2, 2)
    # G_i0 = sum_hw F1_i * F2_0 / 4
    expected = torch.tensor([[[(2 + 2 + 0 + 4) / 4], [(0 + 1 + 0 + 0) / 4]]])
    torch.testing.assert_close(fsp_matrix(first, second), expected)


def test_fsp_matrix_pools_the_larger_map_to_the_smaller_size():
    first = torch.arange(16.).reshape(1, 1, 4, 4)
    second = torch.tensor([[[[1., 2.], [3., 4.]]]])
    # 2x2 average pooling of 0..15: block means 2.5, 4.5, 10.5, 12.5
    expected = (2.5 * 1 + 4.5 * 2 + 10.5 * 3 + 12.5 * 4) / 4
    assert fsp_matrix(first, second).item() == pytest.approx(expected)
    assert fsp_matrix(second, first).item() == pytest.approx(expected)  # either side is pooled


def hand_fsp(first, second):
    """FSP matrices with explicit loops, for equal spatial sizes."""
    batch, c1, height, width = first.shape
    result = torch.zeros(batch, c1, second.shape[1])
    for b in range(batch):
        for i in range(c1):
            for j in range(second.shape[1]):
                result[b, i, j] = sum(first[b, i, y, x] * second[b, j, y, x]
                                      for y in range(height) for x in range(width))
    return result / (height * width)


@pytest.mark.parametrize('reduction', ['batchmean', 'mean'])
def test_fsp_loss_equals_hand_computation(reduction):
    torch.manual_seed(0)
    s1, s2 = torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 2, 2, 2)
    t1, t2 = torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 2, 2, 2)
    pool = torch.nn.functional.avg_pool2d
    diff = hand_fsp(pool(t1.detach(), 2), t2) - hand_fsp(pool(s1.detach(), 2), s2)
    squared = diff.pow(2)
    expected = 0.5 * (squared.sum() / 2 if reduction == 'batchmean' else squared.mean())
    loss = FSPLoss(loss_weight=0.5, reduction=reduction)(s1, s2, t1, t2)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert s1.grad is not None and t1.grad is None


def test_fsp_loss_rejects_bad_inputs():
    with pytest.raises(ValueError, match='reduction'):
        FSPLoss(reduction='sum')
    x = torch.randn(2, 4, 4, 4)
    with pytest.raises(ValueError, match="ConvBNConnector"):
        FSPLoss()(x, x, torch.randn(2, 8, 4, 4), x)
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        FSPLoss()(x.flatten(2), x, x, x)


# -- several taps per loss in tap_pairs -----------------------------------------------------
STAGE_PAIRS = [
    dict(name=f'fsp{i}', student=f'backbone.layer{i}', loss=dict(type='FSPLoss'),
         taps=dict(first=dict(recorder='ModuleInputs'), second=dict()))
    for i in (1, 2)
]


def test_taps_expand_into_one_recorder_per_role_and_suffixed_arguments():
    parts = expand_tap_pairs(
        [dict(STAGE_PAIRS[0], student_connector=dict(type='ConvBNConnector'))],
        dict(student_recorders={}, teacher_recorders={}, connectors={}, distill_losses={},
             loss_forward_mappings={}))
    assert parts['student_recorders'] == {
        'fsp1_first': dict(type='ModuleInputs', source='backbone.layer1'),
        'fsp1_second': dict(type='ModuleOutputs', source='backbone.layer1')}
    assert parts['teacher_recorders'] == parts['student_recorders']
    assert set(parts['connectors']) == {'fsp1_first_student', 'fsp1_second_student'}
    mapping = parts['loss_forward_mappings']['loss_fsp1']
    assert set(mapping) == {'student_first', 'student_second', 'teacher_first', 'teacher_second'}
    assert mapping['student_second'] == dict(recorder='fsp1_second', from_student=True,
                                             data_idx=None, connector='fsp1_second_student')
    with pytest.raises(KeyError, match='unknown keys'):
        expand_tap_pairs([dict(STAGE_PAIRS[0], taps=dict(first=dict(lose=1)))],
                         dict(student_recorders={}, teacher_recorders={}, connectors={},
                              distill_losses={}, loss_forward_mappings={}))


def build_fsp(tmp_path, student_width, teacher_width, tap_pairs):
    teacher = tiny_classifier(width=teacher_width)
    ckpt = save_checkpoint_of(teacher, str(tmp_path / 'teacher.pth'))
    return MODELS.build(dict(
        type='SingleTeacherDistill', architecture=tiny_classifier(width=student_width),
        teacher=teacher, teacher_ckpt=ckpt, dry_run_shape=(3, 32, 32),
        distiller=dict(type='ConfigurableDistiller', tap_pairs=tap_pairs)))


def test_channel_mismatch_fails_at_build_time_and_connectors_fix_it(tmp_path):
    with pytest.raises(Exception, match='ConvBNConnector') as error:
        build_fsp(tmp_path, 4, 8, STAGE_PAIRS)
    assert 'loss_fsp1' in str(error.value)
    pairs = [dict(pair, student_connector=dict(type='ConvBNConnector')) for pair in STAGE_PAIRS]
    algorithm = build_fsp(tmp_path, 4, 8, pairs)
    connectors = algorithm.distiller.connectors
    # each student tap maps to the channels of the same tap of the teacher (stage 2: 8 -> 16)
    assert connectors['fsp2_first_student'].conv.out_channels == 8
    assert connectors['fsp2_second_student'].conv.out_channels == 16
    same_width = build_fsp(tmp_path, 8, 8, STAGE_PAIRS)  # the paper's setting: no connector
    samples = [DataSample().set_gt_label(label) for label in (0, 1)]
    losses = same_width.train().loss(torch.randn(2, 3, 32, 32), samples)
    assert set(losses) == {'student.loss', 'loss_fsp1', 'loss_fsp2'}


# -- the two-stage schedule and end-to-end training of each config ---------------------------


def assert_trained(record, loss_names, loss_goes_down=True):
    """The teacher is bit-identical, the student moved, the distillation loss went down."""
    assert record.moved('teacher', floating_only=False) == [], 'teacher changed'
    assert len(record.moved('student')) > 10
    total = sum(record.history(name) for name in loss_names)
    assert all(total > 0)
    if loss_goes_down:
        assert total[-2:].mean() < total[:2].mean()


FSP_LOSSES = [f'loss_fsp_layer{i}' for i in range(1, 5)]


NO_VALIDATION = {'val_cfg': None, 'val_dataloader': None, 'val_evaluator': None}


def digits_teacher_ckpt(tmp_path):
    teacher_cfg = Config.fromfile(config_path('digits/teacher_resnet18_w32.py'))
    return save_checkpoint_of(teacher_cfg.model.to_dict(), str(tmp_path / 'teacher.pth'))


def test_two_stage_digits_config_switches_from_fsp_only_to_the_task_loss(tmp_path):
    options = {
        'model.teacher_ckpt': digits_teacher_ckpt(tmp_path),
        'train_dataloader.dataset.shots_per_class': 2,  # 20 images, 4 iterations per epoch
        'train_dataloader.batch_size': 5,
        'custom_hooks': [dict(type='DistillSwitchHook', stop_at=1, reset_optimizer_state=True)],
        'param_scheduler': dict(T_max=1, begin=1, end=2),
        'train_cfg.max_epochs': 2,
        'default_hooks.checkpoint.interval': 2,
        **NO_VALIDATION,
    }
    record = train_recorded(config_path('digits/fsp_two_stage_resnet18_w32_w4.py'),
                            str(tmp_path / 'work'), options,
                            watch=['head.fc.weight', 'backbone.conv1.weight'])
    head_before = record.before['student']['head.fc.weight']
    stage1 = [row for row in record.rows if row['epoch'] == 0]
    stage2 = [row for row in record.rows if row['epoch'] == 1]
    assert len(stage1) == len(stage2) == 4
    for row in stage1:  # FSP alone; the teacher runs once per step; the head is frozen
        assert set(row['losses']) == {'loss', *FSP_LOSSES}
        assert row['teacher_calls'] == 1
        assert torch.equal(row['watched']['head.fc.weight'], head_before)
        assert row['lr'] == pytest.approx(0.05)  # constant in stage 1
    stems = [row['watched']['backbone.conv1.weight'] for row in stage1]
    assert not torch.equal(stems[-1], stems[0])  # the backbone learns
    for row in stage2:  # the task loss alone; the teacher no longer runs
        assert set(row['losses']) == {'loss', 'student.loss'}
        assert row['teacher_calls'] == 0
    assert not torch.equal(stage2[-1]['watched']['head.fc.weight'], head_before)
    # the optimizer state was cleared at the switch: the connectors, idle in stage 2, have none
    runner = record.runner
    state = runner.optim_wrapper.optimizer.state
    assert all(p not in state for p in runner.model.distiller.connectors.parameters())
    assert any(p in state for p in runner.model.student.parameters())
    assert_trained(record, FSP_LOSSES)


def test_one_stage_digits_config_trains_with_the_task_and_fsp_losses(tmp_path):
    cfg = Config.fromfile(config_path('digits/fsp_one_stage_resnet18_w32_w4.py'))
    for pair in cfg.model.distiller.tap_pairs:  # FSP dominates: its decrease shows in 6 steps
        pair.loss.loss_weight = 10.0
    options = {'model.teacher_ckpt': digits_teacher_ckpt(tmp_path),
               'train_dataloader.dataset.shots_per_class': 1, 'train_dataloader.batch_size': 5,
               'train_cfg.max_epochs': 3, 'param_scheduler.T_max': 3,
               'default_hooks.checkpoint.interval': 3, **NO_VALIDATION}
    record = train_recorded(cfg, str(tmp_path / 'work'), options)
    assert all(set(row['losses']) == {'loss', 'student.loss', *FSP_LOSSES}
               for row in record.rows)
    assert_trained(record, FSP_LOSSES)


def thin_pair(cfg, tmp_path, thin, dry_run_shape):
    """Shrink the stock student and teacher of ``cfg`` with ``thin`` overrides; give the teacher
    random weights saved to ``tmp_path``."""
    cfg.model.architecture.update(thin)
    cfg.model.teacher = dict(cfg.model.teacher, pretrained=False, **thin)
    cfg.model.teacher_ckpt = save_checkpoint_of(cfg.model.teacher.to_dict(),
                                                str(tmp_path / 'teacher.pth'))
    cfg.model.dry_run_shape = dry_run_shape
    return cfg


def test_mmpretrain_pair_two_stage_config_runs(tmp_path):
    cfg = thin_pair(
        Config.fromfile(config_path('fsp/fsp_two_stage_resnet34_resnet18_8xb32_in1k.py')),
        tmp_path, dict(backbone=dict(base_channels=8, stem_channels=8), head=dict(in_channels=64)),
        (3, 32, 32))
    options = {
        'train_dataloader': dict(
            _delete_=True, batch_size=5, num_workers=0, sampler=dict(type='DefaultSampler'),
            dataset=dict(type='mmkd.DigitsDataset', split='train', image_size=32,
                         shots_per_class=1, pipeline=[dict(type='mmpretrain.PackInputs')])),
        'val_cfg': None, 'val_dataloader': None, 'val_evaluator': None,
        'custom_hooks': [dict(type='mmkd.DistillSwitchHook', stop_at=2,
                              reset_optimizer_state=True)],
        'param_scheduler': dict(begin=2, end=3),
        'train_cfg': dict(_delete_=True, by_epoch=True, max_epochs=3),
        'default_hooks.checkpoint.interval': 3,
    }
    record = train_recorded(cfg, str(tmp_path / 'work'), options)
    assert [set(row['losses']) for row in record.rows] == (
        [{'loss', *FSP_LOSSES}] * 4 + [{'loss', 'student.loss'}] * 2)
    assert_trained(record, FSP_LOSSES)


def test_mmdet_backbone_pair_config_runs(tmp_path):
    cfg = thin_pair(
        Config.fromfile(config_path('fsp/fsp_retinanet_r101_r50_fpn_1x_coco.py')), tmp_path,
        dict(backbone=dict(base_channels=8, init_cfg=None),
             neck=dict(in_channels=[32, 64, 128, 256], out_channels=16),
             bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=1)),
        (3, 64, 64))
    info = make_coco_detection(tmp_path / 'coco', num_images=2)
    record = train_recorded(cfg, str(tmp_path / 'work'), det_data_options(info, max_iters=3))
    assert {'student.loss_cls', 'student.loss_bbox', *FSP_LOSSES} <= set(record.rows[-1]['losses'])
    # a few detection iterations barely change the backbone: not asserted that FSP goes down
    assert_trained(record, FSP_LOSSES, loss_goes_down=False)


def test_fsp_matrix_is_float32_under_autocast():
    first, second = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        matrix = fsp_matrix(first, second)
    assert matrix.dtype == torch.float32
    torch.testing.assert_close(matrix, fsp_matrix(first, second))
