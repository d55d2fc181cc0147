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
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModel

from mmkd.models.builder import build_model_from_cfg, read_config, strip_pretrained_init
from mmkd.utils.errors import ConfigTypeError, NameNotFoundError
from mmkd.models.recorders import (ModuleOutputsRecorder, PreReLURecorder, RecorderManager)

Shape = Tuple[int, ...]
ACTIVATIONS = ('ReLU', 'ReLU6')
#: Why each connector is needed, for the printed table.
CONNECTOR_REASONS = {
    'ConvBNConnector': 'channels differ',
    'ResizeConnector': 'spatial sizes differ',
    'TokensToMapConnector': 'tokens vs map',
}


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
    """One forward pass of ``model`` on a dummy batch (``tensor`` mode for OpenMMLab models)."""
    if isinstance(model, BaseModel):
        return model(inputs, None, mode='tensor')
    return model(inputs)


# -- candidates and their shapes ------------------------------------------------------------
def _has_activation(module: nn.Module, activations: Sequence[str]) -> bool:
    return any(type(m).__name__ in activations for m in module.modules())


def _has_forward(module: nn.Module) -> bool:
    """Containers such as ``nn.ModuleList`` are never called, so they cannot be recorded."""
    return type(module).forward is not nn.Module.forward


def candidate_taps(model: nn.Module,
                   activations: Sequence[str] = ACTIVATIONS) -> Iterator[Tuple[str, str]]:
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
                  activations: Sequence[str] = ACTIVATIONS) -> List[Tap]:
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


def connectors_needed(student_shape: Shape, teacher_shape: Shape) -> List[str]:
    """Student connector types that map a feature of ``student_shape`` to ``teacher_shape``,
    in the order to apply them; empty when the shapes agree."""
    needed = []
    if len(student_shape) == len(teacher_shape) and student_shape[1] != teacher_shape[1]:
        needed.append('ConvBNConnector')
    if len(student_shape) == len(teacher_shape) == 4 and student_shape[2:] != teacher_shape[2:]:
        needed.append('ResizeConnector')
    if len(student_shape) == 3 and len(teacher_shape) == 4:
        needed.append('TokensToMapConnector')
    return needed


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
    manager = RecorderManager(recorders)
    inputs = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    try:
        manager.prepare(model, 'model')
        with torch.no_grad(), manager.recording():
            run_model(model, inputs)
        return [(name, _describe(recorder.get_record_data(0)), recorder.num_records)
                for name, recorder in recorders.items() if recorder.num_records]
    finally:
        manager.remove()
        model.train(was_training)


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
