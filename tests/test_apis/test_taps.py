"""tools/list_taps.py on stock mmpretrain, mmdet and mmseg configs and on a distillation
config: the stages and blocks with the shapes mmkd's recorders record, the connectors, and the
neck and head outputs (FPN levels, per-level logits) that dense methods tap."""
import re

import pytest
import torch
from mmengine.config import Config

from helpers import config_path, run_tool, tiny_classifier
from mmkd.apis.taps import (connectors_needed, discover_taps, load_models, output_taps,
                            pair_stages)
from mmkd.models.data_samples import dummy_data_samples
from mmkd.models.recorders import RecorderManager
from mmkd.utils.errors import ConfigError

RESNET18 = 'mmpretrain::resnet/resnet18_8xb32_in1k.py'
FASTER_RCNN_R18 = 'mmdet::faster_rcnn/faster-rcnn_r18_fpn_8xb8-amp-lsj-200e_coco.py'


def list_taps(argv, capsys):
    run_tool('tools/list_taps.py', argv)
    return capsys.readouterr().out


def rows(out):
    """name -> (kind, shape, rest of the line) of the printed tap tables."""
    found = {}
    for line in out.splitlines():
        match = re.match(r'\s+(\S+)\s+(stage|block)\s+(\([\d, ]+\))\s*(.*)$', line)
        if match:
            found[match[1]] = (match[2], eval_shape(match[3]), match[4])
    return found


def output_rows(out):
    """output position -> (module, data_idx, shape) of the printed neck and head outputs."""
    found = {}
    for line in out.splitlines():
        match = re.match(r'\s+(\w+(?:\[\d+\])*)\s+(\S+)\s+(-|\d+)\s+(\([\d, ]+\))', line)
        if match:
            found[match[1]] = (match[2], None if match[3] == '-' else int(match[3]),
                               eval_shape(match[4]))
    return found


def eval_shape(text):
    return tuple(int(v) for v in text.strip('()').split(',') if v.strip())


def test_resnet18_lists_each_stage_and_block_with_its_pre_relu_shape(capsys):
    out = list_taps([RESNET18, '--input-shape', 3, 64, 64], capsys)
    taps = rows(out)
    # ResNet-18 at 64 px: stride 4 after the stem, stages of 64..512 channels halving the size
    for stage in range(1, 5):
        shape = (64 * 2 ** (stage - 1), 16 // 2 ** (stage - 1), 16 // 2 ** (stage - 1))
        assert taps[f'backbone.layer{stage}'] == ('stage', shape, 'PreReLU')
        for block in range(2):
            assert taps[f'backbone.layer{stage}.{block}'][:2] == ('block', shape)
    assert len(taps) == 12  # nothing else in ResNet-18 ends in a ReLU
    assert 'stage pairs' not in out  # a plain model config has no pairs


def test_listed_recorder_config_records_the_block_output_before_its_relu():
    model = load_models(RESNET18)['model'].eval()
    tap = {tap.name: tap for tap in discover_taps(model, (3, 32, 32))}['backbone.layer2.0']
    assert tap.recorder == dict(type='PreReLU', source='backbone.layer2.0')
    manager = RecorderManager(dict(tap=tap.recorder))
    manager.prepare(model, 'student')
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), manager.recording():
        model(x, mode='tensor')
    recorded = manager.get_record_data('tap')
    manager.remove()
    with torch.no_grad():  # by hand: BasicBlock output after the residual add, before the ReLU
        backbone = model.backbone
        out1 = backbone.layer1(backbone.maxpool(backbone.relu(backbone.norm1(backbone.conv1(x)))))
        block = backbone.layer2[0]
        pre = block.norm2(block.conv2(torch.relu(block.norm1(block.conv1(out1)))))
        pre = pre + block.downsample(out1)
    assert tap.shape[1:] == tuple(pre.shape[1:]) and tap.position == 'last_inside'
    torch.testing.assert_close(recorded, pre)
    assert pre.min() < 0  # the negative responses the ReLU would remove are kept


def test_distillation_config_pairs_stages_and_names_the_connector(capsys):
    out = list_taps([config_path('digits/fitnets_resnet18_w32_w4.py'), '--modules',
                     'backbone.layer4.1.conv*'], capsys)
    assert 'student:' in out and 'teacher:' in out
    assert re.search(r'backbone\.layer2\s+backbone\.layer2\s+\(8, 4, 4\)\s+\(64, 4, 4\)\s+'
                     r'ConvBNConnector', out)
    assert "dict(name='layer3', student='backbone.layer3', recorder='PreReLU', " \
           "student_connector=dict(type='ConvBNConnector')" in out
    assert re.search(r'backbone\.layer4\.1\.conv2\s+\(1, 256, 1, 1\)', out)  # --modules
    student_only = list_taps([config_path('digits/kd_resnet18_w32_w4.py'), '--student'], capsys)
    assert 'teacher:' not in student_only and 'student:' in student_only
    with pytest.raises(ConfigError, match='not a distillation config'):
        list_taps([RESNET18, '--teacher'], capsys)


def test_mobilenet_v2_blocks_end_linear_and_pair_with_resnet_by_resolution(tmp_path):
    config = tmp_path / 'mbv2_from_r18.py'
    Config(dict(model=dict(
        type='SingleTeacherDistill', dry_run_shape=(3, 32, 32),
        architecture=dict(cfg_path='mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py',
                          backbone=dict(widen_factor=0.25), head=dict(in_channels=1280)),
        teacher=tiny_classifier(width=8)))).dump(str(config))
    models = load_models(str(config))
    student = {tap.name: tap for tap in discover_taps(models['student'], (3, 32, 32))}
    teacher = discover_taps(models['teacher'], (3, 32, 32))
    assert student['backbone.layer2'].position == 'first_after'  # linear bottlenecks
    assert student['backbone.layer2'].output_shape == (1, 8, 8, 8)
    assert student['backbone.conv1'].position == 'last_inside'
    pairs = {p.teacher.name: p for p in pair_stages(list(student.values()), teacher)}
    # ResNet layer1 is at 1/4 resolution like MobileNetV2's layer2, the deepest stage at 8x8
    assert pairs['backbone.layer1'].student.name == 'backbone.layer2'
    assert all(p.student.shape[2:] == p.teacher.shape[2:] for p in pairs.values())
    assert connectors_needed((2, 8, 8, 8), (2, 32, 4, 4)) == ['ConvBNConnector',
                                                              'ResizeConnector']
    assert connectors_needed((2, 17, 64), (2, 64, 4, 4)) == ['TokensToMapConnector']
    assert connectors_needed((2, 8, 4, 4), (2, 8, 4, 4)) == []


@pytest.mark.parametrize('config, expected', [
    ('mmdet::retinanet/retinanet_r18_fpn_1x_coco.py',
     {'backbone.layer4': (512, 2, 2), 'bbox_head.cls_convs.0': (256, 8, 8)}),
    ('mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
     {'backbone.stem': (64, 32, 32), 'backbone.layer4': (512, 8, 8),
      'decode_head.bottleneck': (128, 8, 8)}),
])
def test_stock_detector_and_segmentor(config, expected, capsys):
    taps = rows(list_taps([config, '--input-shape', 3, 64, 64], capsys))
    for name, shape in expected.items():
        assert taps[name][1] == shape
    if 'retinanet' in config:  # the head's convs run once per pyramid level
        assert 'runs 5 times' in taps['bbox_head.cls_convs.0'][2]


def test_segmentor_lists_the_decode_head_logits(capsys):
    out = list_taps(['mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
                     '--input-shape', 3, 64, 64], capsys)
    assert output_rows(out)['decode_head'] == ('decode_head.conv_seg', None, (1, 19, 8, 8))
    assert re.search(r'auxiliary_head\s+-\s+-\s+-\s+does not run in tensor mode', out)


def recorded_through(model, taps, inputs):
    """What ModuleOutputs records for each listed (module, data_idx), in one forward pass."""
    manager = RecorderManager({f'{tap.source}#{tap.data_idx}': dict(
        type='ModuleOutputs', source=tap.source) for tap in taps})
    manager.prepare(model, 'model')
    with torch.no_grad(), manager.recording():
        output = model(inputs, dummy_data_samples(model, inputs), mode='tensor')
    recorded = [manager.get_record_data(f'{tap.source}#{tap.data_idx}', tap.data_idx)
                for tap in taps]
    manager.remove()
    return output, recorded


def test_gfl_head_logits_of_every_level_are_one_shared_conv_called_per_level():
    """configs/cwd/cwd_gfl_r101_r50_fpn_1x_coco.py taps `bbox_head.gfl_cls` at data_idx 0..4:
    the listed taps record exactly the head's outputs of the five levels."""
    model = load_models('mmdet::gfl/gfl_r50_fpn_1x_coco.py')['model'].eval()
    parts = output_taps(model, (3, 64, 64))
    assert [(t.source, t.data_idx) for t in parts['neck'].tensors] == [
        (f'neck.fpn_convs.{level}', None) for level in range(5)]
    cls = [t for t in parts['bbox_head'].tensors if t.index.startswith('[0]')]
    assert [(t.source, t.data_idx, t.shape) for t in cls] == [
        ('bbox_head.gfl_cls', level, (1, 80, max(8 // 2 ** level, 1), max(8 // 2 ** level, 1)))
        for level in range(5)]
    assert parts['bbox_head'].tap == dict(student='bbox_head.forward', recorder='MethodOutputs')
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    taps = parts['neck'].tensors + parts['bbox_head'].tensors
    (cls_scores, bbox_preds), recorded = recorded_through(model, taps, x)
    with torch.no_grad():
        levels = model.extract_feat(x)
    assert len(recorded) == len([*levels, *cls_scores, *bbox_preds]) == 15
    for got, expected in zip(recorded, [*levels, *cls_scores, *bbox_preds]):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_faster_rcnn_runs_its_rpn_and_roi_head_on_image_metainfo(capsys):
    """The two-stage detector's tensor mode turns the RPN outputs into proposals, which needs
    each image's size: the dummy batch gets the data samples of a real run."""
    out = list_taps([FASTER_RCNN_R18, '--input-shape', 3, 64, 64], capsys)
    assert rows(out)['backbone.layer4'] == ('stage', (512, 2, 2), 'PreReLU')
    outputs = output_rows(out)
    for level in range(4):
        size = 16 // 2 ** level
        assert outputs[f'neck[{level}]'] == (f'neck.fpn_convs.{level}', None, (1, 256, size, size))
        assert outputs[f'rpn_head[0][{level}]'] == ('rpn_head.rpn_cls', level, (1, 3, size, size))
    assert outputs['neck[4]'] == ('-', None, (1, 256, 1, 1))  # P6: a max-pool, no module
    assert re.search(r"neck\[4\].*computed by a function, not a module: tap 'neck'", out)
    module, data_idx, (regions, classes) = outputs['roi_head[0]']
    assert (module, data_idx, classes) == ('roi_head.bbox_head.fc_cls', None, 81)
    assert f'{regions} regions (proposals of this input), not images' in out

    model = load_models(FASTER_RCNN_R18)['model'].eval()
    parts = output_taps(model, (3, 64, 64))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    taps = [t for part in ('rpn_head', 'roi_head') for t in parts[part].tensors]
    (roi_outs,), recorded = recorded_through(model, taps, x)
    with torch.no_grad():
        rpn_outs = model.rpn_head(model.extract_feat(x))
    assert len(recorded) == len([*rpn_outs[0], *rpn_outs[1], *roi_outs]) == 12
    for got, expected in zip(recorded, [*rpn_outs[0], *rpn_outs[1], *roi_outs]):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert parts['roi_head'].tensors[0].shape == tuple(roi_outs[0].shape)
