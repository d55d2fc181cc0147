"""Which student connectors map a student feature's shape to the teacher's: the one rule behind
the distiller's shape-mismatch error and the pair table of ``tools/list_taps.py``."""
from typing import List, Sequence

#: The connector types :func:`connectors_needed` suggests, with the shape difference each fixes.
CONNECTOR_REASONS = {
    'ConvBNConnector': 'channels differ',
    'ResizeConnector': 'spatial sizes differ',
    'TokensToMapConnector': 'tokens vs map',
}


def connectors_needed(student_shape: Sequence[int], teacher_shape: Sequence[int]) -> List[str]:
    """Student connector types that map a feature of ``student_shape`` to ``teacher_shape``.

    Maps (B, C, H, W) of different channels get a ``ConvBNConnector``, of different sizes a
    ``ResizeConnector`` (after it); ViT tokens (B, L, D) against a map (B, C, H, W) get a
    ``TokensToMapConnector``. Their channel and size arguments are filled in by the algorithm's
    dry run.

    Args:
        student_shape: Shape of the student feature, batch dimension included.
        teacher_shape: Shape of the teacher feature, batch dimension included.

    Returns:
        list: Connector type names, in the order to apply them; empty when the shapes agree
        or no connector fixes them.

    Examples:
        >>> connectors_needed((2, 8, 8, 8), (2, 32, 4, 4))
        ['ConvBNConnector', 'ResizeConnector']
        >>> connectors_needed((2, 17, 64), (2, 64, 4, 4))
        ['TokensToMapConnector']
        >>> connectors_needed((2, 8, 4, 4), (2, 8, 4, 4))
        []
    """
    needed = []
    if len(student_shape) == len(teacher_shape) and student_shape[1] != teacher_shape[1]:
        needed.append('ConvBNConnector')
    if len(student_shape) == len(teacher_shape) == 4 and student_shape[2:] != teacher_shape[2:]:
        needed.append('ResizeConnector')
    if len(student_shape) == 3 and len(teacher_shape) == 4:
        needed.append('TokensToMapConnector')
    return needed
