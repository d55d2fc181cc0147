"""Find the layer names to put in a distillation config: the library behind
``tools/list_taps.py``.

For a model (or the student and the teacher of a distillation config) built without pretrained
weights, it lists the candidate pre-ReLU taps — the stages (children of the backbone, neck and
heads) and their blocks that contain an activation — with the shape the
:class:`~mmkd.models.recorders.PreReLURecorder` records for a dummy input, and pairs the
student's stages with the teacher's, naming the connector each pair needs. Every shape comes
from mmkd's own recorders run on the real model.
"""
import copy
import fnmatch
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModel

from mmkd.models.builder import build_model_from_cfg
from mmkd.models.connectors.suggest import CONNECTOR_REASONS, connectors_needed
from mmkd.models.data_samples import dummy_data_samples
from mmkd.utils.config import read_config, strip_pretrained_init
from mmkd.utils.errors import ConfigTypeError, NameNotFoundError
from mmkd.models.recorders import (MethodOutputsRecorder, ModuleOutputsRecorder, PreReLURecorder,
                                   RecordedTensorChanged, RecorderManager)
from mmkd.models.recorders.pre_relu_recorder import ACTIVATION_TYPES

Shape = Tuple[int, ...]


@dataclass
class Tap:
    """A candidate pre-ReLU tap.

    Attributes:
        name: Module name, e.g. ``'backbone.layer3'``.
        kind: ``'stage'`` (a child of the backbone/neck/head) or ``'block'`` (a child of a stage).
        position: The :class:`PreReLURecorder` position that gives the feature:
            ``'last_inside'`` when the module ends with an activation (the recorded tensor is
            its output before that activation), else ``'first_after'`` (the input of the next
            activation that runs after it).
        shape: Shape of the recorded feature, batch dimension included.
        output_shape: Shape of the module's output (batch included); ``None`` if not a tensor.
        calls: How often the module runs in one forward pass (a detector head's convs run once
            per pyramid level); ``shape`` is that of the first call, ``data_idx`` in a tap pair
            selects another.
    """
    name: str
    kind: str
    position: str
    shape: Shape
    output_shape: Optional[Shape]
    calls: int = 1

    @property
    def recorder(self) -> dict:
        """The recorder config that records this tap."""
        cfg = dict(type='PreReLU', source=self.name)
        if self.position != 'last_inside':
            cfg['position'] = self.position
        return cfg


@dataclass
class TapPair:
    """A student stage matched with a teacher stage, and the student connectors it needs."""
    student: Tap
    teacher: Tap
    connectors: List[str] = field(default_factory=list)


# -- models ---------------------------------------------------------------------------------
def _without_pretrained(model_cfg: Any) -> Any:
    """A student/teacher config that builds without downloading or loading weights."""
    if not isinstance(model_cfg, dict):
        raise ConfigTypeError('the student (architecture) and the teacher of a distillation '
                              'config must be model config dicts (or dict(cfg_path=...)), got '
                              f'{type(model_cfg).__name__}.')
    model_cfg = copy.deepcopy(model_cfg)
    if 'cfg_path' in model_cfg:
        model_cfg['pretrained'] = False
    return strip_pretrained_init(model_cfg)


def load_models(config: str, roles: Sequence[str] = ('student', 'teacher')
                ) -> Dict[str, nn.Module]:
    """Build the models of ``config`` without pretrained weights (no download, no teacher
    checkpoint).

    Args:
        config: A config file or ``'package::path.py'`` (e.g.
            ``'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'``).
        roles: Which models of a distillation config to build.

    Returns:
        dict: ``{'student': ..., 'teacher': ...}`` (those in ``roles``) for a distillation
        config (its model has ``architecture`` and ``teacher``), else ``{'model': ...}``.
    """
    cfg, _ = read_config(config)
    if 'model' not in cfg:
        raise NameNotFoundError(f'{config} has no `model` entry; give a model config or a '
                                'distillation config.')
    model_cfg = cfg.model.to_dict()
    if 'architecture' in model_cfg and 'teacher' in model_cfg:
        keys = {'student': 'architecture', 'teacher': 'teacher'}
        return {role: build_model_from_cfg(_without_pretrained(model_cfg[keys[role]]), role)
                for role in roles}
    return {'model': build_model_from_cfg(dict(cfg_path=config, pretrained=False))}


def default_input_shape(config: str) -> Shape:
    """The dry-run input shape of a distillation config, else ``(3, 224, 224)``."""
    cfg, _ = read_config(config)
    shape = cfg.get('model', {}).get('dry_run_shape')
    return tuple(shape) if shape else (3, 224, 224)


def run_model(model: nn.Module, inputs: torch.Tensor) -> Any:
    """One forward pass of ``model`` on a dummy batch (``tensor`` mode for OpenMMLab models,
    with the data samples of :func:`dummy_data_samples`)."""
    if isinstance(model, BaseModel):
        return model(inputs, dummy_data_samples(model, inputs), mode='tensor')
    return model(inputs)


# -- candidates and their shapes ------------------------------------------------------------
def _has_activation(module: nn.Module, activations: Sequence[str]) -> bool:
    return any(type(m).__name__ in activations for m in module.modules())


def _has_forward(module: nn.Module) -> bool:
    """Containers such as ``nn.ModuleList`` are never called, so they cannot be recorded."""
    return type(module).forward is not nn.Module.forward


def candidate_taps(model: nn.Module,
                   activations: Sequence[str] = ACTIVATION_TYPES) -> Iterator[Tuple[str, str]]:
    """Stages (children of the model's parts: backbone, neck, heads) and blocks (children of a
    stage) that contain an activation module, in model order.

    Yields:
        tuple: (module name, ``'stage'`` or ``'block'``).
    """
    def useful(module: nn.Module) -> bool:
        return (type(module).__name__ not in activations
                and _has_activation(module, activations))

    for part_name, part in model.named_children():
        if part_name == 'data_preprocessor':
            continue
        for stage_name, stage in part.named_children():
            name = f'{part_name}.{stage_name}'
            if not useful(stage):
                continue
            if _has_forward(stage):
                yield name, 'stage'
            for block_name, block in stage.named_children():
                if useful(block) and _has_forward(block):
                    yield f'{name}.{block_name}', 'block'


def _recorders_for(name: str) -> Dict[str, Any]:
    return {f'{name}|last_inside': PreReLURecorder(name, clone=True),
            f'{name}|first_after': PreReLURecorder(name, 'first_after', clone=True),
            f'{name}|output': ModuleOutputsRecorder(name, clone=True)}


def _shape_of(value: Any) -> Optional[Shape]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _record(model: nn.Module, recorders: Dict[str, Any], inputs: torch.Tensor) -> Dict[str, Any]:
    """Run ``model`` once with ``recorders`` attached; their first records (``None`` where the
    source did not run) and, under ``'<key>#calls'``, how many records each made. Every hook is
    removed afterwards."""
    manager = RecorderManager(recorders)
    try:
        manager.prepare(model, 'model')
        with torch.no_grad(), manager.recording():
            run_model(model, inputs)
        records = {key: recorder.get_record_data(0) if recorder.num_records else None
                   for key, recorder in recorders.items()}
        records.update({f'{key}#calls': recorder.num_records
                        for key, recorder in recorders.items()})
        return records
    finally:
        manager.remove()


def _ends_with_activation(pre: Optional[torch.Tensor], output: Any) -> bool:
    """Whether ``output`` is ReLU or ReLU6 of ``pre`` (the module's last op is the activation)."""
    if pre is None or not isinstance(output, torch.Tensor) or pre.shape != output.shape:
        return False
    return any(torch.allclose(output, pre.clamp(0, high)) for high in (None, 6.0))


def _tap_from(name: str, kind: str, records: Dict[str, Any]) -> Optional[Tap]:
    inside, after, output = (records[f'{name}|{key}']
                             for key in ('last_inside', 'first_after', 'output'))
    calls = records[f'{name}|output#calls']
    if _ends_with_activation(inside, output):
        return Tap(name, kind, 'last_inside', _shape_of(inside), _shape_of(output), calls)
    if after is not None and isinstance(output, torch.Tensor):
        return Tap(name, kind, 'first_after', _shape_of(after), _shape_of(output), calls)
    return None  # did not run, returns no tensor, or no activation follows it


def _run_plain(model: nn.Module, inputs: torch.Tensor) -> None:
    """One forward pass without recorders; its error, if any, says what the dummy input was."""
    try:
        with torch.no_grad():
            run_model(model, inputs)
    except Exception as error:
        error.add_note(f'(raised by the forward pass of {type(model).__name__} on a dummy input '
                       f'of shape {tuple(inputs.shape)}; if that size does not suit the model, '
                       'give another with --input-shape C H W)')
        raise


def discover_taps(model: nn.Module, input_shape: Sequence[int],
                  activations: Sequence[str] = ACTIVATION_TYPES) -> List[Tap]:
    """Candidate pre-ReLU taps of ``model`` with the shapes recorded for a dummy input.

    Modules that do not run in ``tensor`` mode (e.g. an auxiliary head), return no single tensor
    or have no activation after them are left out.

    Args:
        model: The model (evaluation mode is used, then restored).
        input_shape: (C, H, W) of the dummy input (a batch of one).
        activations: Activation class names that count as ReLUs.
    """
    candidates = list(candidate_taps(model, activations))
    inputs = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    try:
        try:
            records = _record(model, {key: recorder for name, _ in candidates
                                      for key, recorder in _recorders_for(name).items()}, inputs)
        except Exception:
            # A model that fails without recorders is not a recorder problem: let it raise.
            _run_plain(model, inputs)
            # A candidate the recorder cannot handle (e.g. its activation never runs): record
            # the candidates one at a time and leave out those that fail.
            records = {}
            for name, _ in candidates:
                try:
                    records.update(_record(model, _recorders_for(name), inputs))
                except Exception:
                    continue
    finally:
        model.train(was_training)
    taps = [_tap_from(name, kind, records) for name, kind in candidates
            if f'{name}|output' in records]
    return [tap for tap in taps if tap is not None]


def pair_stages(student_taps: Sequence[Tap], teacher_taps: Sequence[Tap]) -> List[TapPair]:
    """Match the student's stages with the teacher's.

    When both models have the same stage names (same architecture family, any width or
    depth), stages pair by name. Otherwise (e.g. a MobileNetV2 student and a ResNet teacher)
    they pair by resolution: for every spatial size both have, the deepest stage of each.
    """
    students = [tap for tap in student_taps if tap.kind == 'stage']
    teachers = [tap for tap in teacher_taps if tap.kind == 'stage']
    if {tap.name for tap in students} == {tap.name for tap in teachers}:
        by_name = {tap.name: tap for tap in teachers}
        matched = [(tap, by_name[tap.name]) for tap in students]
    else:
        def deepest_per_size(taps: Sequence[Tap]) -> Dict[Shape, Tap]:
            return {tap.shape[2:]: tap for tap in taps if len(tap.shape) == 4}
        student_sizes, teacher_sizes = deepest_per_size(students), deepest_per_size(teachers)
        matched = [(tap, teacher_sizes[size]) for size, tap in student_sizes.items()
                   if size in teacher_sizes]
    return [TapPair(s, t, connectors_needed(s.shape, t.shape)) for s, t in matched]


def _describe(value: Any) -> str:
    """Shapes of a tensor or a nested container of tensors, batch dimension included."""
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(_describe(item) for item in value) + ']'
    if isinstance(value, dict):
        return '{' + ', '.join(f'{k}: {_describe(v)}' for k, v in value.items()) + '}'
    return type(value).__name__


@contextmanager
def _recorded_forward(model: nn.Module, recorders: Dict[str, Any],
                      input_shape: Sequence[int]) -> Iterator[None]:
    """Run ``model`` once in evaluation mode on a dummy batch (1, *input_shape*) with
    ``recorders`` attached. Their records can be read inside the ``with`` block; after it every
    hook is removed and the model's mode restored."""
    manager = RecorderManager(recorders)
    inputs = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    try:
        manager.prepare(model, 'model')
        with torch.no_grad(), manager.recording():
            run_model(model, inputs)
        yield
    finally:
        manager.remove()
        model.train(was_training)


def module_outputs(model: nn.Module, input_shape: Sequence[int],
                   pattern: str = '*') -> List[Tuple[str, str, int]]:
    """Every module whose name matches ``pattern`` (``fnmatch``) and runs on a dummy input,
    for :class:`~mmkd.models.recorders.ModuleOutputsRecorder` (``recorder='ModuleOutputs'``).

    Returns:
        list: (name, output shapes of its first call, number of calls).
    """
    names = [name for name, _ in model.named_modules()
             if name and not name.startswith('data_preprocessor')
             and fnmatch.fnmatchcase(name, pattern)]
    recorders = {name: ModuleOutputsRecorder(name, clone=True) for name in names}
    with _recorded_forward(model, recorders, input_shape):
        return [(name, _describe(recorder.get_record_data(0)), recorder.num_records)
                for name, recorder in recorders.items() if recorder.num_records]


# -- outputs of the neck and the heads ------------------------------------------------------
#: Children of a model that are not listed among the neck and head outputs.
NOT_OUTPUT_PARTS = ('data_preprocessor', 'backbone')


@dataclass
class OutputTap:
    """One tensor of a neck's or a head's output and the module call that produces it: the
    taps of dense methods (an FPN level, a head's logits at one level).

    Attributes:
        part: The child of the model, e.g. ``'neck'``, ``'bbox_head'``, ``'decode_head'``.
        index: Position of the tensor in the part's output, e.g. ``'[0][2]'`` (classification
            scores of the third level); ``''`` when the output is one tensor.
        source: The outermost module inside the part whose output is this tensor, e.g.
            ``'bbox_head.gfl_cls'``; ``None`` when a function computes it (Faster R-CNN's P6 is
            a max-pool of P5 inside ``FPN.forward``).
        data_idx: Which call of ``source`` produces it when ``source`` runs several times per
            forward pass (a head conv shared by the pyramid levels), else ``None``.
        shape: Shape of the tensor, first dimension included: the batch, or the number of
            regions after RoI pooling.
    """
    part: str
    index: str
    source: Optional[str]
    data_idx: Optional[int]
    shape: Shape

    @property
    def tap(self) -> Optional[dict]:
        """The keys of a tap pair that record this tensor (``recorder='ModuleOutputs'`` is the
        default), or ``None`` when no module produces it alone."""
        if self.source is None:
            return None
        return dict(student=self.source) if self.data_idx is None else \
            dict(student=self.source, data_idx=self.data_idx)


def _indexed_tensors(value: Any, index: str = '') -> Iterator[Tuple[str, torch.Tensor]]:
    """(position, tensor) for every tensor of a nested tuple/list/dict output."""
    if isinstance(value, torch.Tensor):
        yield index, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _indexed_tensors(item, f'{index}[{i}]')
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _indexed_tensors(item, f'{index}[{key!r}]')


def _producers(recorders: Dict[str, ModuleOutputsRecorder]) -> Dict[int, Tuple[str, int]]:
    """``id`` of every recorded tensor -> (the outermost module that returned it, its call).

    ``recorders`` are in ``named_modules`` order (a module before its children), so the first
    module seen returning a tensor is the outermost one. A tensor modified in place after a
    module returned it (e.g. by an inplace ReLU that follows) is not that module's output."""
    found: Dict[int, Tuple[str, int]] = {}
    for name, recorder in recorders.items():
        for call in range(recorder.num_records):
            try:
                value = recorder.get_record_data(call)
            except RecordedTensorChanged:
                continue
            if isinstance(value, torch.Tensor):
                found.setdefault(id(value), (name, call))
    return found


@dataclass
class PartOutputs:
    """What one part of a model (its neck, a head) returns in ``tensor`` mode.

    Attributes:
        part: The child of the model, e.g. ``'neck'``.
        called: Whether the model calls the part as a module (``self.neck(x)``), so that
            ``ModuleOutputs`` on the part records its whole output; mmdet and mmseg call their
            heads' ``forward`` method directly, which only ``MethodOutputs`` on
            ``'<part>.forward'`` records.
        tensors: Every tensor of the output, in order.
    """
    part: str
    called: bool
    tensors: List[OutputTap]

    @property
    def tap(self) -> dict:
        """The keys of a tap pair that record the whole output (e.g. every pyramid level)."""
        if self.called:
            return dict(student=self.part)
        return dict(student=f'{self.part}.forward', recorder='MethodOutputs')


def output_taps(model: nn.Module, input_shape: Sequence[int]
                ) -> Dict[str, Optional[PartOutputs]]:
    """The tensors that the neck and the heads of ``model`` return in ``tensor`` mode, each
    with the module call that produces it.

    A detector's neck gives one tensor per pyramid level (``neck.fpn_convs.<i>``), its head the
    classification and box outputs of every level (a conv shared by the levels, such as GFL's
    ``bbox_head.gfl_cls``, produces level ``i`` at call ``i``: ``data_idx=i``); a segmentor's
    decode head gives its logits (``decode_head.conv_seg``). Each tensor is matched by identity
    with what the modules of the part returned, recorded by
    :class:`~mmkd.models.recorders.ModuleOutputsRecorder` on the real model; the part's own
    output by :class:`~mmkd.models.recorders.MethodOutputsRecorder` on its ``forward``.

    Args:
        model: The model (evaluation mode is used, then restored).
        input_shape: (C, H, W) of the dummy input (a batch of one).

    Returns:
        dict: For every child of the model but its backbone and data preprocessor, in model
        order, its output (its first call); ``None`` for a part that does not run in ``tensor``
        mode (mmseg's auxiliary head).
    """
    parts = [name for name, _ in model.named_children() if name not in NOT_OUTPUT_PARTS]
    modules = {f'{part}.{name}' if name else part: ModuleOutputsRecorder(
        f'{part}.{name}' if name else part, clone=False)
        for part in parts for name, _ in model.get_submodule(part).named_modules()}
    forwards = {part: MethodOutputsRecorder(f'{part}.forward', clone=False) for part in parts}
    recorders = {**modules, **{f'{part}#forward': recorder for part, recorder in forwards.items()}}
    with _recorded_forward(model, recorders, input_shape):
        producers = _producers({name: recorder for name, recorder in modules.items()
                                if name not in parts})
        return {part: _part_outputs(part, forwards[part], modules, producers) for part in parts}


def _part_outputs(part: str, forward: MethodOutputsRecorder,
                  modules: Dict[str, ModuleOutputsRecorder],
                  producers: Dict[int, Tuple[str, int]]) -> Optional[PartOutputs]:
    if not forward.num_records:
        return None
    tensors = []
    for index, tensor in _indexed_tensors(forward.get_record_data(0)):
        source, call = producers.get(id(tensor), (None, 0))
        several = source is not None and modules[source].num_records > 1
        tensors.append(OutputTap(part, index, source, call if several else None,
                                 tuple(tensor.shape)))
    return PartOutputs(part, modules[part].num_records > 0, tensors)


# -- printing -------------------------------------------------------------------------------
def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = '  ') -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [header, ['-' * width for width in widths], *rows]
    return '\n'.join(indent + '  '.join(str(cell).ljust(width)
                                         for cell, width in zip(line, widths)).rstrip()
                     for line in lines)


def _per_image(shape: Optional[Shape]) -> str:
    return str(tuple(shape[1:])) if shape is not None else '-'


def format_taps(taps: Sequence[Tap]) -> str:
    """The taps as a table (shapes per image, without the batch dimension)."""
    rows = []
    for tap in taps:
        recorder = 'PreReLU' if tap.position == 'last_inside' else \
            "PreReLU(position='first_after')"
        notes = [] if tap.position == 'last_inside' else [
            f'ends without activation; ModuleOutputs gives its output '
            f'{_per_image(tap.output_shape)}']
        if tap.calls > 1:
            notes.append(f'runs {tap.calls} times, shape of the first (data_idx selects one)')
        note = '; '.join(notes)
        rows.append([tap.name, tap.kind, _per_image(tap.shape), recorder, note])
    return _table(['name', 'kind', 'shape (C, H, W)', 'recorder', 'note'], rows)


def format_pairs(pairs: Sequence[TapPair]) -> str:
    """The stage pairs and their connectors as a table."""
    rows = [[p.student.name, p.teacher.name, _per_image(p.student.shape),
             _per_image(p.teacher.shape),
             ' + '.join(f'{c} ({CONNECTOR_REASONS[c]})' for c in p.connectors) or 'none']
            for p in pairs]
    return _table(['student', 'teacher', 'student shape', 'teacher shape', 'student connector'],
                  rows)


def format_tap_pairs_cfg(pairs: Sequence[TapPair], loss: str = 'FitNetsLoss') -> str:
    """A ``tap_pairs`` list for :class:`ConfigurableDistiller` declaring ``pairs``."""
    lines = ['tap_pairs=[']
    for pair in pairs:
        fields = [f"name='{pair.student.name.rsplit('.', 1)[-1]}'",
                  f"student='{pair.student.name}'"]
        if pair.teacher.name != pair.student.name:
            fields.append(f"teacher='{pair.teacher.name}'")
        fields.append("recorder='PreReLU'")
        for side, tap in (('student', pair.student), ('teacher', pair.teacher)):
            if tap.position != 'last_inside':
                fields.append(f"{side}_recorder=dict(position='{tap.position}')")
        if len(pair.connectors) == 1:
            fields.append(f"student_connector=dict(type='{pair.connectors[0]}')")
        elif pair.connectors:
            lines.append(f'    # needs {" then ".join(pair.connectors)}: declare them in '
                         "`connectors` and chain them with connector=[...] in "
                         '`loss_forward_mappings`')
        fields.append(f"loss=dict(type='{loss}')")
        lines.append(f'    dict({", ".join(fields)}),')
    return '\n'.join(lines + [']'])


def format_output_taps(outputs: Dict[str, Optional[PartOutputs]]) -> str:
    """The neck and head outputs as a table: which module call to tap for each tensor."""
    rows = []
    for part, found in outputs.items():
        if found is None:
            rows.append([part, '-', '-', '-', 'does not run in tensor mode'])
            continue
        if len(found.tensors) > 1:
            whole = found.tap
            note = 'the whole output' + ("; recorder='MethodOutputs'" if not found.called
                                         else '')
            rows.append([part, whole['student'], '-', f'{len(found.tensors)} tensors', note])
        for tap in found.tensors:
            notes = [] if tap.source is not None else [
                f"computed by a function, not a module: tap {found.tap['student']!r}"]
            if tap.shape and tap.shape[0] != 1:  # the dummy batch holds one image
                notes.append(f'{tap.shape[0]} regions (proposals of this input), not images')
            note = '; '.join(notes)
            rows.append([part + tap.index, tap.source or '-',
                         '-' if tap.data_idx is None else str(tap.data_idx), str(tap.shape),
                         note])
    table = _table(['output', 'module', 'data_idx', 'shape (N, ...)', 'note'], rows)
    example = next((tap for found in outputs.values() if found is not None
                    for tap in found.tensors if tap.data_idx is not None), None) or next(
        (tap for found in outputs.values() if found is not None
         for tap in found.tensors if tap.source is not None), None)
    if example is None:
        return table
    keys = ', '.join(f'{key}={value!r}' for key, value in example.tap.items())
    return f"{table}\n  as a tap pair: dict(name='...', {keys}, loss=dict(type=...))"
