"""What OFD's connector kernels cost alone, per stage, on the CPU: time and peak memory.

For the connector shapes of the ``ofd-cls`` and ``ofd-det`` presets (student channels ->
teacher channels of ResNet-18 -> ResNet-50 at 64 px, batch 16, and ResNet-50 -> ResNet-101 at
256 px, batch 2), times in one process (``torch.utils.benchmark``, medians):

- the 1x1 convolution's forward + backward (input and weight gradients) and the peak tensor
  memory it allocates, at each thread count asked for (oneDNN's backward allocates more with
  more threads: the reason the detection memory ratio depends on the thread count);
- the connector BN in training mode, forward alone and forward + backward, in the stock
  (NCHW) layout and in channels-last, against one reduction pass over the same tensor
  (``x.sum(dim=(0, 2, 3))``) and one element-wise pass (``x * scale + shift``), the floor of
  what BN's statistics and normalisation must read and write.

Command (figures in docs/performance.md)::

    python benchmarks/connector_kernels.py [--threads 1 2] [--min-time 0.3]
"""
import argparse
import os.path as osp
import sys
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn
from torch.utils import benchmark

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _common as C  # noqa: E402

#: preset -> (batch, student channels, teacher channels, height = width) of each stage
CONNECTOR_SHAPES: Dict[str, List[Tuple[int, int, int, int]]] = {
    'ofd-cls': [(16, 64, 256, 16), (16, 128, 512, 8), (16, 256, 1024, 4), (16, 512, 2048, 2)],
    'ofd-det': [(2, 256, 256, 64), (2, 512, 512, 32), (2, 1024, 1024, 16),
                (2, 2048, 2048, 8)],
}


def median_ms(fn: Callable[[], object], min_time: float) -> float:
    timer = benchmark.Timer('fn()', globals=dict(fn=fn))
    return timer.blocked_autorange(min_run_time=min_time).median * 1e3


def conv_row(batch: int, c_in: int, c_out: int, size: int, min_time: float) -> str:
    """The 1x1 conv's forward + backward: time and peak allocated MiB."""
    conv = nn.Conv2d(c_in, c_out, 1, bias=False)
    feature = torch.randn(batch, c_in, size, size, requires_grad=True)

    def step() -> None:
        conv(feature).sum().backward()
        conv.weight.grad = feature.grad = None

    step()
    peak = C._cpu_peak_increase(step)
    weight_mib = conv.weight.numel() * 4 / 2**20
    return f'{median_ms(step, min_time):.2f} ms, {peak / 2**20:.1f} MiB (weight {weight_mib:.1f})'


def bn_row(batch: int, channels: int, size: int, min_time: float) -> str:
    """Training-mode BN: forward, forward + backward, channels-last, and the floors."""
    norm = nn.BatchNorm2d(channels)
    feature = torch.randn(batch, channels, size, size, requires_grad=True)
    grad = torch.randn_like(feature)
    feature_cl = feature.detach().contiguous(memory_format=torch.channels_last)
    feature_cl.requires_grad_()
    grad_cl = grad.contiguous(memory_format=torch.channels_last)
    scale = torch.randn(channels, 1, 1)
    shift = torch.randn(channels, 1, 1)

    def forward_backward(inputs: torch.Tensor, output_grad: torch.Tensor) -> None:
        norm(inputs).backward(output_grad)
        inputs.grad = norm.weight.grad = norm.bias.grad = None  # as in a step, no accumulation

    times = dict(
        forward=lambda: norm(feature),
        forward_backward=lambda: forward_backward(feature, grad),
        channels_last=lambda: forward_backward(feature_cl, grad_cl),
        channel_sum=lambda: feature.detach().sum(dim=(0, 2, 3)),
        affine_pass=lambda: torch.addcmul(shift, feature.detach(), scale))
    ms = {name: median_ms(fn, min_time) for name, fn in times.items()}
    return ' | '.join(f'{ms[name]:.2f}' for name in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', nargs='+', type=int, default=[1, 2])
    parser.add_argument('--min-time', type=float, default=0.3,
                        help='seconds of timing per measurement')
    args = parser.parse_args()
    C.setup(args.threads[0], 'cpu', False)
    print(f'command: python {" ".join(sys.argv)}')
    for threads in args.threads:
        torch.set_num_threads(threads)
        print('\n' + C.machine_info(torch.device('cpu'), False))
        print('| preset | connector (B, C_in -> C_out, HxW) | 1x1 conv fwd+bwd | BN fwd ms | '
              'BN fwd+bwd ms | BN fwd+bwd channels-last ms | one channel-sum pass ms | '
              'one affine pass ms |\n|---|---|---|---|---|---|---|---|')
        for preset, shapes in CONNECTOR_SHAPES.items():
            for batch, c_in, c_out, size in shapes:
                print(f'| {preset} | {batch}, {c_in} -> {c_out}, {size}x{size} | '
                      f'{conv_row(batch, c_in, c_out, size, args.min_time)} | '
                      f'{bn_row(batch, c_out, size, args.min_time)} |', flush=True)


if __name__ == '__main__':
    main()
