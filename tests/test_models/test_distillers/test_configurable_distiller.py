"""ConfigurableDistiller on a real tiny mmpretrain ResNet: the inputs of its teacher connectors,
and the dry run's order (teacher connectors, their set-up from the teacher, student
connectors and shape checks)."""
import pytest
import torch
import torch.nn.functional as F

from helpers import save_checkpoint_of
from mmkd.models.connectors import BaseConnector
from mmkd.registry import MODELS, build_component
from mmkd.utils.errors import (ConfigKeyError, ConfigRuntimeError, ConfigTypeError,
                               NameNotFoundError,
                               ShapeMismatchError)
from ofd_helpers import TEACHER, batch, build_ofd, manual_pre_relu_features, ofd_taps


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    return save_checkpoint_of(TEACHER, str(tmp_path_factory.mktemp('distiller') / 'teacher.pth'))


def pooled_pair():
    """Layer 3 (2x2 at 32 px) pooled to 1x1 on both sides, the teacher's through a chain of two
    connectors (pool, then a margin ReLU whose channels the dry run fills in)."""
    return dict(
        connectors=dict(
            student_pool=dict(type='ResizeConnector', size=(1, 1)),
            teacher_pool=dict(type='ResizeConnector', size=(1, 1)),
            pooled_margin=dict(type='OFDTeacherConnector')),
        distill_losses=dict(loss_pooled=dict(type='FitNetsLoss')),
        loss_forward_mappings=dict(loss_pooled=dict(
            student=dict(recorder='stage3', from_student=True,
                         connector=['stage3_student', 'student_pool']),
            teacher=dict(recorder='stage3', from_student=False,
                         connector=['teacher_pool', 'pooled_margin']))))


def test_teacher_connector_inputs_are_what_the_teacher_connectors_see(teacher_ckpt):
    algorithm = build_ofd(teacher_ckpt, teacher_norm_mode='eval', distiller=dict(
        type='ConfigurableDistiller', tap_pairs=ofd_taps(stages=(3, 4)), **pooled_pair()))
    distiller = algorithm.distiller
    assert distiller.connectors['pooled_margin'].in_channels == 32
    seen = {}
    for name in ('teacher_pool', 'pooled_margin', 'stage3_teacher', 'stage4_teacher'):
        distiller.connectors[name].register_forward_pre_hook(
            lambda module, args, name=name: seen.__setitem__(name, args[0].detach().clone()))
    inputs, samples = batch()
    algorithm.train().loss(inputs, samples)  # records, fetches, and may release the records

    with torch.no_grad(), distiller.teacher_recorders.recording():
        algorithm.teacher(inputs, samples, mode='tensor')
    given = distiller.teacher_connector_inputs()
    assert list(given) == ['teacher_pool', 'pooled_margin', 'stage3_teacher', 'stage4_teacher']
    with torch.no_grad():
        _, _, stage3, stage4 = manual_pre_relu_features(algorithm.teacher, inputs)
    by_hand = dict(teacher_pool=stage3, pooled_margin=F.adaptive_avg_pool2d(stage3, 1),
                   stage3_teacher=stage3, stage4_teacher=stage4)
    for name, value in given.items():
        torch.testing.assert_close(value, seen[name])
        torch.testing.assert_close(value, by_hand[name])
    assert list(distiller.teacher_connector_inputs(['stage4_teacher'])) == ['stage4_teacher']
    assert list(distiller.teacher_connectors()) == list(given)


class Order(BaseConnector):
    """A connector that logs when the dry run builds it, sets it up and runs its shape check."""

    log = []

    def __init__(self, tag: str, in_channels=None, init_cfg=None) -> None:
        super().__init__(init_cfg)
        self.tag = tag
        self.log.append(f'build {tag}')

    def init_from_teacher(self, context) -> None:
        self.log.append(f'init {self.tag} {tuple(context.recorder.get_record_data(0).shape)}')

    def forward_for_shape_check(self, feature):
        self.log.append(f'check {self.tag}')
        return feature

    def forward(self, feature):
        return feature


def test_dry_run_builds_teacher_connectors_sets_them_up_then_builds_student_ones(teacher_ckpt):
    MODELS.register_module(name='DryRunOrderConnector', module=Order, force=True)
    Order.log.clear()
    build_ofd(teacher_ckpt, distiller=dict(type='ConfigurableDistiller', tap_pairs=[dict(
        name='stage4', student='backbone.layer4', recorder='PreReLU',
        student_connector=dict(type='DryRunOrderConnector', tag='student'),
        teacher_connector=dict(type='DryRunOrderConnector', tag='teacher'),
        loss=dict(type='FitNetsLoss'))]), architecture=TEACHER)
    # both built in the dry run (in_channels left out): the teacher's, then its set-up from
    # the teacher, then the student's in the shape check of the loss
    assert Order.log == ['build teacher', 'check teacher', 'init teacher (2, 64, 1, 1)',
                         'check teacher', 'build student', 'check student']


def test_shape_mismatch_is_a_shape_error_naming_each_connector_and_why(teacher_ckpt):
    pair = dict(name='stage3', student='backbone.layer3', teacher='backbone.layer4',
                recorder='PreReLU', loss=dict(type='FitNetsLoss'))
    with pytest.raises(ShapeMismatchError, match=r"\(2, 16, 2, 2\).*\(2, 64, 1, 1\).*"
                       r"ConvBNConnector'\) \(channels differ\); dict\(type='ResizeConnector'\) "
                       r"\(spatial sizes differ\)"):
        build_ofd(teacher_ckpt, distiller=dict(type='ConfigurableDistiller', tap_pairs=[pair]))


@pytest.mark.parametrize('student,error,message', [
    (dict(recorder='logits'), ConfigKeyError, r"\['student'\] needs 'from_student'\.$"),
    (dict(recorder='logits', from_student=True, conector='x'), NameNotFoundError,
     r"\['student'\] has unknown keys \['conector'\]; valid keys are \('recorder', "),
    ('logits', ConfigTypeError, r"\['student'\] must be a dict with keys"),
], ids=['missing key', 'unknown key', 'not a dict'])
def test_a_mapping_spec_with_wrong_keys_is_a_config_error(student, error, message):
    logits = dict(logits=dict(type='ModuleOutputs', source='head.fc'))
    with pytest.raises(error, match=r"loss_forward_mappings\['loss_kd'\]" + message):
        build_component(MODELS, dict(
            type='ConfigurableDistiller', student_recorders=logits, teacher_recorders=logits,
            distill_losses=dict(loss_kd=dict(type='KDLoss')),
            loss_forward_mappings=dict(loss_kd=dict(
                student=student, teacher=dict(recorder='logits', from_student=False)))))


def test_unbuilt_connectors_without_a_dry_run_are_named_by_every_reader(teacher_ckpt):
    ofd = build_ofd(teacher_ckpt, dry_run_shape=None)
    for read in (ofd.distiller.teacher_connectors, ofd.distiller.teacher_connector_inputs,
                 ofd.empirical_margin_connectors):
        with pytest.raises(ConfigRuntimeError, match='never built.*dry_run_shape'):
            read()
