"""CWD, PKD and DIST losses against hand computations: values and gradients, temperatures other
than 1, pyramid levels as tuples, mismatched spatial sizes (PKD), a batch of one and constant
inputs (DIST), half precision, and the checks made at build time."""
import itertools
import math

import pytest
import torch

from mmkd.models.losses import CWDLoss, DISTLoss, PKDLoss
from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError, ShapeMismatchError

NAN, INF = float('nan'), float('inf')


def softmax(values, tau=1.0):
    exps = [math.exp(v / tau) for v in values]
    return [e / sum(exps) for e in exps]


def finite_difference_gradient(function, tensor, step=1e-6):
    """Central differences of a scalar ``function`` of a float64 tensor, element by element."""
    gradient = torch.zeros_like(tensor)
    flat, out = tensor.detach().clone().view(-1), gradient.view(-1)
    for index in range(flat.numel()):
        value = flat[index].item()
        flat[index] = value + step
        plus = function(flat.view_as(tensor)).item()
        flat[index] = value - step
        minus = function(flat.view_as(tensor)).item()
        flat[index] = value
        out[index] = (plus - minus) / (2 * step)
    return gradient


def grad_of(loss_fn, student, *others):
    student = student.detach().clone().requires_grad_(True)
    loss = loss_fn(student, *others)
    loss.backward()
    return loss, student.grad


# -- CWD ---------------------------------------------------------------------------------------
def reference_cwd(student, teacher, tau, weight):
    """KL over positions per (sample, channel), summed over positions, / (B * C), * tau^2."""
    batch, channels = len(student), len(student[0])
    total = 0.0
    for b, c in itertools.product(range(batch), range(channels)):
        p_s = softmax([v for row in student[b][c] for v in row], tau)
        p_t = softmax([v for row in teacher[b][c] for v in row], tau)
        total += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    return weight * tau**2 * total / (batch * channels)


def test_cwd_loss_on_one_map_by_hand():
    # one channel, two positions: p_s = (1/2, 1/2); at tau = 2, t / tau = (0, ln 3) so
    # p_t = (1/4, 3/4); KL = 1/4 ln(1/2) + 3/4 ln(3/2), times tau^2 = 4, over B * C = 1
    tau = 2.0
    student = torch.zeros(1, 1, 1, 2, requires_grad=True)
    teacher = torch.tensor([0.0, tau * math.log(3)]).view(1, 1, 1, 2)
    loss = CWDLoss(tau=tau, loss_weight=0.5)(student, teacher)
    expected = 0.5 * 4 * (0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d/ds of w tau^2 KL(p_t || softmax(s / tau)) / (B C) = w tau (p_s - p_t) / (B C)
    torch.testing.assert_close(student.grad.flatten(),
                               torch.tensor([0.5 * tau * 0.25, -0.5 * tau * 0.25]))


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_cwd_loss_sums_positions_averages_maps_and_matches_its_gradient(tau):
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, 2, 3, generator=generator, dtype=torch.float64) * 2
    teacher = torch.randn(2, 3, 2, 3, generator=generator, dtype=torch.float64) * 2
    loss_fn = CWDLoss(tau=tau, loss_weight=5.0)
    loss, grad = grad_of(loss_fn, student, teacher)
    assert loss.item() == pytest.approx(
        reference_cwd(student.tolist(), teacher.tolist(), tau, 5.0), rel=1e-9)
    # the closed form: w tau (p_s - p_t) / (B C), p over the H * W positions of each map
    p_s = torch.softmax(student.flatten(2) / tau, dim=2)
    p_t = torch.softmax(teacher.flatten(2) / tau, dim=2)
    torch.testing.assert_close(grad, (5.0 * tau * (p_s - p_t) / 6).view_as(student))
    assert loss_fn(teacher, teacher).item() == pytest.approx(0.0, abs=1e-12)


def test_cwd_loss_on_pyramid_levels_is_the_sum_of_the_levels():
    generator = torch.Generator().manual_seed(1)
    sizes = [(2, 4, 4, 4), (2, 4, 2, 2), (2, 4, 1, 1)]
    students = tuple(torch.randn(s, generator=generator) for s in sizes)
    teachers = tuple(torch.randn(s, generator=generator) for s in sizes)
    loss = CWDLoss(tau=2.0, loss_weight=3.0)(students, teachers)
    expected = sum(reference_cwd(s.tolist(), t.tolist(), 2.0, 3.0)
                   for s, t in zip(students, teachers))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # a 1x1 map is one position: its distribution is 1 whatever the logits, so it adds 0
    assert CWDLoss()(students[2], teachers[2]).item() == pytest.approx(0.0, abs=1e-7)


def test_cwd_loss_sends_no_gradient_to_the_teacher_and_refuses_other_shapes():
    student = torch.randn(2, 3, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 3, 4, 4, requires_grad=True)
    CWDLoss()(student, teacher).backward()
    assert teacher.grad is None and student.grad is not None
    with pytest.raises(ShapeMismatchError, match=r"level 0 .*\(2, 3, 4, 4\).*\(2, 5, 4, 4\)"
                       ".*ConvBNConnector"):
        CWDLoss()(student, torch.randn(2, 5, 4, 4))
    with pytest.raises(ShapeMismatchError, match='3 pyramid levels and the teacher 2'):
        CWDLoss()((student, ) * 3, (teacher, ) * 2)
    with pytest.raises(ShapeMismatchError, match='one map .* but the teacher a tuple'):
        CWDLoss()(student, (teacher, ))


# -- PKD ---------------------------------------------------------------------------------------
def reference_pkd_level(student, teacher):
    """Per channel: z-scores over all (b, h, w) with the unbiased std (+1e-6), then
    mean((z_s - z_t)^2) / 2 over every element; nested lists (B, C, H, W)."""
    batch, channels = len(student), len(student[0])
    total, count = 0.0, 0
    for c in range(channels):
        s = [v for b in range(batch) for row in student[b][c] for v in row]
        t = [v for b in range(batch) for row in teacher[b][c] for v in row]
        n = len(s)

        def z_scores(values):
            mean = sum(values) / n
            std = math.sqrt(sum((v - mean)**2 for v in values) / (n - 1)) if n > 1 else 0.0
            return [(v - mean) / (std + 1e-6) for v in values]

        total += sum((a - b)**2 for a, b in zip(z_scores(s), z_scores(t)))
        count += n
    return total / count / 2


def test_pkd_loss_is_one_minus_the_pearson_correlation_by_hand():
    student = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    # an affine copy of the student (scale and offset) is imitated perfectly
    assert PKDLoss()(student, 10 * student - 3).item() == pytest.approx(0.0, abs=1e-5)
    # the reversed order: r = -1, so ((n - 1) / n)(1 - r) = (3 / 4) * 2 = 1.5
    reversed_map = torch.tensor([4.0, 3.0, 2.0, 1.0]).view(1, 1, 2, 2)
    assert PKDLoss(loss_weight=2.0)(student, reversed_map).item() == pytest.approx(
        2 * 1.5, rel=1e-5)


def test_pkd_loss_normalises_over_batch_and_positions_per_channel_and_its_gradient():
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(2, 3, 2, 2, generator=generator, dtype=torch.float64)
    teacher = torch.randn(2, 3, 2, 2, generator=generator, dtype=torch.float64) * 5 + 2
    loss_fn = PKDLoss(loss_weight=6.0)
    loss, grad = grad_of(loss_fn, student, teacher)
    assert loss.item() == pytest.approx(
        6.0 * reference_pkd_level(student.tolist(), teacher.tolist()), rel=1e-9)
    torch.testing.assert_close(
        grad, finite_difference_gradient(lambda s: loss_fn(s, teacher), student),
        rtol=1e-5, atol=1e-8)
    # per sample instead of over the batch would give another value
    per_sample = sum(reference_pkd_level(student[i:i + 1].tolist(), teacher[i:i + 1].tolist())
                     for i in range(2)) / 2
    assert abs(loss.item() / 6 - per_sample) > 1e-3


def test_pkd_loss_resizes_the_student_or_the_teacher_bilinearly():
    # width 2 -> 4 with align_corners=False samples the student at x = 0, 1/4, 3/4, 1
    student = torch.tensor([[1.0, 5.0], [2.0, 0.0]]).view(1, 2, 1, 2).requires_grad_(True)
    teacher = torch.tensor([[0.0, 3.0, 1.0, 4.0], [2.0, 2.5, -1.0, 0.0]]).view(1, 2, 1, 4)
    up = [[a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b]
          for a, b in ([1.0, 5.0], [2.0, 0.0])]
    loss = PKDLoss()(student, teacher)
    assert loss.item() == pytest.approx(
        reference_pkd_level([[[row] for row in up]], teacher.tolist()), rel=1e-5)
    loss.backward()
    assert student.grad.abs().sum() > 0
    # resize_stu=False: the teacher is averaged pairwise down to the student's width
    down = [[(t[0] + t[1]) / 2, (t[2] + t[3]) / 2] for t in teacher.view(2, 4).tolist()]
    loss = PKDLoss(resize_stu=False)(student, teacher)
    assert loss.item() == pytest.approx(
        reference_pkd_level(student.tolist(), [[[row] for row in down]]), rel=1e-5)
    # pyramid levels: each is resized on its own and the levels are summed
    levels = PKDLoss()((student, student), (teacher, teacher[..., :2]))
    assert levels.item() == pytest.approx(
        reference_pkd_level([[[row] for row in up]], teacher.tolist())
        + reference_pkd_level(student.tolist(), teacher[..., :2].tolist()), rel=1e-5)


def test_pkd_loss_of_a_single_value_per_channel_is_zero_and_finite():
    # n = B * H * W = 1 (batch of one, a 1x1 level): no standard deviation, no correlation
    student = torch.randn(1, 4, 1, 1, requires_grad=True)
    loss = PKDLoss()(student, torch.randn(1, 4, 1, 1))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(student.grad, torch.zeros_like(student))
    # a constant channel is normalised to zeros, no NaN
    constant = torch.ones(2, 1, 2, 2, requires_grad=True)
    loss = PKDLoss()(constant, torch.randn(2, 1, 2, 2))
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(constant.grad).all()


def test_pkd_loss_refuses_other_channels_and_sends_no_gradient_to_the_teacher():
    teacher = torch.randn(2, 4, 3, 3, requires_grad=True)
    student = torch.randn(2, 4, 6, 6, requires_grad=True)
    PKDLoss()(student, teacher).backward()
    assert teacher.grad is None
    with pytest.raises(ShapeMismatchError, match=r'\(batch, channels\) \(2, 8\) .*\(2, 4\)'):
        PKDLoss()(torch.randn(2, 8, 3, 3), teacher)


# -- DIST --------------------------------------------------------------------------------------
def pearson(a, b):
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    da, db = [x - mean_a for x in a], [y - mean_b for y in b]
    norms = math.sqrt(sum(x * x for x in da)) * math.sqrt(sum(y * y for y in db))
    return sum(x * y for x, y in zip(da, db)) / (norms + 1e-8)


def reference_dist(student_rows, teacher_rows, tau, beta, gamma, weight):
    """Rows are samples (pixels for dense logits), columns classes."""
    y_s = [softmax(row, tau) for row in student_rows]
    y_t = [softmax(row, tau) for row in teacher_rows]
    inter = 1 - sum(pearson(s, t) for s, t in zip(y_s, y_t)) / len(y_s)
    columns = range(len(y_s[0]))
    intra = 1 - sum(pearson([r[k] for r in y_s], [r[k] for r in y_t])
                    for k in columns) / len(columns)
    return weight * tau**2 * (beta * inter + gamma * intra)


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_dist_loss_by_hand_and_its_gradient(tau):
    generator = torch.Generator().manual_seed(3)
    student = torch.randn(4, 5, generator=generator, dtype=torch.float64) * 2
    teacher = torch.randn(4, 5, generator=generator, dtype=torch.float64) * 2
    loss_fn = DISTLoss(inter_loss_weight=1.0, intra_loss_weight=0.5, tau=tau, loss_weight=2.0)
    loss, grad = grad_of(loss_fn, student, teacher)
    assert loss.item() == pytest.approx(
        reference_dist(student.tolist(), teacher.tolist(), tau, 1.0, 0.5, 2.0), rel=1e-9)
    torch.testing.assert_close(
        grad, finite_difference_gradient(lambda s: loss_fn(s, teacher), student),
        rtol=1e-5, atol=1e-8)
    # equal logits: every correlation is 1 up to the eps of the denominator
    same = loss_fn(teacher, teacher).item()
    assert 0 < same < 1e-3 and same == pytest.approx(
        reference_dist(teacher.tolist(), teacher.tolist(), tau, 1.0, 0.5, 2.0), rel=1e-6)


def test_dist_loss_on_dense_logits_takes_every_pixel_as_a_sample():
    generator = torch.Generator().manual_seed(4)
    student = torch.randn(2, 3, 2, 2, generator=generator)
    teacher = torch.randn(2, 3, 2, 2, generator=generator)
    rows = [lambda x, b=b, h=h, w=w: [x[b, k, h, w].item() for k in range(3)]
            for b, h, w in itertools.product(range(2), range(2), range(2))]
    expected = reference_dist([r(student) for r in rows], [r(teacher) for r in rows],
                              2.0, 1.0, 1.0, 1.0)
    assert DISTLoss(tau=2.0)(student, teacher).item() == pytest.approx(expected, rel=1e-5)


def test_dist_loss_with_a_batch_of_one_has_intra_one_without_gradient():
    student = torch.tensor([[1.0, 2.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 3.0, 1.0]])
    intra_only = DISTLoss(inter_loss_weight=0.0, intra_loss_weight=1.0)
    loss = intra_only(student, teacher)
    loss.backward()
    assert loss.item() == 1.0 and torch.equal(student.grad, torch.zeros_like(student))
    both = DISTLoss()(student, teacher)
    assert both.item() == pytest.approx(
        1 - pearson(softmax([1.0, 2.0, 0.0]), softmax([0.0, 3.0, 1.0])) + 1, rel=1e-6)


@pytest.mark.parametrize('side', ['student', 'teacher'])
@pytest.mark.parametrize('num_classes', [5, 1000])
def test_dist_loss_with_constant_logits_counts_no_correlation_and_stays_finite(side,
                                                                               num_classes):
    generator = torch.Generator().manual_seed(5)
    varied = torch.randn(2, num_classes, generator=generator) * 3
    constant = torch.zeros(2, num_classes)
    student = (constant if side == 'student' else varied).clone().requires_grad_(True)
    teacher = varied if side == 'student' else constant
    loss = DISTLoss(intra_loss_weight=0.0)(student, teacher)
    loss.backward()
    # every sample's correlation across classes is undefined: taken as 0, so inter = 1, and
    # nothing pushes the student (the official eps alone gives a gradient of order 1 / eps)
    assert loss.item() == pytest.approx(1.0)
    assert torch.equal(student.grad, torch.zeros_like(student))
    # one constant sample among varied ones: that sample counts 0, the other its correlation
    student = torch.stack([varied[0], torch.zeros(num_classes)]).requires_grad_(True)
    loss = DISTLoss(intra_loss_weight=0.0)(student, varied)
    loss.backward()
    assert loss.item() == pytest.approx(1 - (1.0 + 0.0) / 2, abs=1e-6)
    assert torch.isfinite(student.grad).all() and student.grad[1].abs().max() == 0


def test_dist_loss_sends_no_gradient_to_the_teacher_and_refuses_other_shapes():
    student = torch.randn(4, 10, requires_grad=True)
    teacher = torch.randn(4, 10, requires_grad=True)
    DISTLoss()(student, teacher).backward()
    assert teacher.grad is None
    with pytest.raises(ShapeMismatchError, match=r'\(4, 10\) .* \(4, 12\)'):
        DISTLoss()(student, torch.randn(4, 12))


# -- half precision and build-time checks --------------------------------------------------------
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize('cfg,shape,levels', [
    (dict(type='CWDLoss', tau=4.0), (2, 3, 8, 8), False),
    (dict(type='CWDLoss', tau=4.0), (2, 3, 8, 8), True),
    (dict(type='PKDLoss'), (2, 3, 8, 8), False),
    (dict(type='PKDLoss'), (2, 3, 8, 8), True),
    (dict(type='DISTLoss', tau=2.0), (4, 10), False),
    (dict(type='DISTLoss'), (2, 5, 4, 4), False),
], ids=['cwd', 'cwd-levels', 'pkd', 'pkd-levels', 'dist', 'dist-dense'])
def test_half_precision_inputs_reduce_in_float32(dtype, cfg, shape, levels):
    generator = torch.Generator().manual_seed(6)
    student = torch.randn(shape, generator=generator) * 3
    teacher = torch.randn(shape, generator=generator) * 3
    loss = MODELS.build(cfg)
    wrap = (lambda x: (x, x[..., ::2, ::2])) if levels else (lambda x: x)
    expected = loss(wrap(student.to(dtype).float()), wrap(teacher.to(dtype).float()))
    half = loss(wrap(student.to(dtype).requires_grad_(True)), wrap(teacher.to(dtype)))
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, expected)


@pytest.mark.parametrize('cfg,name,bad,good', [
    (dict(type='CWDLoss'), 'tau', [0, -1.0, NAN, INF, '4'], 4.0),
    (dict(type='CWDLoss'), 'loss_weight', [0, -5, NAN], 5),
    (dict(type='PKDLoss'), 'loss_weight', [0, -6, INF], 6),
    (dict(type='PKDLoss'), 'resize_stu', [1, 'yes', None], False),
    (dict(type='DISTLoss'), 'tau', [0, NAN], 1.0),
    (dict(type='DISTLoss'), 'inter_loss_weight', [-1, NAN, INF], 0.0),
    (dict(type='DISTLoss'), 'intra_loss_weight', [-0.5, None], 0.0),
    (dict(type='DISTLoss'), 'loss_weight', [0, -2], 2),
])
def test_hyper_parameters_are_checked_at_build(cfg, name, bad, good):
    for value in bad:
        with pytest.raises(ConfigError, match=f"{cfg['type']}: {name}"):
            MODELS.build(dict(cfg, **{name: value}))
    assert getattr(MODELS.build(dict(cfg, **{name: good})), name) == good
    with pytest.raises(ConfigError, match='both 0.*give one of them a value > 0'):
        DISTLoss(inter_loss_weight=0, intra_loss_weight=0)
