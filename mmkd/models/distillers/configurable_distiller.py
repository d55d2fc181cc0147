import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from mmkd.registry import MODELS, build_component
from mmkd.utils.errors import ConfigError, ConfigRuntimeError, ConfigTypeError, ShapeMismatchError
from mmkd.utils.misc import did_you_mean
from ..connectors.base_connector import BaseConnector, TeacherTapContext
from ..connectors.suggest import CONNECTOR_REASONS, connectors_needed
from ..losses.non_finite import (LIKELY_FIXES, NonFiniteLossError, current_iteration,
                                 describe_value, find_non_finite)
from ..recorders.recorder_manager import RecorderManager
from .tap_pairs import check_keys, expand_tap_pairs

SPEC_KEYS = ('recorder', 'from_student', 'data_idx', 'connector')


@dataclass
class DataSpec:
    """Where one loss argument comes from: a recorder's data, through connectors."""
    recorder: str
    from_student: bool
    data_idx: Optional[int] = None
    connector: Tuple[str, ...] = ()

    @property
    def side(self) -> str:
        return 'student' if self.from_student else 'teacher'


def _parse_spec(loss_name: str, arg: str, spec: Any) -> DataSpec:
    where = f'loss_forward_mappings[{loss_name!r}][{arg!r}]'
    if not isinstance(spec, dict):
        raise ConfigTypeError(f'{where} must be a dict with keys {SPEC_KEYS}, got {spec!r}.')
    check_keys(spec, where, SPEC_KEYS, ('recorder', 'from_student'))
    connector = spec.get('connector') or ()
    connector = (connector, ) if isinstance(connector, str) else tuple(connector)
    return DataSpec(spec['recorder'], bool(spec['from_student']), spec.get('data_idx'), connector)


def _forward_args(loss: nn.Module) -> Dict[str, inspect.Parameter]:
    params = inspect.signature(loss.forward).parameters
    return {name: p for name, p in params.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _shape(value: Any) -> Optional[Tuple[int, ...]]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


Shape = Optional[Tuple[int, ...]]


def _target_shape(student_arg: str, teacher_shapes: Dict[str, Shape]) -> Shape:
    """The shape a student argument's connectors map to: that of the teacher argument with the
    same suffix (``student_first`` -> ``teacher_first``), else of the first teacher argument."""
    if student_arg.startswith('student'):
        counterpart = 'teacher' + student_arg[len('student'):]
        if counterpart in teacher_shapes:
            return teacher_shapes[counterpart]
    return next(iter(teacher_shapes.values()), None)


def _build_loss(name: str, cfg: Union[dict, nn.Module]) -> nn.Module:
    """Build one distillation loss; a wrong weight or hyper-parameter (a ConfigError raised by
    the loss) gets a note naming the loss's entry in the distiller config."""
    try:
        return build_component(MODELS, cfg)
    except ConfigError as error:
        error.add_note(f'(in the distiller config: distill loss {name!r}, declared by a '
                       f'tap_pairs entry or as distill_losses[{name!r}])')
        raise


@MODELS.register_module()
class ConfigurableDistiller(BaseModule):
    """Recorders, connectors and losses, and the mapping from recorded data to loss arguments.

    Losses take uniform argument names: ``student`` and ``teacher`` (plus extras by name). Each
    argument is fed from a recorder of the student or the teacher, optionally through a chain of
    connectors::

        loss_forward_mappings=dict(
            loss_kd=dict(
                student=dict(recorder='logits', from_student=True),
                teacher=dict(recorder='logits', from_student=False)))

    The compact form ``tap_pairs`` declares a student/teacher pair once and expands into the two
    recorders, their connectors, one loss and its mapping (see :func:`expand_tap_pairs`).

    Everything is checked when the distiller is built: mapping keys against the loss's
    ``forward`` signature, recorder and connector names. Connector shapes are filled in and
    every loss's input shapes checked by the algorithm's dry run, which calls
    :meth:`build_teacher_connectors`, :meth:`init_teacher_connectors` and
    :meth:`build_student_connectors_and_check` in that order (see
    :mod:`mmkd.models.connectors.base_connector`).

    Args:
        student_recorders: Name -> recorder config for the student.
        teacher_recorders: Name -> recorder config for the teacher.
        connectors: Name -> connector config. Channel arguments left out are filled from the
            dry run.
        distill_losses: Name -> loss config. Names must contain ``'loss'`` so that mmengine
            adds them to the total.
        loss_forward_mappings: Loss name -> {forward argument -> data spec}; a spec has keys
            ``recorder``, ``from_student``, optional ``data_idx`` (which call of a module that
            runs several times) and ``connector`` (a name or a list applied in order).
        tap_pairs: Compact declarations, see :func:`expand_tap_pairs`.
    """

    def __init__(self,
                 student_recorders: Optional[dict] = None,
                 teacher_recorders: Optional[dict] = None,
                 connectors: Optional[dict] = None,
                 distill_losses: Optional[dict] = None,
                 loss_forward_mappings: Optional[dict] = None,
                 tap_pairs: Optional[List[dict]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        parts = expand_tap_pairs(
            tap_pairs or [],
            dict(student_recorders=dict(student_recorders or {}),
                 teacher_recorders=dict(teacher_recorders or {}),
                 connectors=dict(connectors or {}),
                 distill_losses=dict(distill_losses or {}),
                 loss_forward_mappings=dict(loss_forward_mappings or {})))
        if not parts['distill_losses']:
            raise ValueError('ConfigurableDistiller has no distillation loss: give '
                             '`distill_losses` and `loss_forward_mappings`, or `tap_pairs`.')
        self.student_recorders = RecorderManager(parts['student_recorders'])
        self.teacher_recorders = RecorderManager(parts['teacher_recorders'])
        self.distill_losses = nn.ModuleDict(self._build_losses(parts['distill_losses']))
        self.connectors = nn.ModuleDict()
        self._connector_cfgs: Dict[str, dict] = {}
        for name, cfg in parts['connectors'].items():
            self._add_connector(name, cfg)
        self.loss_forward_mappings = self._parse_mappings(parts['loss_forward_mappings'])

    # -- building and validation ---------------------------------------------------------
    @staticmethod
    def _build_losses(cfgs: Dict[str, dict]) -> Dict[str, nn.Module]:
        for name in cfgs:
            if 'loss' not in name:
                raise ValueError(f'distill loss name {name!r} must contain "loss" (e.g. '
                                 f'"loss_{name}") so that mmengine adds it to the total loss.')
        return {name: _build_loss(name, cfg) for name, cfg in cfgs.items()}

    def _add_connector(self, name: str, cfg: Union[dict, nn.Module]) -> None:
        if isinstance(cfg, nn.Module):
            self.connectors[name] = cfg
            return
        connector_cls = MODELS.get(cfg['type']) if isinstance(cfg['type'], str) else cfg['type']
        if connector_cls is None:
            raise KeyError(f'connector {name!r}: unknown type {cfg["type"]!r}.')
        if issubclass(connector_cls, BaseConnector) and connector_cls.needs_shapes(cfg):
            self._connector_cfgs[name] = dict(cfg)  # built by the dry run
        else:
            self.connectors[name] = build_component(MODELS, cfg)

    def _parse_mappings(self, mappings: Dict[str, dict]) -> Dict[str, Dict[str, DataSpec]]:
        unmapped = set(self.distill_losses) - set(mappings)
        if unmapped:
            raise KeyError(f'distill losses {sorted(unmapped)} have no entry in '
                           'loss_forward_mappings.')
        parsed = {}
        for loss_name, mapping in mappings.items():
            if loss_name not in self.distill_losses:
                raise KeyError(f'loss_forward_mappings names {loss_name!r}, which is not a '
                               f'distill loss.{did_you_mean(loss_name, self.distill_losses)}')
            args = _forward_args(self.distill_losses[loss_name])
            loss_type = type(self.distill_losses[loss_name]).__name__
            for arg in mapping:
                if arg not in args:
                    raise KeyError(f'loss_forward_mappings[{loss_name!r}] maps {arg!r}, which '
                                   f'{loss_type}.forward does not take; valid arguments: '
                                   f'{list(args)}.')
            missing = [a for a, p in args.items()
                       if p.default is inspect.Parameter.empty and a not in mapping]
            if missing:
                raise KeyError(f'loss_forward_mappings[{loss_name!r}] lacks {missing}, which '
                               f'{loss_type}.forward requires.')
            specs = {arg: _parse_spec(loss_name, arg, spec) for arg, spec in mapping.items()}
            for arg, spec in specs.items():
                self._check_spec(loss_name, arg, spec)
            parsed[loss_name] = specs
        return parsed

    def _check_spec(self, loss_name: str, arg: str, spec: DataSpec) -> None:
        manager = self.student_recorders if spec.from_student else self.teacher_recorders
        if spec.recorder not in manager:
            raise KeyError(f'loss_forward_mappings[{loss_name!r}][{arg!r}]: there is no '
                           f'{spec.side} recorder {spec.recorder!r}.'
                           f'{did_you_mean(spec.recorder, manager.recorders)}')
        known = set(self.connectors) | set(self._connector_cfgs)
        for name in spec.connector:
            if name not in known:
                raise KeyError(f'loss_forward_mappings[{loss_name!r}][{arg!r}]: there is no '
                               f'connector {name!r}.{did_you_mean(name, known)}')
        recorder = manager[spec.recorder]
        if spec.data_idx is None or spec.data_idx >= 0:
            calls = 1 if spec.data_idx is None else spec.data_idx + 1
            recorder.expected_calls = max(recorder.expected_calls or 0, calls)

    def prepare(self, student: nn.Module, teacher: nn.Module) -> None:
        """Attach the recorders to both models."""
        self.student_recorders.prepare(student, 'student')
        self.teacher_recorders.prepare(teacher, 'teacher')

    def remove_recorders(self) -> None:
        """Remove every hook and patch from both models."""
        self.student_recorders.remove()
        self.teacher_recorders.remove()

    @property
    def needs_teacher(self) -> bool:
        return len(self.teacher_recorders) > 0

    # -- dry run (called by the algorithm in this order) --------------------------------
    def build_teacher_connectors(self) -> None:
        """Step 2 of the dry run (the steps are in :mod:`mmkd.models.connectors.base_connector`),
        after both models ran once with the recorders armed.

        Recorders whose reference records were modified in place (``clone='auto'``) switch to
        cloning, and each teacher connector left waiting for shapes is built from the shape of
        its recorded input (its own shape as the target), e.g. (2, C_t, H, W).
        """
        for manager in (self.student_recorders, self.teacher_recorders):
            for recorder in manager.recorders.values():
                if recorder.clone == 'auto' and recorder.modified_in_place():
                    recorder.clone = True
        for specs in self.loss_forward_mappings.values():
            for spec in specs.values():
                if not spec.from_student:
                    self._fetch(spec, shape_check=True)

    def init_teacher_connectors(self, teacher: nn.Module, run_teacher: Callable[[], None]) -> None:
        """Step 3 of the dry run: each teacher connector sets itself up from the loaded teacher
        (:meth:`BaseConnector.init_from_teacher`, e.g. OFD's margins).

        Args:
            teacher: The teacher, its weights loaded.
            run_teacher: Runs the teacher once on the dry-run batch with its recorders armed.
        """
        for _, spec, connector in self._teacher_connector_uses():
            if isinstance(connector, BaseConnector):
                connector.init_from_teacher(TeacherTapContext(
                    teacher, self.teacher_recorders[spec.recorder], run_teacher))

    def build_student_connectors_and_check(self) -> None:
        """Step 4 of the dry run: build the student connectors that waited for shapes (from
        their input's shape and the compared teacher feature's) and check that every loss gets
        inputs of matching shapes, running each loss once on the recorded data.

        Raises:
            ShapeMismatchError: Naming the loss, both shapes and the connector that would fix
                them.
            RuntimeError: A loss failed on its inputs.
        """
        for loss_name, specs in self.loss_forward_mappings.items():
            values: Dict[str, Any] = {}
            teacher_shapes: Dict[str, Shape] = {}
            for arg, spec in sorted(specs.items(), key=lambda item: item[1].from_student):
                target = _target_shape(arg, teacher_shapes) if spec.from_student else None
                values[arg] = self._fetch(spec, target_shape=target, shape_check=True)
                if not spec.from_student:
                    teacher_shapes[arg] = _shape(values[arg])
            self._check_shapes(loss_name, specs, values)
            with torch.no_grad():
                try:
                    self.distill_losses[loss_name](**values)
                except Exception as error:
                    shapes = {arg: _shape(v) for arg, v in values.items()}
                    raise RuntimeError(f'distill loss {loss_name!r} failed in the dry run with '
                                       f'inputs of shapes {shapes}: {error}') from error

    def _check_shapes(self, loss_name: str, specs: Dict[str, DataSpec],
                      values: Dict[str, Any]) -> None:
        loss = self.distill_losses[loss_name]
        if not getattr(loss, 'compares_shapes', True) or not {'student', 'teacher'} <= set(values):
            return
        s_shape, t_shape = _shape(values['student']), _shape(values['teacher'])
        if s_shape is None or t_shape is None or s_shape == t_shape:
            return
        s_spec, t_spec = specs['student'], specs['teacher']
        fixes = [f"dict(type='{name}') ({CONNECTOR_REASONS[name]})"
                 for name in connectors_needed(s_shape, t_shape)]
        raise ShapeMismatchError(
            f'distill loss {loss_name!r} ({type(loss).__name__}): the student feature '
            f'(recorder {s_spec.recorder!r}, connectors {list(s_spec.connector)}) has shape '
            f'{s_shape} but the teacher feature (recorder {t_spec.recorder!r}, connectors '
            f'{list(t_spec.connector)}) has shape {t_shape}. Add a student connector (its '
            'channels and size are filled in by the dry run): '
            f'{"; ".join(fixes) or "one that maps the student shape to the teacher shape"}.')

    def _require_built_connectors(self, names: Optional[Sequence[str]] = None) -> None:
        """Raise when connectors (``names``, default all) still wait for the shapes of a dry
        run that never ran."""
        waiting = sorted(set(self._connector_cfgs).intersection(
            self._connector_cfgs if names is None else names))
        if waiting:
            raise ConfigRuntimeError(
                f'connectors {waiting} were never built: their shapes come '
                'from the algorithm\'s dry run, which was switched off (dry_run_shape=None). '
                'Give their channels, or set dry_run_shape to the input shape (C, H, W).')

    # -- teacher connectors ----------------------------------------------------------------
    def _teacher_connector_uses(self) -> Iterator[Tuple[str, DataSpec, nn.Module]]:
        """(connector name, the teacher spec that uses it, the connector) for every use of a
        connector on the teacher side, in mapping order."""
        for specs in self.loss_forward_mappings.values():
            for spec in specs.values():
                if not spec.from_student:
                    self._require_built_connectors(spec.connector)
                    for name in spec.connector:
                        yield name, spec, self.connectors[name]

    def teacher_connectors(self) -> Dict[str, nn.Module]:
        """The connectors used on the teacher side, by name, in mapping order."""
        return {name: connector for name, _, connector in self._teacher_connector_uses()}

    def teacher_connector_inputs(self, names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """The input of each teacher connector for the batch the teacher recorders hold: its
        tap's recorded data after the connectors before it in the tap's chain.

        Args:
            names: The connectors to give (default: all teacher connectors). A connector used
                by several taps gets the input of its first use.

        Returns:
            dict: Connector name -> its input, e.g. a tensor (B, C, H, W), in mapping order.
        """
        inputs: Dict[str, Any] = {}
        for name, spec, _ in self._teacher_connector_uses():
            if name in inputs or (names is not None and name not in names):
                continue
            value = self.teacher_recorders.get_record_data(spec.recorder, spec.data_idx)
            for previous in spec.connector[:spec.connector.index(name)]:
                value = self.connectors[previous](value)
            inputs[name] = value
        return inputs

    # -- training ------------------------------------------------------------------------
    def _fetch(self, spec: DataSpec, target_shape: Optional[Tuple[int, ...]] = None,
               shape_check: bool = False) -> Any:
        """The recorded data of ``spec`` through its connectors.

        Args:
            spec: Where the data comes from.
            target_shape: The shape the connectors map to (a student argument's teacher
                counterpart); a connector still waiting for shapes is built from it.
            shape_check: Run the connectors as the dry run's shape check does
                (:meth:`BaseConnector.forward_for_shape_check`).
        """
        manager = self.student_recorders if spec.from_student else self.teacher_recorders
        value = manager.get_record_data(spec.recorder, spec.data_idx)
        for name in spec.connector:
            if name in self._connector_cfgs:
                self._build_pending_connector(name, value, target_shape)
            connector = self.connectors[name]
            value = (connector.forward_for_shape_check(value)
                     if shape_check and isinstance(connector, BaseConnector) else connector(value))
        return value

    def _build_pending_connector(self, name: str, value: Any,
                                 target_shape: Optional[Tuple[int, ...]]) -> None:
        cfg = self._connector_cfgs.pop(name)
        connector_cls = MODELS.get(cfg['type']) if isinstance(cfg['type'], str) else cfg['type']
        cfg = connector_cls.complete_cfg(cfg, _shape(value), target_shape or _shape(value))
        connector = build_component(MODELS, cfg)
        self.connectors[name] = connector.to(value.device)

    def compute_distill_losses(self) -> Dict[str, torch.Tensor]:
        """The distillation losses from the data of the last forward passes.

        Returns:
            dict: Loss name -> scalar tensor.

        Raises:
            NonFiniteLossError: At the first step where a loss is inf or NaN, naming the loss,
                its taps, the iteration and whether its inputs were already non-finite.
        """
        self._require_built_connectors()
        losses = {}
        for loss_name, specs in self.loss_forward_mappings.items():
            # the connector outputs die with the call: only what the backward saves stays
            losses[loss_name] = self.distill_losses[loss_name](
                **{arg: self._fetch(spec) for arg, spec in specs.items()})
        non_finite = find_non_finite(losses)
        if non_finite is not None:
            with torch.no_grad():  # the error path only: the inputs again, to describe them
                inputs = {arg: self._fetch(spec)
                          for arg, spec in self.loss_forward_mappings[non_finite].items()}
            raise self._non_finite_error(non_finite, losses[non_finite], inputs)
        # consumed: the teacher's features need not live through the backward, nor the
        # student's (the backward keeps what it needs) until the next step
        self.teacher_recorders.release()
        self.student_recorders.release()
        return losses

    def describe_taps(self, loss_name: str) -> str:
        """Where each argument of a loss comes from, e.g. ``"student: student tap
        'backbone.layer4' (recorder 'stage4', connectors ['stage4_student'])"``."""
        parts = []
        for arg, spec in self.loss_forward_mappings[loss_name].items():
            manager = self.student_recorders if spec.from_student else self.teacher_recorders
            source = getattr(manager[spec.recorder], 'source', spec.recorder)
            connectors = f', connectors {list(spec.connector)}' if spec.connector else ''
            parts.append(f'{arg}: {spec.side} tap {source!r} (recorder {spec.recorder!r}'
                         f'{connectors})')
        return '; '.join(parts)

    def _non_finite_error(self, loss_name: str, value: torch.Tensor,
                          inputs: Dict[str, Any]) -> NonFiniteLossError:
        iteration = current_iteration()
        when = (f'at iteration {iteration + 1} (runner.iter={iteration})'
                if iteration is not None else 'outside a training loop')
        bad = [arg for arg, data in inputs.items() if isinstance(data, torch.Tensor)
               and data.is_floating_point() and not bool(torch.isfinite(data).all())]
        cause = (f'its inputs {bad} already hold inf/NaN: the models diverged or the data is '
                 'bad before the loss' if bad else
                 'its inputs are finite: the loss overflowed on them')
        return NonFiniteLossError(
            f'distillation loss {loss_name!r} ({type(self.distill_losses[loss_name]).__name__}) '
            f'is {describe_value(value)} {when}. Taps: {self.describe_taps(loss_name)}. '
            f'Cause: {cause}. Likely fixes: {LIKELY_FIXES}')
