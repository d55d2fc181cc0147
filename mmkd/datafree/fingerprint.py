"""What a cache of synthetic images was made from: the teacher's weights, the synthesizer's
settings and the images asked for. A cache is reused only when its fingerprint equals the run's."""
import hashlib
from typing import Any, Dict, List

import torch
import torch.nn as nn


def converts_channels(data_preprocessor: Any) -> bool:
    """Whether ``data_preprocessor`` swaps BGR and RGB (mmpretrain's ``to_rgb``, mmengine's
    ``_channel_conversion``): synthetic images are then stored in the other order."""
    return bool(getattr(data_preprocessor, 'to_rgb', False)
                or getattr(data_preprocessor, '_channel_conversion', False))


def teacher_weights_hash(teacher: nn.Module) -> str:
    """SHA-256 of a teacher's weights and buffers, and of its data preprocessor's ``mean``,
    ``std`` and channel conversion (kept outside the state dict by mmengine, yet they map images
    to pixels).

    Args:
        teacher: The loaded teacher.

    Returns:
        str: 64 hex digits; equal for equal weights whatever their device or memory layout.
    """
    digest = hashlib.sha256()
    tensors = dict(teacher.state_dict())
    preprocessor = getattr(teacher, 'data_preprocessor', None)
    for name in ('mean', 'std'):
        value = getattr(preprocessor, name, None)
        if isinstance(value, torch.Tensor):
            tensors[f'data_preprocessor.{name}'] = value
    digest.update(f'channel conversion:{converts_channels(preprocessor)}'.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f'{name}:{tensor.dtype}:{tuple(tensor.shape)}'.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def plain(value: Any) -> Any:
    """A config value as plain Python (ConfigDict -> dict, tuple -> list), so that equal
    settings compare equal whether they came from a file, a dict or ``--cfg-options``."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, type) or callable(value):  # e.g. type=SomeSynthesizer (lazy configs)
        return f'{value.__module__}.{value.__qualname__}'
    return value


def synthesis_fingerprint(teacher_hash: str, synthesizer: dict, num_classes: int,
                          num_per_class: int, batch_size: int, seed: int) -> Dict[str, Any]:
    """The fingerprint stored with a synthetic set: everything its images depend on.

    Args:
        teacher_hash: :func:`teacher_weights_hash` of the teacher.
        synthesizer: The synthesizer's config.
        num_classes: Classes synthesised.
        num_per_class: Images per class.
        batch_size: Images optimised together (they share BN statistics).
        seed: Seed of the initial noise and the augmentations.

    Returns:
        dict: Plain values (loadable with ``torch.load(weights_only=True)``).
    """
    return dict(teacher=teacher_hash, synthesizer=plain(synthesizer),
                num_images=dict(num_classes=num_classes, num_per_class=num_per_class),
                batch_size=batch_size, seed=seed)


def fingerprint_differences(cached: Dict[str, Any], wanted: Dict[str, Any]) -> List[str]:
    """Names of the fingerprint entries that differ (all of them for a cache without one)."""
    return [key for key in wanted if cached.get(key) != wanted[key]]
