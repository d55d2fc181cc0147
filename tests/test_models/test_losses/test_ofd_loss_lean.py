"""OFD's lean loss (one autograd function saving one tensor) against the eager formula it
replaced, and the distiller releasing the teacher's recorded features after its losses."""
import pytest
import torch
from mmpretrain.structures import DataSample

from helpers import tiny_classifier
from mmkd.models import OFDLoss, build_model_from_cfg
from mmkd.models.losses.ofd_loss import partial_l2_sum
from mmkd.models.losses.squared_error import SquaredErrorSum
from mmkd.registry import MODELS


def eager_ofd_loss(student, teacher, loss_weight, divisor):
    """The formula OFDLoss computed before: masked square, sum, normalisation."""
    skip = (student <= teacher.detach()) & (teacher.detach() <= 0)
    distance = (teacher.detach() - student).pow(2).masked_fill(skip, 0.0)
    return loss_weight * distance.sum() / (student.shape[0] * divisor)


def sign_cases(dtype=torch.float32):
    """Student/teacher pairs covering the four sign cases of the partial L2 (teacher <= 0 or
    > 0, student below or above it), the ties, and random values, shape (2, 3, 4, 4)."""
    teacher = torch.tensor([-1.0, -1.0, -1.0, 0.0, 0.0, 2.0, 2.0, 2.0])
    student = torch.tensor([-2.0, -0.5, -1.0, -0.5, 0.5, 1.0, 3.0, 2.0])
    generator = torch.Generator().manual_seed(0)
    rest = 96 - teacher.numel()
    teacher = torch.cat([teacher, torch.randn(rest, generator=generator)]).view(2, 3, 4, 4)
    student = torch.cat([student, torch.randn(rest, generator=generator)]).view(2, 3, 4, 4)
    return student.to(dtype), teacher.to(dtype)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16], ids=str)
def test_value_and_gradient_equal_the_eager_formula(dtype):
    student, teacher = sign_cases(dtype)
    loss = OFDLoss(loss_weight=0.5, divisor=10.0)
    lean_student = student.clone().requires_grad_()
    lean = loss(lean_student, teacher)
    lean.backward()
    eager_student = student.float().requires_grad_()  # the eager loss reduced in float32
    eager = eager_ofd_loss(eager_student, teacher.float(), 0.5, 10.0)
    eager.backward()
    assert lean.dtype == torch.float32
    torch.testing.assert_close(lean, eager, rtol=1e-6, atol=0)
    assert lean_student.grad.dtype == dtype
    torch.testing.assert_close(lean_student.grad, eager_student.grad.to(dtype))
    # no gradient where student <= teacher <= 0 (skipped) or student == teacher
    assert lean_student.grad.flatten()[:8].eq(0).tolist() == [
        True, False, True, True, False, False, False, True]


def test_gradcheck_float64():
    student, teacher = sign_cases(torch.float64)
    student = (student + 0.01).requires_grad_()  # away from the ties, where it has a kink
    assert torch.autograd.gradcheck(lambda s: SquaredErrorSum.apply(s, teacher, 0.3, True), (student, ))


def test_teacher_gets_no_gradient_and_is_not_modified():
    student, teacher = sign_cases()
    student.requires_grad_()
    teacher_copy = teacher.clone().requires_grad_()
    partial_l2_sum(student, teacher_copy, 1.0).backward()
    assert teacher_copy.grad is None
    torch.testing.assert_close(teacher_copy.detach(), teacher)


def _saved_tensor_sizes(loss_fn, student, teacher):
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss_fn(student, teacher)
    return sizes


def test_saves_only_the_masked_difference():
    student, teacher = sign_cases()
    student.requires_grad_()
    feature_bytes = student.numel() * student.element_size()
    sizes = _saved_tensor_sizes(OFDLoss(divisor=10.0), student, teacher)
    assert sizes == [feature_bytes]
    eager = _saved_tensor_sizes(lambda s, t: eager_ofd_loss(s, t, 1.0, 10.0), student, teacher)
    assert sum(eager) > feature_bytes  # what it replaced: the difference and the mask


def test_shapes_must_match():
    with pytest.raises(ValueError, match='student shape'):
        partial_l2_sum(torch.zeros(2, 3), torch.zeros(2, 4))


# -- the distiller releases the recorded features after its losses ---------------------------
def _tiny_ofd(tmp_path):
    teacher_cfg = tiny_classifier(width=8)
    torch.manual_seed(0)
    teacher = build_model_from_cfg(dict(teacher_cfg), 'teacher')
    ckpt = str(tmp_path / 'teacher.pth')
    torch.save({'state_dict': teacher.state_dict()}, ckpt)
    taps = [dict(name=f'stage{i}', student=f'backbone.layer{i}', recorder='PreReLU',
                 student_connector=dict(type='ConvBNConnector'),
                 teacher_connector=dict(type='OFDTeacherConnector'),
                 loss=dict(type='OFDLoss')) for i in (1, 2)]
    return MODELS.build(dict(
        type='mmkd.OverhaulFeatureDistillation', architecture=tiny_classifier(width=4),
        teacher=teacher_cfg, teacher_ckpt=ckpt, dry_run_shape=(3, 32, 32),
        distiller=dict(type='ConfigurableDistiller', tap_pairs=taps))).train()


def test_records_are_released_after_the_losses(tmp_path):
    algorithm = _tiny_ofd(tmp_path)
    inputs = torch.randn(2, 3, 32, 32)
    samples = [DataSample().set_gt_label(i) for i in range(2)]
    losses = algorithm.loss(inputs, samples)
    assert set(losses) >= {'loss_stage1', 'loss_stage2'}
    teacher_recorders = algorithm.distiller.teacher_recorders
    assert all(r.num_records == 0 for r in teacher_recorders.recorders.values())
    student_recorders = algorithm.distiller.student_recorders.recorders.values()
    assert all(r.num_records == 0 for r in student_recorders)
    with pytest.raises(RuntimeError, match='released after the distiller'):
        teacher_recorders.get_record_data('stage1')
    sum(losses.values()).backward()  # the backward needs none of them
    # the next step records again
    algorithm.loss(inputs, samples)
    assert all(r.num_records == 0 for r in teacher_recorders.recorders.values())
