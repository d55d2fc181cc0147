"""tools/list_taps.py on stock mmpretrain, mmdet and mmseg configs and on a distillation
config: the stages and blocks with the shapes mmkd's recorders record, and the connectors."""
import re

import pytest
import torch
from mmengine.config import Config

from helpers import config_path, run_tool, tiny_classifier
from mmkd.apis.taps import connectors_needed, discover_taps, load_models, pair_stages
from mmkd.models.recorders import RecorderManager
from mmkd.utils.errors import ConfigError

RESNET18 = 'mmpretrain::resnet/resnet18_8xb32_in1k.py'


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
