"""Small helpers shared across mmkd: name look-ups with helpful errors."""
import difflib
from typing import Iterable, List

import torch.nn as nn

from .errors import NameNotFoundError


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> List[str]:
    """Return up to ``n`` candidates that look like ``name``, best first.

    Candidates that extend ``name`` (``backbone.layer`` -> ``backbone.layer1``) come first, then
    difflib's close matches.
    """
    candidates = list(candidates)
    prefixed = [c for c in candidates if c.startswith(name)][:n]
    fuzzy = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    return list(dict.fromkeys(prefixed + fuzzy))[:n]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A sentence that proposes close matches for ``name``, or an empty string."""
    matches = close_matches(name, candidates)
    return f' Did you mean one of {matches}?' if matches else ''


def get_submodule(model: nn.Module, name: str, model_name: str = 'model') -> nn.Module:
    """Return ``model``'s submodule called ``name`` (``''`` is the model itself).

    Raises:
        NameNotFoundError: A ``KeyError`` naming the missing module and listing close matches.
    """
    modules = dict(model.named_modules())
    if name not in modules:
        raise NameNotFoundError(f'{model_name} has no module named {name!r}.'
                                f'{did_you_mean(name, [k for k in modules if k])} '
                                'Run tools/list_taps.py on the config to see the names.')
    return modules[name]
