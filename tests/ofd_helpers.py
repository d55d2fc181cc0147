"""OFD algorithms on tiny mmpretrain ResNets, for the OFD connector tests and the OFD method
runs: the official margin formula written out, tap pairs, and a teacher checkpoint whose BN
layers look trained."""
import copy
import math

import torch
import torch.nn.functional as F
from mmpretrain.structures import DataSample

from helpers import tiny_classifier
from mmkd.models import build_model_from_cfg
from mmkd.registry import MODELS

TEACHER = tiny_classifier(width=8)


def reference_margin(gamma: float, beta: float) -> float:
    """The official formula, written out per channel with math.erf."""
    s, m = abs(gamma), beta
    tail = 0.5 * (1 + math.erf(-m / s / math.sqrt(2)))
    if tail > 0.001:
        return m - s * math.exp(-(m / s)**2 / 2) / math.sqrt(2 * math.pi) / tail
    return -3 * s


def ofd_taps(stages=(1, 2, 3, 4), student_connector=True, divisor=1000.0, **teacher_connector):
    """OFD's tap pairs on the ends of the ResNet stages."""
    return [dict(name=f'stage{i}', student=f'backbone.layer{i}', recorder='PreReLU',
                 student_connector=dict(type='ConvBNConnector') if student_connector else None,
                 teacher_connector=dict(type='OFDTeacherConnector', **teacher_connector),
                 loss=dict(type='OFDLoss', divisor=divisor, loss_weight=1 / 2**(4 - i)))
            for i in stages]


def build_ofd(teacher_ckpt, student=None, teacher=TEACHER, tap_pairs=None, **kwargs):
    """An ``OverhaulFeatureDistillation`` (student ResNet-18 w4 by default) built on 32 px."""
    cfg = dict(type='OverhaulFeatureDistillation',
               architecture=copy.deepcopy(student or tiny_classifier(width=4)),
               teacher=copy.deepcopy(teacher), teacher_ckpt=teacher_ckpt,
               dry_run_shape=(3, 32, 32),
               distiller=dict(type='ConfigurableDistiller', tap_pairs=tap_pairs or ofd_taps()))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def batch(size=4, seed=1):
    """Images (size, 3, 32, 32) and their data samples."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(size, 3, 32, 32, generator=generator)
    return inputs, [DataSample().set_gt_label(i % 10) for i in range(size)]


def save_trained_looking_teacher(cfg, path, seed=0):
    """Save ``cfg``'s model with random BN affine parameters and statistics, as a trained
    teacher has (mmpretrain's init zeroes the last BN of each residual block)."""
    torch.manual_seed(seed)
    model = build_model_from_cfg(copy.deepcopy(cfg), 'teacher')
    model.init_weights()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            channels = module.num_features
            sign = torch.randint(0, 2, (channels, )) * 2 - 1
            module.weight.data = sign * torch.empty(channels).uniform_(0.3, 1.5)
            module.bias.data = torch.randn(channels)
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    torch.save({'state_dict': model.state_dict()}, path)
    return path


def manual_pre_relu_features(classifier, inputs):
    """Each stage's output before its last ReLU, computed by hand from mmpretrain's modules."""
    backbone = classifier.backbone
    x = backbone.maxpool(backbone.relu(backbone.norm1(backbone.conv1(inputs))))
    features = []
    for name in backbone.res_layers:
        stage = getattr(backbone, name)
        for block in list(stage)[:-1]:
            x = block(x)
        last = stage[-1]
        identity = x if last.downsample is None else last.downsample(x)
        out = last.norm2(last.conv2(F.relu(last.norm1(last.conv1(x)))))
        features.append(out + identity)
        x = F.relu(features[-1])
    return features
