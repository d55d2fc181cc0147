"""``sum_of_squares``: the squared error's reduction in slices, equal to the formula and
without a temporary the size of the difference (the detection step's peak memory)."""
from typing import Callable

import pytest
import torch
from torch._C._autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from mmkd.models.losses.squared_error import (SUM_OF_SQUARES_SLICE, squared_error_sum,
                                              squared_error_sum_over_targets, sum_of_squares)


def peak_bytes_allocated(fn: Callable[[], object]) -> int:
    """The peak of the bytes held by tensors allocated during ``fn`` (CPU)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events()
                     if e.name() == '[memory]' and e.device_type() == DeviceType.CPU),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def test_one_slice_gives_the_formulas_bits():
    tensor = torch.randn(SUM_OF_SQUARES_SLICE, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sum_of_squares(tensor), tensor.square().sum())


def test_several_slices_equal_the_float64_sum():
    generator = torch.Generator().manual_seed(1)
    tensor = torch.randn(3, 256, 40, 40, generator=generator)  # 1.2M elements, 5 slices
    assert tensor.numel() > 4 * SUM_OF_SQUARES_SLICE
    exact = tensor.double().square().sum()
    result = sum_of_squares(tensor)
    assert result.dtype == torch.float32 and result.dim() == 0
    torch.testing.assert_close(result.double(), exact, rtol=1e-6, atol=0)


@pytest.mark.parametrize('dtype,value,tail', [(torch.bfloat16, 1.0, 500),
                                               (torch.float16, 0.0625, 100)], ids=str)
def test_half_precision_slices_are_summed_in_float32(dtype, value, tail):
    """A full first slice, then four slices whose squares add less than half a unit of the
    dtype's last place to the running total each: summed in the dtype they would vanish."""
    tensor = torch.zeros(5 * SUM_OF_SQUARES_SLICE, dtype=dtype)
    tensor[:SUM_OF_SQUARES_SLICE] = value
    for index in range(1, 5):
        start = index * SUM_OF_SQUARES_SLICE
        tensor[start:start + tail] = value
    result = sum_of_squares(tensor)
    assert result.dtype == dtype
    exact = tensor.double().square().sum()
    assert result.item() == exact.to(torch.float32).to(dtype).item()
    first_slice = tensor[:SUM_OF_SQUARES_SLICE].double().square().sum().to(dtype)
    assert result.item() != first_slice.item()  # what accumulating in the dtype gives


def test_a_channels_last_tensor_is_summed_without_a_copy():
    generator = torch.Generator().manual_seed(4)
    tensor = torch.randn(4, 256, 32, 32, generator=generator).contiguous(
        memory_format=torch.channels_last)
    assert not tensor.is_contiguous()
    peak = peak_bytes_allocated(lambda: sum_of_squares(tensor))
    assert peak <= 2 * 4 * SUM_OF_SQUARES_SLICE  # a slice's square, no copy of the 4 MiB
    torch.testing.assert_close(sum_of_squares(tensor).double(),
                               tensor.double().square().sum(), rtol=1e-6, atol=0)


def test_the_loss_keeps_no_second_tensor_of_the_difference_size():
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(4, 256, 32, 32, generator=generator, requires_grad=True)  # 4 MiB
    teacher = torch.randn(4, 256, 32, 32, generator=generator)
    size = student.numel() * student.element_size()
    peak = peak_bytes_allocated(lambda: squared_error_sum(student, teacher, partial=True))
    # the difference (kept for the backward) and the mask's two boolean maps (1/4 each); the
    # formula's square() was a second tensor of the difference's size (peak 2 x size)
    assert peak <= 1.5 * size + 2**16, (peak, size)
    targets = [teacher, teacher + 1]
    peak = peak_bytes_allocated(lambda: squared_error_sum_over_targets(
        student, targets, [1.0, 0.5], partial=True))
    # the accumulated gradient and one target's difference and masks
    assert peak <= 2.5 * size + 2**16, (peak, size)
