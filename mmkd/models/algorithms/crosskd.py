"""CrossKD: cross-head knowledge distillation for dense detectors (Wang et al., "CrossKD:
Cross-Head Knowledge Distillation for Object Detection", CVPR 2024)."""
import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_reduce
from mmengine.model import BaseModule

from mmkd.registry import MODELS, build_component
from mmkd.utils.errors import ConfigError, ShapeMismatchError
from ..losses.pkd_loss import normalize_per_channel
from ..recorders.recorder_manager import RecorderManager
from .single_teacher_distill import DataSamples, SingleTeacherDistill


@MODELS.register_module()
class EmptyDistiller(BaseModule):
    """A distiller with no recorders and no losses, for an algorithm that computes its
    distillation itself (:class:`CrossKDDistill` without extra feature losses, which skips the
    dry run with it)."""

    def __init__(self, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        self.student_recorders = RecorderManager()
        self.teacher_recorders = RecorderManager()

    @property
    def needs_teacher(self) -> bool:
        return False

    def prepare(self, student: nn.Module, teacher: nn.Module) -> None:
        """Nothing to attach."""

    def remove_recorders(self) -> None:
        """Nothing attached."""

    def compute_distill_losses(self) -> Dict[str, torch.Tensor]:
        return {}


@dataclass(frozen=True)
class HeadLayout:
    """Where a dense head keeps its prediction layers.

    Attributes:
        cls_layer: The classification conv after the stacked convs.
        reg_layer: The box conv after the stacked convs.
        scaled: Whether the box output goes through the head's per-level ``scales``.
        targets: Positions of ``label_weights_list`` and ``avg_factor`` in what the head's
            ``get_targets`` returns.
        default_losses: CrossKD's losses for this head (the official configs).
    """
    cls_layer: str
    reg_layer: str
    scaled: bool
    targets: Tuple[int, int]
    default_losses: Dict[str, dict]


#: The heads CrossKDDistill knows, by class name.
HEAD_LAYOUTS = {
    'GFLHead': HeadLayout(
        'gfl_cls', 'gfl_reg', scaled=True, targets=(2, 5), default_losses=dict(
            loss_cls_kd=dict(type='KDQualityFocalLoss', beta=1.0, loss_weight=1.0),
            loss_dist_kd=dict(type='KDDistributionLoss', tau=1.0, loss_weight=3.0),
            loss_box_kd=dict(type='mmdet.GIoULoss', loss_weight=2.0))),
    'RetinaHead': HeadLayout(
        'retina_cls', 'retina_reg', scaled=False, targets=(1, 4), default_losses=dict(
            loss_cls_kd=dict(type='KDQualityFocalLoss', beta=1.0, loss_weight=1.0),
            loss_box_kd=dict(type='mmdet.GIoULoss', loss_weight=1.0))),
}

BRANCHES = ('cls', 'reg')


def align_statistics(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The student's map with the teacher's per-channel mean and standard deviation.

    ``normalize_per_channel(student) * std_t + mean_t``, statistics per channel over the batch
    and the positions (unbiased std), so that the teacher's layers receive inputs of the scale
    they were trained on.

    Args:
        student: Shape (B, C, H, W).
        teacher: Shape (B, C, H', W').

    Returns:
        Tensor: Shape (B, C, H, W).
    """
    values = teacher.transpose(0, 1).flatten(1)
    mean = values.mean(dim=1).view(1, -1, 1, 1)
    std = (values.std(dim=1) if values.shape[1] > 1 else torch.zeros_like(values[:, 0]))
    return normalize_per_channel(student) * std.view(1, -1, 1, 1) + mean


def _hold_recorder(branch: str, index: int) -> dict:
    """The recorder of a branch's feature after ``index`` stacked convs, before the activation
    of the last of them (the head's input for ``index=0``)."""
    if index == 0:
        return dict(type='ModuleInputs', source=f'bbox_head.{branch}_convs.0')
    return dict(type='PreReLU', source=f'bbox_head.{branch}_convs.{index - 1}')


@MODELS.register_module()
class CrossKDDistill(SingleTeacherDistill):
    """CrossKD (Wang et al., CVPR 2024) for dense detectors with GFL and RetinaNet heads.

    The student's head features after its first ``reused_head_idx`` stacked convs (before the
    activation of the last of them) are given the teacher's per-channel statistics
    (:func:`align_statistics`), activated, and run through the *teacher's* remaining stacked
    convs and prediction layers: the cross-head predictions. They are distilled towards the
    teacher's own predictions with the detector's losses:

    - classification: :class:`KDQualityFocalLoss` towards the teacher's sigmoid scores,
      weighted by the student's label weights (valid anchors), over the number of positive
      anchors (at least 1);
    - boxes: GIoU between the boxes decoded from the cross-head and the teacher's box
      predictions, weighted by the teacher's highest class score of each anchor (0 on anchors
      whose label weight is 0); GFL divides by the sum of those weights, RetinaNet by the
      number of positives;
    - GFL also distils its box distributions (:class:`KDDistributionLoss`, each side of each
      box, over ``4`` and the sum of the weights).

    The losses are logged as ``loss_crosskd_cls``, ``loss_crosskd_box`` and (GFL)
    ``loss_crosskd_dist``, next to the student's own task losses (``student.``) and the
    distiller's losses if a ``distiller`` is given (e.g. PKD on the necks: CrossKD+PKD).

    The teacher runs its backbone, neck and head forward once under ``no_grad`` (no loss, no
    NMS); the cross-head pass runs the teacher's last ``stacked_convs - reused_head_idx``
    stacked convs and its prediction layers again on the student's features, with gradients
    flowing through them to the student but not into the teacher's frozen weights. The label
    assignment is the student's own: its head's ``get_targets`` output is recorded while it
    computes its task losses (so ``calculate_student_loss`` must stay True).

    Args:
        architecture: The student detector (a GFL or RetinaNet head).
        teacher: The teacher detector, the same head type, the same classes and channels.
        reused_head_idx: How many of the student's stacked head convs run before the teacher
            takes over (0 to ``stacked_convs``). Defaults to 3 (the paper's choice with four
            stacked convs).
        loss_cls_kd: The classification loss; ``None``: CrossKD's for the head.
        loss_box_kd: The box loss on decoded boxes (mmdet interface ``pred, target, weight,
            avg_factor``); ``None``: CrossKD's (``mmdet.GIoULoss``, weight 2 for GFL, 1 for
            RetinaNet).
        loss_dist_kd: GFL only: the loss of the box distributions; ``None``: CrossKD's
            (:class:`KDDistributionLoss`, ``tau=1``, weight 3).
        distiller: Extra feature distillation (a :class:`ConfigurableDistiller` config), or
            ``None`` for CrossKD alone.
        **kwargs: See :class:`SingleTeacherDistill`.
    """

    def __init__(self,
                 architecture: Union[dict, nn.Module],
                 teacher: Union[dict, nn.Module],
                 reused_head_idx: int = 3,
                 loss_cls_kd: Optional[dict] = None,
                 loss_box_kd: Optional[dict] = None,
                 loss_dist_kd: Optional[dict] = None,
                 distiller: Optional[dict] = None,
                 **kwargs) -> None:
        if kwargs.get('calculate_student_loss', True) is not True:
            raise ConfigError(
                'CrossKDDistill: calculate_student_loss must be True: the cross-head losses use '
                "the student's label assignment, made while it computes its task losses. "
                'Fix: remove calculate_student_loss from the model config.')
        for option in ('teacher_dtype', 'teacher_inference_mode'):
            if kwargs.get(option) not in (None, False):
                raise ConfigError(
                    f'CrossKDDistill: {option} is not supported: CrossKD runs its teacher\'s '
                    'forward itself (the teacher\'s head outputs feed its cross-head losses). '
                    'Fix: remove it from the model config.')
        super().__init__(architecture, teacher, distiller or dict(type='EmptyDistiller'),
                         **kwargs)
        self.layout = self._check_heads(reused_head_idx)
        self.reused_head_idx = reused_head_idx
        self._build_losses(loss_cls_kd, loss_box_kd, loss_dist_kd)
        self.student_taps = RecorderManager(dict(
            targets=dict(type='MethodOutputs', source='bbox_head.get_targets'),
            **{branch: _hold_recorder(branch, reused_head_idx) for branch in BRANCHES}))
        self.teacher_taps = RecorderManager(
            {branch: _hold_recorder(branch, reused_head_idx) for branch in BRANCHES})
        self.student_taps.prepare(self.student, 'student')
        self.teacher_taps.prepare(self.teacher, 'teacher')

    # -- building and checks ---------------------------------------------------------------
    def _check_heads(self, index: int) -> HeadLayout:
        heads = {role: getattr(getattr(self, role), 'bbox_head', None)
                 for role in ('student', 'teacher')}
        kinds = {role: type(head).__name__ for role, head in heads.items()}
        if kinds['student'] != kinds['teacher'] or kinds['student'] not in HEAD_LAYOUTS:
            raise ConfigError(
                f'CrossKDDistill needs a student and a teacher with the same dense head, one of '
                f'{sorted(HEAD_LAYOUTS)}; got {kinds["student"]} (student) and '
                f'{kinds["teacher"]} (teacher). Use detectors such as mmdet::gfl/... or '
                'mmdet::retinanet/... for both.')
        student, teacher = heads['student'], heads['teacher']
        if not isinstance(index, int) or isinstance(index, bool) or not (
                0 <= index <= min(student.stacked_convs, teacher.stacked_convs)):
            raise ConfigError(
                f'CrossKDDistill: reused_head_idx must be an integer from 0 to the number of '
                f'stacked head convs ({student.stacked_convs} in the student, '
                f'{teacher.stacked_convs} in the teacher), got {index!r}. Fix: set '
                'reused_head_idx=3 (the paper).')
        layout = HEAD_LAYOUTS[kinds['student']]
        for what in ('num_classes', 'num_base_priors', 'reg_max'):
            s, t = getattr(student, what, None), getattr(teacher, what, None)
            if s != t:
                raise ShapeMismatchError(
                    f'CrossKDDistill: the student head has {what}={s} and the teacher head '
                    f'{what}={t}; the cross-head predictions are compared with the teacher\'s '
                    'one to one. Give both detectors the same head settings.')
        for branch in BRANCHES:
            produced = self._hold_channels(student, branch, index)
            expected = self._consumer_channels(teacher, branch, index, layout)
            if produced != expected:
                raise ShapeMismatchError(
                    f'CrossKDDistill: after {index} stacked {branch} convs the student head has '
                    f'{produced} channels but the teacher\'s next layer takes {expected}. '
                    'CrossKD feeds the student\'s head features into the teacher\'s head: give '
                    'the student head the teacher\'s feat_channels (and in_channels for '
                    'reused_head_idx=0).')
        return layout

    @staticmethod
    def _hold_channels(head: nn.Module, branch: str, index: int) -> int:
        if index == 0:
            return getattr(head, f'{branch}_convs')[0].in_channels
        return getattr(head, f'{branch}_convs')[index - 1].out_channels

    @staticmethod
    def _consumer_channels(head: nn.Module, branch: str, index: int, layout: HeadLayout) -> int:
        convs = getattr(head, f'{branch}_convs')
        if index < len(convs):
            return convs[index].in_channels
        return getattr(head, layout.cls_layer if branch == 'cls' else layout.reg_layer).in_channels

    def _build_losses(self, loss_cls_kd: Optional[dict], loss_box_kd: Optional[dict],
                      loss_dist_kd: Optional[dict]) -> None:
        defaults = self.layout.default_losses
        if loss_dist_kd is not None and 'loss_dist_kd' not in defaults:
            raise ConfigError(
                'CrossKDDistill: loss_dist_kd distils GFL\'s box distributions; this '
                f'{type(self.student.bbox_head).__name__} has none. Fix: remove loss_dist_kd.')
        given = dict(loss_cls_kd=loss_cls_kd, loss_box_kd=loss_box_kd, loss_dist_kd=loss_dist_kd)
        for name, default in defaults.items():
            cfg = given[name] if given[name] is not None else copy.deepcopy(default)
            setattr(self, name, build_component(MODELS, cfg))

    def remove_recorders(self) -> None:
        """Remove every hook: the distiller's and CrossKD's own taps."""
        super().remove_recorders()
        for taps in ('student_taps', 'teacher_taps'):
            if taps in self.__dict__:
                self.__dict__[taps].remove()

    def _dry_run(self) -> None:
        """Without a distiller there is nothing to dry-run (the heads were checked at build)."""
        if isinstance(self.distiller, EmptyDistiller):
            return
        super()._dry_run()

    # -- training --------------------------------------------------------------------------
    def loss(self, inputs: torch.Tensor,
             data_samples: DataSamples = None) -> Dict[str, torch.Tensor]:
        """The student's task losses (``student.``), the distiller's losses and the
        cross-head losses (while distillation is on; otherwise the task losses alone)."""
        if not self.distillation_enabled:
            return super().loss(inputs, data_samples)
        if not self.teacher_has_weights:
            raise ConfigError(
                'the teacher has no weights: the algorithm was built with load_teacher=False '
                'and no checkpoint with the teacher was loaded. Train with load_teacher=True '
                'and teacher_ckpt=<path>.')
        with torch.no_grad(), self.distiller.teacher_recorders.recording(), \
                self.teacher_taps.recording():
            teacher_cls, teacher_reg = self.teacher(inputs, data_samples, mode='tensor')
        with self.distiller.student_recorders.recording(), self.student_taps.recording():
            losses = self.student(inputs, data_samples, mode='loss')
        losses = {f'student.{name}': value for name, value in losses.items()}
        losses.update(self.distiller.compute_distill_losses())
        losses.update(self.crosskd_losses(teacher_cls, teacher_reg))
        return losses

    def cross_head(self, level: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The cross-head predictions of one pyramid level from the last forward passes.

        Args:
            level: Pyramid level (0 = the finest).

        Returns:
            tuple: Classification logits and box predictions of the teacher's head layers run
            on the student's features, shapes as the teacher's predictions of that level.
        """
        head = self.teacher.bbox_head
        outputs = []
        for branch in BRANCHES:
            x = align_statistics(self.student_taps.get_record_data(branch, level),
                                 self.teacher_taps.get_record_data(branch, level))
            if self.reused_head_idx > 0:
                x = F.relu(x)
            for conv in getattr(head, f'{branch}_convs')[self.reused_head_idx:]:
                x = conv(x)
            layer = self.layout.cls_layer if branch == 'cls' else self.layout.reg_layer
            x = getattr(head, layer)(x)
            if branch == 'reg' and self.layout.scaled:
                x = head.scales[level](x).float()
            outputs.append(x)
        return outputs[0], outputs[1]

    def crosskd_losses(self, teacher_cls: Sequence[torch.Tensor],
                       teacher_reg: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """CrossKD's prediction-mimicking losses, summed over the pyramid levels.

        Args:
            teacher_cls: The teacher's classification logits per level, (B, A * K, H, W).
            teacher_reg: The teacher's box predictions per level, (B, A * 4, H, W) or, GFL,
                (B, 4 * (reg_max + 1), H, W).

        Returns:
            dict: ``loss_crosskd_cls``, ``loss_crosskd_box`` and, GFL, ``loss_crosskd_dist``.
        """
        head = self.student.bbox_head
        targets = self.student_taps.get_record_data('targets')
        label_weights = targets[self.layout.targets[0]]
        num_positives = targets[self.layout.targets[1]]
        sizes = [scores.shape[-2:] for scores in teacher_cls]
        priors = head.prior_generator.grid_priors(sizes, device=teacher_cls[0].device)
        levels = []
        for level, (t_cls, t_reg) in enumerate(zip(teacher_cls, teacher_reg)):
            x_cls, x_reg = self.cross_head(level)
            levels.append(self._level_terms(level, t_cls, t_reg, x_cls, x_reg,
                                            label_weights[level].reshape(-1),
                                            priors[level].repeat(t_cls.shape[0], 1)))
        return self._reduce_levels(levels, num_positives, teacher_cls[0].device)

    def _level_terms(self, level: int, t_cls: torch.Tensor, t_reg: torch.Tensor,
                     x_cls: torch.Tensor, x_reg: torch.Tensor, label_weights: torch.Tensor,
                     priors: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The unnormalised terms of one level: flattened predictions (one row per anchor),
        the box weights and the decoded boxes."""
        head = self.student.bbox_head
        num_classes = head.cls_out_channels
        t_cls = t_cls.permute(0, 2, 3, 1).reshape(-1, num_classes)
        x_cls = x_cls.permute(0, 2, 3, 1).reshape(-1, num_classes)
        box_weights = t_cls.max(dim=1)[0].sigmoid() * (label_weights > 0)
        terms = dict(t_cls=t_cls, x_cls=x_cls, label_weights=label_weights,
                     box_weights=box_weights)
        if self.layout.scaled:  # GFL: distributions of the four distances, boxes in strides
            bins = head.reg_max + 1
            t_reg = t_reg.permute(0, 2, 3, 1).reshape(-1, 4 * bins)
            x_reg = x_reg.permute(0, 2, 3, 1).reshape(-1, 4 * bins)
            terms.update(t_bins=t_reg.reshape(-1, bins), x_bins=x_reg.reshape(-1, bins))
            stride = head.prior_generator.strides[level][0]
            centers = head.anchor_center(priors) / stride
            terms.update(t_box=head.bbox_coder.decode(centers, head.integral(t_reg)),
                         x_box=head.bbox_coder.decode(centers, head.integral(x_reg)))
        else:  # anchor deltas
            size = head.bbox_coder.encode_size
            t_reg = t_reg.permute(0, 2, 3, 1).reshape(-1, size)
            x_reg = x_reg.permute(0, 2, 3, 1).reshape(-1, size)
            terms.update(t_box=head.bbox_coder.decode(priors, t_reg),
                         x_box=head.bbox_coder.decode(priors, x_reg))
        return terms

    def _reduce_levels(self, levels: List[Dict[str, torch.Tensor]], num_positives,
                       device: torch.device) -> Dict[str, torch.Tensor]:
        """Apply the losses level by level with the official normalisations."""
        num_positives = torch.tensor(float(num_positives), device=device)
        if self.layout.scaled:  # GFL averages the number of positives over the processes
            all_reduce(num_positives, op='mean')
        num_positives = max(num_positives.item(), 1.0)
        cls = sum(self.loss_cls_kd(t['x_cls'], t['t_cls'], t['label_weights'],
                                   avg_factor=num_positives) for t in levels)
        losses = dict(loss_crosskd_cls=cls)
        if not self.layout.scaled:
            losses['loss_crosskd_box'] = sum(
                self.loss_box_kd(t['x_box'], t['t_box'], t['box_weights'],
                                 avg_factor=num_positives) for t in levels)
            return losses
        weight_sum = sum(t['box_weights'].sum() for t in levels).clamp(min=1e-6).item()
        losses['loss_crosskd_box'] = sum(
            self.loss_box_kd(t['x_box'], t['t_box'], t['box_weights'], avg_factor=1.0)
            for t in levels) / weight_sum
        losses['loss_crosskd_dist'] = sum(
            self.loss_dist_kd(t['x_bins'], t['t_bins'],
                              t['box_weights'][:, None].expand(-1, 4).reshape(-1),
                              avg_factor=4.0) for t in levels) / weight_sum
        return losses
