"""Compatibility with the packages around mmkd, applied once by ``import mmkd``.

mmpretrain 1.2.0 next to transformers >= 5
------------------------------------------
mmpretrain decides at import whether to load its multimodal models (BLIP, BLIP-2, OFA, LLaVA,
...): ``mmpretrain.utils.dependency.WITH_MULTIMODAL`` is true when the *distributions*
``pycocotools`` and ``transformers>=4.28.0`` are installed (it reads their package metadata;
transformers is not imported to decide). ``mmpretrain.models`` and ``mmpretrain.datasets`` read
that flag when they are imported; with it true they import the multimodal modules and
``mmpretrain.models.utils.huggingface``, which imports transformers eagerly.

Those modules were written for transformers 4. transformers 5 removed names they import
(``transformers.modeling_utils.apply_chunking_to_forward``, ``find_pruneable_heads_and_indices``,
``prune_linear_layer``); BLIP's language model catches the ImportError, sets the base class to
``None`` and fails with ``TypeError: NoneType takes no arguments``, so ``import mmpretrain.models``
fails — every mmpretrain model with it, and mmkd, which builds on them. GPU images commonly ship
transformers 5 (and mmdet pulls in pycocotools).

:func:`apply_compat_shims` therefore sets ``WITH_MULTIMODAL = False`` when the installed
transformers is 5 or newer, before ``mmpretrain.models`` is imported: mmpretrain behaves exactly as
without transformers (it does not import it, and registers placeholders for its multimodal
models). The placeholders' message is replaced by one naming the conflict and its fix
(``pip install "transformers<5"``). mmkd uses none of those models. With transformers 4, or
none, nothing is changed. ``import mmkd`` before ``mmpretrain.models`` is all it takes; the tools
and mmkd's own modules do that.

mmcv's ops under bfloat16 autocast
----------------------------------
Under autocast, a detector's convolutions give bfloat16 (or float16) features, and mmdet hands
them to mmcv's compiled ops: ``sigmoid_focal_loss`` (RetinaNet's loss on CUDA), ``roi_align``
(Faster R-CNN's RoI extractor; mmdet casts the RoIs to the features' dtype), ``nms`` (proposals
and predictions; on the CPU the boxes are bfloat16 too, since mmdet makes its anchors in the
dtype of the scores). Those kernels dispatch on float32, float64 and float16 only
(``AT_DISPATCH_FLOATING_TYPES_AND_HALF``; the CPU ``nms`` reads float32 alone), so bfloat16
AMP stops with ``NotImplementedError: "roi_align_forward_cuda_kernel" not implemented for
'BFloat16'`` or, on the CPU, ``expected scalar type Float but found BFloat16``.

:func:`make_mmcv_ops_autocast_safe` wraps the ``forward`` (and ``backward``) of the autograd
Functions of :data:`MMCV_AUTOCAST_OPS` with the semantics of ``torch.amp.custom_fwd(
cast_inputs=torch.float32)``, narrowed to what the kernels lack: when autocast is on for the
device of the op's inputs *and* one of its floating-point tensor inputs has a dtype the op's
kernel for that device does not take, every floating-point tensor input is cast to float32 and
the op runs with autocast off (its backward too, on float32 gradients). Unlike ``custom_fwd``,
the floating-point outputs are cast back to that lacking dtype, as a bfloat16 kernel would
return them (mmdet writes ``roi_align``'s output into a tensor of the features' dtype);
autograd casts the gradient of each input back to its dtype. Everything else passes through
untouched: without autocast (float32 training) and with inputs the kernels take (float16 AMP on
CUDA) the ops run exactly as before, bit for bit.

The classes themselves are patched, not mmcv's module attributes: ``roi_align =
RoIAlignFunction.apply`` and mmdet's ``from mmcv.ops import sigmoid_focal_loss`` were bound at
import, and ``apply`` looks ``forward`` up on the class at every call. The op computes in
float32 on values already rounded to bfloat16 upstream (the features; mmdet's RoIs, and on the
CPU its boxes): bfloat16 keeps 8 significant bits, so coordinates between 512 and 1024 px are
multiples of 4 px. Float32 or float16 AMP avoid that rounding.
"""
import functools
import importlib
import importlib.metadata
import re
import sys
from typing import Any, Callable, Dict, FrozenSet, Optional, Tuple

import torch

#: The first transformers major version that mmpretrain 1.2.0's multimodal models fail with.
FIRST_INCOMPATIBLE_TRANSFORMERS = 5


def installed_version(distribution: str) -> Optional[str]:
    """The version of an installed distribution (from its metadata, as mmpretrain reads it), or
    ``None`` when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def major_version(version: str) -> int:
    """``'5.17.0'`` -> 5, ``'5.0.0rc1'`` -> 5 (0 when the version does not start with digits)."""
    match = re.match(r'\s*(\d+)', version)
    return int(match.group(1)) if match else 0


def _placeholder_registrar(transformers_version: str):
    """A stand-in for ``mmpretrain.utils.dependency.register_multimodal_placeholder`` whose
    placeholders raise an ImportError naming the transformers conflict."""

    def register_multimodal_placeholder(names, registry) -> None:
        for name in names:

            def ask_downgrade(*args, name: str = name, **kwargs):
                raise ImportError(
                    f'{name} is one of mmpretrain 1.2.0\'s multimodal models, which do not work '
                    f'with the installed transformers {transformers_version}; mmkd switched them '
                    'off so that the rest of mmpretrain imports (mmkd/utils/compat.py). To use '
                    'them: pip install "transformers<5"')

            registry.register_module(name=name, module=ask_downgrade)

    return register_multimodal_placeholder


def disable_mmpretrain_multimodal_for_new_transformers() -> bool:
    """Switch mmpretrain's multimodal models off when transformers >= 5 is installed.

    Returns:
        Whether it switched them off. False when transformers is absent or older than 5, and
        when ``mmpretrain.models`` was imported already (too late to change; if that import
        succeeded, nothing needs changing).
    """
    version = installed_version('transformers')
    if version is None or major_version(version) < FIRST_INCOMPATIBLE_TRANSFORMERS:
        return False
    if 'mmpretrain.models' in sys.modules or installed_version('mmpretrain') is None:
        return False
    # Imports mmpretrain's package and its utils, not mmpretrain.models.
    from mmpretrain.utils import dependency
    dependency.WITH_MULTIMODAL = False
    dependency.register_multimodal_placeholder = _placeholder_registrar(version)
    return True


# -- mmcv's ops under autocast ---------------------------------------------------------------
_F16, _F32, _F64 = torch.float16, torch.float32, torch.float64
#: What mmcv 2.1's CUDA kernels dispatch on (``AT_DISPATCH_FLOATING_TYPES_AND_HALF``).
_CUDA_KERNEL_DTYPES = frozenset({_F16, _F32, _F64})

KernelDtypes = Dict[str, FrozenSet[torch.dtype]]

#: (module, autograd Function, device type -> the input dtypes its kernel takes): mmcv's ops
#: that mmdet's detectors call and that have no bfloat16 kernel. The CPU ``nms`` reads its boxes
#: as float32; the focal losses and ``roi_pool`` have no CPU kernel (mmdet computes the focal
#: loss in Python on the CPU).
MMCV_AUTOCAST_OPS: Tuple[Tuple[str, str, KernelDtypes], ...] = (
    ('mmcv.ops.nms', 'NMSop', dict(cpu=frozenset({_F32}), cuda=_CUDA_KERNEL_DTYPES)),
    ('mmcv.ops.roi_align', 'RoIAlignFunction',
     dict(cpu=frozenset({_F16, _F32, _F64}), cuda=_CUDA_KERNEL_DTYPES)),
    ('mmcv.ops.roi_pool', 'RoIPoolFunction', dict(cuda=_CUDA_KERNEL_DTYPES)),
    ('mmcv.ops.focal_loss', 'SigmoidFocalLossFunction', dict(cuda=_CUDA_KERNEL_DTYPES)),
    ('mmcv.ops.focal_loss', 'SoftmaxFocalLossFunction', dict(cuda=_CUDA_KERNEL_DTYPES)),
    ('mmcv.ops.deform_conv', 'DeformConv2dFunction',
     dict(cpu=frozenset({_F16, _F32, _F64}), cuda=_CUDA_KERNEL_DTYPES)),
    ('mmcv.ops.modulated_deform_conv', 'ModulatedDeformConv2dFunction',
     dict(cpu=frozenset({_F16, _F32, _F64}), cuda=_CUDA_KERNEL_DTYPES)),
)
#: Set on the autograd context when the forward ran in float32 without autocast: the device type.
_CTX_FLAG = 'mmkd_autocast_off'


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``'cpu'``, ``'cuda'``) in this thread."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        if device_type == 'cpu':
            return torch.is_autocast_cpu_enabled()
        return device_type == 'cuda' and torch.is_autocast_enabled()


def float32_needed(args: Tuple[Any, ...], kernel_dtypes: KernelDtypes
                   ) -> Optional[Tuple[str, torch.dtype]]:
    """Whether these op inputs must run in float32: ``(device type, the first input dtype the
    kernel lacks)``, or ``None``.

    Float32 is needed when autocast is on for the device of the first floating-point tensor and
    some floating-point tensor has a dtype the op's kernel for that device does not take.
    """
    tensors = [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
    if not tensors:
        return None
    device_type = tensors[0].device.type
    taken = kernel_dtypes.get(device_type)
    if taken is None or not autocast_enabled(device_type):
        return None
    lacking = next((tensor.dtype for tensor in tensors if tensor.dtype not in taken), None)
    return None if lacking is None else (device_type, lacking)


def _cast_floating(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with its floating-point tensors (also inside a tuple or list) cast to
    ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast_floating(item, dtype) for item in value)
    return value


def autocast_safe_forward(forward: Callable, kernel_dtypes: KernelDtypes) -> Callable:
    """``forward(ctx, *args)`` of an autograd Function, as it is, or, when
    :func:`float32_needed` says so, on float32 inputs with autocast off, its floating-point
    outputs cast to the input dtype the kernel lacks (what a kernel of that dtype would return:
    mmdet writes ``roi_align``'s output into a tensor of the features' dtype)."""

    @functools.wraps(forward)
    def wrapped(ctx, *args, **kwargs):
        needed = float32_needed(args + tuple(kwargs.values()), kernel_dtypes)
        if needed is None:
            return forward(ctx, *args, **kwargs)
        device_type, lacking = needed
        setattr(ctx, _CTX_FLAG, device_type)
        args = _cast_floating(args, torch.float32)
        kwargs = {key: _cast_floating(value, torch.float32) for key, value in kwargs.items()}
        with torch.autocast(device_type, enabled=False):
            return _cast_floating(forward(ctx, *args, **kwargs), lacking)

    wrapped.mmkd_kernel_dtypes = kernel_dtypes
    return wrapped


def autocast_safe_backward(backward: Callable) -> Callable:
    """``backward(ctx, *grads)``; when the forward ran in float32, on float32 gradients with
    autocast off (autograd casts the gradients it returns to each input's dtype)."""

    @functools.wraps(backward)
    def wrapped(ctx, *grads):
        device_type = getattr(ctx, _CTX_FLAG, None)
        if device_type is None:
            return backward(ctx, *grads)
        with torch.autocast(device_type, enabled=False):
            return backward(ctx, *_cast_floating(grads, torch.float32))

    return wrapped


def make_autocast_safe(function: type, kernel_dtypes: KernelDtypes) -> bool:
    """Wrap the ``forward`` and ``backward`` of the autograd Function ``function`` (see the
    module docstring). Idempotent; returns whether it wrapped them now."""
    if hasattr(function.forward, 'mmkd_kernel_dtypes'):
        return False
    function.forward = staticmethod(autocast_safe_forward(function.forward, kernel_dtypes))
    if 'backward' in vars(function):
        function.backward = staticmethod(autocast_safe_backward(function.backward))
    return True


def make_mmcv_ops_autocast_safe() -> bool:
    """Make the ops of :data:`MMCV_AUTOCAST_OPS` run in float32 under autocast where their
    kernels lack the autocast dtype.

    Returns:
        False when mmcv or its compiled ops are not installed (nothing to patch), else True.
    """
    if installed_version('mmcv') is None:
        return False
    try:
        modules = {name: importlib.import_module(name) for name, _, _ in MMCV_AUTOCAST_OPS}
    except ImportError:  # mmcv without its compiled ops (mmcv-lite)
        return False
    for module, name, kernel_dtypes in MMCV_AUTOCAST_OPS:
        make_autocast_safe(getattr(modules[module], name), kernel_dtypes)
    return True


def apply_compat_shims() -> None:
    """Apply every shim of this module (``import mmkd`` calls it once)."""
    disable_mmpretrain_multimodal_for_new_transformers()
    make_mmcv_ops_autocast_safe()
