"""The compact ``tap_pairs`` form of a distiller config."""
import copy
from typing import Any, Dict, List, Optional, Sequence

from mmkd.utils.errors import ConfigKeyError, ConfigTypeError, NameNotFoundError

#: Keys that describe one tap (where to record on each side, and how to transform it).
TAP_KEYS = ('student', 'teacher', 'recorder', 'student_recorder', 'teacher_recorder',
            'student_connector', 'teacher_connector', 'data_idx')
TAP_PAIR_KEYS = ('name', 'loss', 'loss_name', 'taps') + TAP_KEYS
#: The smallest tap pair, shown in messages.
EXAMPLE_PAIR = ("dict(name='kd', student='head.fc', teacher='head.fc', "
                "loss=dict(type='KDLoss', tau=4))")


def check_keys(entry: dict, where: str, valid: Sequence[str], required: Sequence[str] = (),
               example: Optional[str] = None) -> None:
    """Check the keys of one entry of a distiller config (a tap pair, a tap, a mapping spec).

    Args:
        entry: The entry.
        where: Where it is, for messages, e.g. ``'tap_pairs[0]'``.
        valid: The keys it may have.
        required: The keys it must have.
        example: An example entry, shown when a required key is missing.

    Raises:
        NameNotFoundError: ``entry`` has a key not in ``valid``.
        ConfigKeyError: It lacks a key of ``required``.

    Examples:
        >>> check_keys(dict(recorder='logits', from_student=True), 'spec',
        ...            ('recorder', 'from_student'), required=('recorder', ))
        >>> check_keys(dict(recorder='logits'), 'spec', ('recorder', 'from_student'),
        ...            required=('from_student', ))
        Traceback (most recent call last):
        ...
        mmkd.utils.errors.ConfigKeyError: spec needs 'from_student'.
    """
    unknown = set(entry) - set(valid)
    if unknown:
        raise NameNotFoundError(f'{where} has unknown keys {sorted(unknown)}; valid keys are '
                                f'{tuple(valid)}.')
    for key in required:
        if key not in entry:
            raise ConfigKeyError(f'{where} needs {key!r}'
                                 + (f', e.g. {example}.' if example else '.'))


def _recorder_cfg(pair: dict, side: str) -> dict:
    recorder = pair.get('recorder', 'ModuleOutputs')
    cfg = dict(type=recorder) if isinstance(recorder, str) else dict(recorder)
    cfg.update(pair.get(f'{side}_recorder') or {})
    cfg.setdefault('source', pair[side])
    return cfg


def _add(parts: Dict[str, dict], section: str, name: str, cfg) -> None:
    if name in parts[section]:
        raise ConfigKeyError(f'tap_pairs: {section} already has an entry {name!r}; give the '
                             'pair another name.')
    parts[section][name] = cfg


def _taps_of(pair: dict, index: int) -> Dict[str, dict]:
    """Role -> tap of one pair: ``{'': pair}`` for a plain pair, else each entry of ``taps``
    with the pair's own tap keys as defaults."""
    if 'taps' not in pair:
        return {'': pair}
    taps = pair['taps']
    if not isinstance(taps, dict) or not taps:
        raise ConfigTypeError(f'tap_pairs[{index}]: taps must be a non-empty dict role -> tap, '
                              f'got {taps!r}.')
    defaults = {key: pair[key] for key in TAP_KEYS if key in pair}
    result = {}
    for role, tap in taps.items():
        if not isinstance(tap, dict):
            raise ConfigTypeError(f'tap_pairs[{index}].taps[{role!r}] must be a dict of tap keys '
                                  f'{TAP_KEYS}, got {type(tap).__name__} {tap!r}.')
        check_keys(tap, f'tap_pairs[{index}].taps[{role!r}]', TAP_KEYS)
        result[role] = dict(defaults, **tap)
    return result


def _check_pair(pair: Any, index: int) -> dict:
    """``pair`` as a dict, after checking its type and keys.

    Raises:
        ConfigTypeError: ``pair`` is not a dict.
        NameNotFoundError: It has keys a tap pair does not take.
        ConfigKeyError: It lacks ``name`` or ``loss``.
    """
    if not isinstance(pair, dict):
        raise ConfigTypeError(
            f'tap_pairs[{index}] must be a dict, got {type(pair).__name__} {pair!r}. Each entry '
            f'declares one student/teacher pair, e.g. {EXAMPLE_PAIR}.')
    check_keys(pair, f'tap_pairs[{index}]', TAP_PAIR_KEYS, ('name', 'loss'), EXAMPLE_PAIR)
    return dict(pair)


def expand_tap_pairs(tap_pairs: List[dict], parts: Dict[str, dict]) -> Dict[str, dict]:
    """Expand compact tap pairs into recorders, connectors, losses and mappings.

    One pair::

        dict(name='stage4', student='backbone.layer4', teacher='backbone.layer4',
             recorder='PreReLU', student_connector=dict(type='ConvBNConnector'),
             teacher_connector=dict(type='OFDTeacherConnector'),
             loss=dict(type='OFDLoss', loss_weight=1e-4))

    becomes student/teacher recorders ``stage4`` (``source`` = the module names; ``teacher``
    defaults to ``student``), connectors ``stage4_student``/``stage4_teacher``, the loss
    ``loss_stage4`` (or ``loss_name``) and the mapping of its ``student``/``teacher`` arguments.
    ``student_recorder``/``teacher_recorder`` add per-side recorder options; ``data_idx``
    selects the call of a module that runs several times.

    A loss that reads several taps per side (e.g. FSP's start and end of a stage) names them in
    ``taps``, role -> tap keys; the pair's own tap keys are defaults for every role::

        dict(name='fsp1', student='backbone.layer1', loss=dict(type='FSPLoss'),
             taps=dict(first=dict(recorder='ModuleInputs'), second=dict()))

    gives recorders ``fsp1_first``/``fsp1_second`` on each side, connectors
    ``fsp1_<role>_<side>`` and the loss arguments ``student_first``, ``teacher_first``,
    ``student_second``, ``teacher_second``.

    Args:
        tap_pairs: The compact declarations.
        parts: The explicit sections (``student_recorders``, ``teacher_recorders``,
            ``connectors``, ``distill_losses``, ``loss_forward_mappings``); entries are added.

    Returns:
        dict: ``parts`` with the pairs added.

    Raises:
        ConfigError: (or a subclass) an entry is not a dict, lacks a key, has an unknown key or
            reuses a name.

    Examples:
        >>> empty = dict(student_recorders={}, teacher_recorders={}, connectors={},
        ...              distill_losses={}, loss_forward_mappings={})
        >>> parts = expand_tap_pairs(
        ...     [dict(name='stage4', student='backbone.layer4', recorder='PreReLU',
        ...           student_connector=dict(type='ConvBNConnector'),
        ...           loss=dict(type='FitNetsLoss'))], empty)
        >>> parts['student_recorders']
        {'stage4': {'type': 'PreReLU', 'source': 'backbone.layer4'}}
        >>> parts['teacher_recorders']
        {'stage4': {'type': 'PreReLU', 'source': 'backbone.layer4'}}
        >>> parts['connectors']
        {'stage4_student': {'type': 'ConvBNConnector'}}
        >>> parts['distill_losses']
        {'loss_stage4': {'type': 'FitNetsLoss'}}
        >>> mapping = parts['loss_forward_mappings']['loss_stage4']
        >>> mapping['student']  # doctest: +NORMALIZE_WHITESPACE
        {'recorder': 'stage4', 'from_student': True, 'data_idx': None,
         'connector': 'stage4_student'}
        >>> mapping['teacher']
        {'recorder': 'stage4', 'from_student': False, 'data_idx': None}

        Several taps per side, one argument pair per role:

        >>> parts = expand_tap_pairs(
        ...     [dict(name='fsp1', student='backbone.layer1', loss=dict(type='FSPLoss'),
        ...           taps=dict(first=dict(recorder='ModuleInputs'), second=dict()))], empty)
        >>> parts['student_recorders']['fsp1_first']
        {'type': 'ModuleInputs', 'source': 'backbone.layer1'}
        >>> parts['student_recorders']['fsp1_second']
        {'type': 'ModuleOutputs', 'source': 'backbone.layer1'}
        >>> list(parts['loss_forward_mappings']['loss_fsp1'])
        ['student_first', 'teacher_first', 'student_second', 'teacher_second']
    """
    if not isinstance(tap_pairs, (list, tuple)):
        raise ConfigTypeError(f'tap_pairs must be a list of dicts, got {type(tap_pairs).__name__}'
                              f' {tap_pairs!r}, e.g. tap_pairs=[{EXAMPLE_PAIR}].')
    parts = copy.deepcopy(parts)
    for index, pair in enumerate(tap_pairs):
        pair = _check_pair(pair, index)
        name = pair['name']
        loss_name = pair.get('loss_name', f'loss_{name}')
        mapping = {}
        for role, tap in _taps_of(pair, index).items():
            if 'student' not in tap:
                where = f'.taps[{role!r}]' if role else ''
                raise ConfigKeyError(f'tap_pairs[{index}]{where} needs \'student\' (the student '
                                     'module to tap; list the names with tools/list_taps.py).')
            tap.setdefault('teacher', tap['student'])
            tap_name = f'{name}_{role}' if role else name
            for side in ('student', 'teacher'):
                _add(parts, f'{side}_recorders', tap_name, _recorder_cfg(tap, side))
                spec = dict(recorder=tap_name, from_student=side == 'student',
                            data_idx=tap.get('data_idx'))
                connector = tap.get(f'{side}_connector')
                if connector is not None:
                    _add(parts, 'connectors', f'{tap_name}_{side}', connector)
                    spec['connector'] = f'{tap_name}_{side}'
                mapping[f'{side}_{role}' if role else side] = spec
        _add(parts, 'distill_losses', loss_name, pair['loss'])
        _add(parts, 'loss_forward_mappings', loss_name, mapping)
    return parts
