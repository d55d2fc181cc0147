"""Random-number states saved with every checkpoint, so that a resumed run replays exactly."""
import random
from typing import Optional, Tuple

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook

from mmkd.registry import HOOKS

#: Key of the states in a checkpoint.
RNG_STATE_KEY = 'rng_state'


def capture_rng_state() -> dict:
    """The states of Python's ``random``, NumPy's global generator, torch's CPU generator and,
    when CUDA is in use, every CUDA generator; stored as tensors and plain Python values, so a
    checkpoint holding them loads with ``torch.load(weights_only=True)``.

    Returns:
        dict: ``python``, ``numpy``, ``torch`` (a uint8 tensor) and, with CUDA, ``cuda`` (a
        list of uint8 tensors, one per device).
    """
    version, internal, gauss_next = random.getstate()
    algorithm, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = dict(
        python=dict(version=version, internal=torch.tensor(internal, dtype=torch.int64),
                    gauss_next=gauss_next),
        numpy=dict(algorithm=algorithm, keys=torch.from_numpy(keys.astype(np.int64)),
                   pos=int(pos), has_gauss=int(has_gauss),
                   cached_gaussian=float(cached_gaussian)),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Set the generators to ``state`` (from :func:`capture_rng_state`; tensors may sit on any
    device, as ``Runner.resume`` maps them).

    Raises:
        ValueError: ``state`` holds CUDA states for another number of devices than this
            process sees.
    """
    python = state['python']
    random.setstate((python['version'], tuple(python['internal'].tolist()),
                     python['gauss_next']))
    numpy = state['numpy']
    np.random.set_state((numpy['algorithm'], numpy['keys'].cpu().numpy().astype(np.uint32),
                         numpy['pos'], numpy['has_gauss'], numpy['cached_gaussian']))
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        if len(state['cuda']) != torch.cuda.device_count():
            raise ValueError(f'the checkpoint holds the states of {len(state["cuda"])} CUDA '
                             f'generators, this process sees {torch.cuda.device_count()} '
                             'devices.')
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the random-number states with every checkpoint and restore them on resume.

    Without it a resumed run reseeds the generators, so its random augmentation (and
    dropout, noise...) differs from the uninterrupted run's from the first resumed epoch.
    This hook adds ``rng_state`` (:func:`capture_rng_state`) to every checkpoint, and restores
    it before the first resumed epoch, after every other ``before_train`` hook (``LOWEST``).
    States are restored only when the run continues from exactly where the checkpoint was
    written (``load_from`` starts a new run and keeps its own seed).

    Validation draws random numbers too (torch's ``DataLoader`` draws one from torch's
    generator for every iterator) and runs *after* the checkpoint of its epoch is written, so
    the hook also puts the generators back after every validation during training: training
    then draws the same numbers whether or not, and how often, it validates.

    Exact for epoch-based loops. Limits: an iteration-based loop replays the batches before
    the checkpoint through the pipeline on resume (mmengine), which draws numbers again;
    dataloader workers with ``persistent_workers=True`` keep states of their own; in a
    distributed run the checkpoint holds rank 0's states, restored on every rank unless
    ``randomness.diff_rank_seed=True`` (then only on rank 0).
    ``tools/train.py`` adds this hook to every run.
    """

    priority = 'LOWEST'

    def __init__(self) -> None:
        self._loaded: Optional[Tuple[Optional[dict], Optional[int]]] = None
        self._before_val: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[RNG_STATE_KEY] = capture_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = (checkpoint.get(RNG_STATE_KEY), checkpoint.get('meta', {}).get('iter'))

    def before_train(self, runner) -> None:
        if self._loaded is None:
            return
        state, iteration = self._loaded
        self._loaded = None
        if runner.iter == 0 or iteration != runner.iter:
            return  # load_from: a new run from these weights, with its own seed
        if state is None:
            runner.logger.warning(
                'The resumed checkpoint holds no random-number states (written without '
                'mmkd.RNGStateHook): the generators keep their fresh seed, so random '
                'augmentation differs from the run that wrote it.')
            return
        if runner.cfg.get('randomness', {}).get('diff_rank_seed', False) and get_rank() != 0:
            return
        restore_rng_state(state)
        runner.logger.info(f'Restored the random-number states of iteration {iteration}.')

    def before_val(self, runner) -> None:
        self._before_val = capture_rng_state()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            restore_rng_state(self._before_val)
            self._before_val = None
