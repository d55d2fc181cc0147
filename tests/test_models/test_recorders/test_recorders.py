"""Recorders on real mmpretrain backbones, checked against features computed by hand."""
import copy

import pytest
import torch
import torch.nn as nn
from mmpretrain.models.backbones import MobileNetV2, ResNet, ResNetV1d

from mmkd.models.recorders import (FunctionOutputsRecorder, MethodOutputsRecorder,
                                   ModuleInputsRecorder, ModuleOutputsRecorder, PreReLURecorder,
                                   RecordedTensorChanged, RecorderManager)


def capture_input(module: nn.Module, run):
    """The input of ``module`` during ``run()``, captured with a plain torch pre-hook."""
    seen = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    run()
    handle.remove()
    return seen[0]


def basic_block_pre_relu(block, x):
    out = block.norm2(block.conv2(torch.relu(block.norm1(block.conv1(x)))))
    identity = block.downsample(x) if block.downsample is not None else x
    return out + identity


def bottleneck_pre_relu(block, x):
    out = torch.relu(block.norm1(block.conv1(x)))
    out = torch.relu(block.norm2(block.conv2(out)))
    out = block.norm3(block.conv3(out))
    identity = block.downsample(x) if block.downsample is not None else x
    return out + identity


def record_once(model, recorder, x):
    manager = RecorderManager(dict(tap=recorder))
    manager['tap'].expected_calls = 1
    manager.prepare(model, 'student')
    with manager.recording():
        model(x)
    return manager


def set_mode(model, training):
    model.train(training)
    return model


RESNETS = {
    'basic': (lambda cp: ResNet(depth=18, base_channels=4, stem_channels=4, with_cp=cp),
              basic_block_pre_relu),
    'bottleneck': (lambda cp: ResNet(depth=50, base_channels=4, stem_channels=4, with_cp=cp),
                   bottleneck_pre_relu),
    'v1d': (lambda cp: ResNetV1d(depth=50, base_channels=4, stem_channels=8, with_cp=cp),
            bottleneck_pre_relu),
}


@pytest.mark.parametrize('kind', list(RESNETS))
@pytest.mark.parametrize('with_cp', [False, True])
@pytest.mark.parametrize('training', [True, False])
def test_pre_relu_stage_output_equals_hand_computation(kind, with_cp, training):
    build, pre_relu = RESNETS[kind]
    torch.manual_seed(0)
    model = set_mode(build(with_cp), training)
    reference = set_mode(copy.deepcopy(model), training)
    x = torch.randn(2, 3, 32, 32)
    manager = record_once(model, PreReLURecorder('layer2'), x)
    recorded = manager.get_record_data('tap')

    last_block = reference.layer2[-1]
    block_input = capture_input(last_block, lambda: reference(x))
    with torch.no_grad():
        expected = pre_relu(last_block, block_input)
    torch.testing.assert_close(recorded, expected)
    assert (recorded < 0).any(), 'a pre-ReLU feature keeps negative values'

    # the gradient reaches the student through the recorded tensor (with_cp included)
    recorded.sum().backward()
    assert model.layer2[-1].conv1.weight.grad is not None
    assert manager['tap'].num_records == 1, 'recomputation in backward must not record'


def test_pre_relu_single_block_and_activation_index():
    torch.manual_seed(0)
    model = ResNet(depth=18, base_channels=4, stem_channels=4)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    block = model.layer3[0]
    block_input = capture_input(block, lambda: model(x))
    # activation_index=0: the first ReLU call inside the block, i.e. relu(norm1(conv1(x)))
    manager = record_once(model, PreReLURecorder('layer3.0', activation_index=0), x)
    with torch.no_grad():
        expected = block.norm1(block.conv1(block_input))
    torch.testing.assert_close(manager.get_record_data('tap'), expected)
    # the block's output itself is still rectified by the (restored) inplace ReLU
    assert block.relu.inplace


def test_pre_relu_first_after_on_mobilenet_v2():
    torch.manual_seed(0)
    model = MobileNetV2(widen_factor=0.25)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    manager = record_once(model, PreReLURecorder('layer2', position='first_after'), x)
    expand = model.layer3[0].conv[0]  # ConvModule(conv, bn, ReLU6) that runs next
    stage_output = capture_input(model.layer3, lambda: model(x))
    with torch.no_grad():
        expected = expand.bn(expand.conv(stage_output))
    torch.testing.assert_close(manager.get_record_data('tap'), expected)


class PreActBlock(nn.Module):
    """A WRN-style pre-activation block: BN-ReLU-conv twice, no activation at the end."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.shortcut = None if in_channels == out_channels and stride == 1 else nn.Conv2d(
            in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x):
        activated = self.relu1(self.bn1(x))
        y = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        return y + (x if self.shortcut is None else self.shortcut(activated))


class TinyWRN(nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.block1 = PreActBlock(8, 8, 1)
        self.block2 = PreActBlock(8, 16, 2)
        self.bn = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.block2(self.block1(self.conv(x))))).mean((2, 3))


@pytest.mark.parametrize('training', [True, False])
def test_pre_relu_first_after_on_preactivation_blocks(training):
    torch.manual_seed(0)
    model = TinyWRN().train(training)
    reference = copy.deepcopy(model)
    x = torch.randn(4, 3, 16, 16)
    manager = RecorderManager(dict(
        b1=PreReLURecorder('block1', position='first_after'),
        b2=PreReLURecorder('block2', position='first_after')))
    manager.prepare(model, 'student')
    with manager.recording():
        model(x)
    out1 = capture_input(reference.block2, lambda: reference(x))
    out2 = capture_input(reference.bn, lambda: reference(x))
    with torch.no_grad():
        torch.testing.assert_close(manager.get_record_data('b1'), reference.block2.bn1(out1))
        torch.testing.assert_close(manager.get_record_data('b2'), reference.bn(out2))


def test_hooks_are_removed():
    model = ResNet(depth=18, base_channels=4, stem_channels=4)
    manager = RecorderManager(dict(a=PreReLURecorder('layer1'),
                                   b=ModuleOutputsRecorder('layer2'),
                                   c=MethodOutputsRecorder('layer3.0.forward')))
    manager.prepare(model, 'student')
    assert model.layer1._forward_pre_hooks and model.layer2._forward_hooks
    assert 'forward' in vars(model.layer3[0])
    manager.remove()
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    assert 'forward' not in vars(model.layer3[0])


def test_module_output_changed_in_place_is_detected_and_cloning_fixes_it():
    torch.manual_seed(0)
    model = ResNet(depth=18, base_channels=4, stem_channels=4)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    # norm2's output is the tensor that `out += identity` and the inplace ReLU modify later
    manager = record_once(model, ModuleOutputsRecorder('layer1.0.bn2', clone=False), x)
    with pytest.raises(RecordedTensorChanged, match='clone=True'):
        manager.get_record_data('tap')
    # Mapping the records (the teacher options' cast after the forward) checks them first
    # instead of taking the changed values as the recorded ones.
    with pytest.raises(RecordedTensorChanged, match='clone=True'):
        manager['tap'].map_records(lambda tensor: tensor.double())
    manager = record_once(model, ModuleOutputsRecorder('layer1.0.bn2', clone=True), x)
    block = model.layer1[0]
    block_input = capture_input(block, lambda: model(x))
    with torch.no_grad():
        expected = block.norm2(block.conv2(torch.relu(block.norm1(block.conv1(block_input)))))
    torch.testing.assert_close(manager.get_record_data('tap'), expected)


def test_module_called_several_times_needs_data_idx():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    recorder = ModuleOutputsRecorder('0')
    manager = RecorderManager(dict(tap=recorder))
    manager.prepare(model, 'student')
    x = torch.randn(2, 3)
    with manager.recording():
        out = model(x)
    with pytest.raises(RuntimeError, match='ran 2 times'):
        manager.get_record_data('tap')
    torch.testing.assert_close(manager.get_record_data('tap', 1), out)
    torch.testing.assert_close(manager.get_record_data('tap', 0), shared(x))


def test_inputs_outputs_and_method_recorders_on_a_head():
    from mmengine.registry import DefaultScope
    from mmpretrain.models.heads import LinearClsHead
    model = nn.Module()
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # the head builds its loss
        model.head = LinearClsHead(num_classes=3, in_channels=4)
    manager = RecorderManager(dict(
        inputs=ModuleInputsRecorder('head.fc'),
        pre_logits=MethodOutputsRecorder('head.pre_logits'),
        logits=ModuleOutputsRecorder('head.fc')))
    manager.prepare(model, 'student')
    feats = (torch.randn(2, 4), )
    with manager.recording():
        logits = model.head(feats)
    torch.testing.assert_close(manager.get_record_data('inputs'), feats[-1])
    torch.testing.assert_close(manager.get_record_data('pre_logits'), feats[-1])
    torch.testing.assert_close(manager.get_record_data('logits'), logits)
    # outside the recording window nothing is recorded
    model.head(feats)
    assert manager['inputs'].num_records == 1


def test_function_recorder_patches_and_restores():
    import torch.nn.functional as F
    original = F.softmax
    model = nn.Sequential(nn.Linear(3, 3))
    recorder = FunctionOutputsRecorder('torch.nn.functional.softmax')
    manager = RecorderManager(dict(tap=recorder))
    manager.prepare(model, 'student')
    x = torch.randn(2, 3)
    with manager.recording():
        expected = F.softmax(model(x), dim=1)
    torch.testing.assert_close(manager.get_record_data('tap'), expected)
    manager.remove()
    assert F.softmax is original


def test_unknown_layer_lists_close_matches():
    model = ResNet(depth=18, base_channels=4, stem_channels=4)
    with pytest.raises(KeyError, match="layer3"):
        PreReLURecorder('layer33').prepare(model, 'student')
    with pytest.raises(KeyError, match='Did you mean'):
        ModuleOutputsRecorder('layr2').prepare(model, 'teacher')
    with pytest.raises(AttributeError, match='no method'):
        MethodOutputsRecorder('layer1.fowrard').prepare(model, 'student')


def test_pre_relu_without_activation_inside_suggests_first_after():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.ReLU())
    with pytest.raises(ValueError, match="first_after"):
        PreReLURecorder('1').prepare(model, 'student')
