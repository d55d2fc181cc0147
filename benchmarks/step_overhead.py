"""What a distillation step costs over its limit, the student's step plus the teacher's forward.

For one distillation config (a ``SingleTeacherDistill`` model), in one process, on the same
batches, after warm-up, in interleaved rounds::

    (a) the student's plain training step: a separately built copy of the student (no hooks),
        same weights, same optimizer (SGD, lr 0.01, momentum 0.9, wd 1e-4), ``train_step``;
    (b) the teacher's forward up to its last tap under ``no_grad``: a separately built copy of
        the teacher (same weights, same BN mode) whose forward is stopped by one plain forward
        hook on the last tapped module (the module that owns the method, for a method tap; the
        whole forward for a function tap), on the preprocessed batch;
    (c) the full distillation step: the algorithm's ``train_step``;
    (d) the connectors' and losses' own compute, on features recorded in (c) (detached copies,
        student features as leaves): connector and loss forward, backward and the optimizer
        step of the connectors' parameters.

and prints ``R_overhead = c / (a + b)`` (1.00 is the limit), the toolbox's own overhead
``(c - a - b - d) / (a + b)``, the peak memory ratio ``mem(c) / (mem(a) + mem(b))`` (peak
increase of tensor memory during one call; see ``_common.py`` for how it is measured on the CPU)
and the memory beyond the connectors' and losses' own, ``(mem(c) - mem(a) - mem(b) - mem(d)) /
(mem(a) + mem(b))`` (peaks of separate calls do not add up, so this is an upper bound).

Teachers are random weights saved to a temporary checkpoint (timing does not depend on the
values), whose BN layers then get the running statistics of the first batch (``_common.py``,
``calibrate_teacher_bn``: without them a random R-101's features grow to ~1e6 and the student
diverges to NaN within two steps); pass ``--teacher-ckpt`` to use a trained one for a single
config.

Usage::

    python benchmarks/step_overhead.py                      # every preset
    python benchmarks/step_overhead.py --preset ofd-cls fitnets-det
    python benchmarks/step_overhead.py configs/ofd/<config>.py --size 64 --batch-size 16
    python benchmarks/step_overhead.py --preset ofd-cls --device cuda --amp
    python benchmarks/step_overhead.py --preset ofd-det --device cuda --size 800x1333 --batch-size 2

Runs on the CPU and on CUDA (``--device cuda``, ``--amp`` for float16 autocast).
``--profile-ops N`` shows where the time goes: the operators whose self time in (c) differs
most from their time in (a) + (b) + (d) (torch.profiler, N interleaved rounds of two calls).
"""
import argparse
import contextlib
import copy
import os.path as osp
import sys
import tempfile
import time
from collections import Counter
from typing import Callable, Dict, Iterator, List, Optional

import torch
import torch.nn as nn

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _common as C  # noqa: E402


# -- (d): connectors and losses on recorded features -----------------------------------------
@contextlib.contextmanager
def records_kept(algorithm: nn.Module) -> Iterator[None]:
    """Within the block, the distiller does not release its records after its losses (it
    does in training), so that they can be read after a step."""
    managers = (algorithm.distiller.teacher_recorders, algorithm.distiller.student_recorders)
    for manager in managers:
        manager.release = lambda: None
    try:
        yield
    finally:
        for manager in managers:
            del manager.release


# -- levers: the same config with an option, timed beside the default step -------------------
#: ``--levers`` names -> algorithm options. Join names with ``+`` to combine them.
LEVERS = {
    'bf16-teacher': dict(teacher_dtype='bf16'),
    'fp16-teacher': dict(teacher_dtype='fp16'),
    'channels-last': dict(memory_format='channels_last'),
    'inference-teacher': dict(teacher_inference_mode=True),
    'compile': {},  # mmengine's compile=True: torch.compile(model.train_step)
    'eager-loss': {},  # the previous OFD arithmetic (see eager_loss_step)
    'recompute-connectors': {},  # ConvBNConnector(recompute=True), see with_recomputed_connectors
}


def with_recomputed_connectors(model_cfg: dict) -> dict:
    """``model_cfg`` with ``recompute=True`` on every ``ConvBNConnector`` of its tap pairs."""
    model_cfg = copy.deepcopy(model_cfg)
    changed = 0
    for pair in model_cfg['distiller'].get('tap_pairs', []):
        connectors = pair.get('student_connector')
        for connector in connectors if isinstance(connectors, (list, tuple)) else [connectors]:
            if isinstance(connector, dict) and str(connector.get('type', '')).split('.')[-1] \
                    == 'ConvBNConnector':
                connector['recompute'] = True
                changed += 1
    if not changed:
        raise SystemExit('recompute-connectors: the config has no ConvBNConnector among its '
                         'tap_pairs\' student connectors; the lever would change nothing.')
    return model_cfg


def lever_model_cfg(model_cfg: dict, lever: str) -> dict:
    """``model_cfg`` with the options of a ``+``-joined lever name."""
    options = {}
    for part in lever.split('+'):
        if part not in LEVERS:
            raise SystemExit(f'unknown lever {part!r}; choose from {sorted(LEVERS)}, joined '
                             'with + to combine.')
        options.update(LEVERS[part])
    if 'recompute-connectors' in lever.split('+'):
        model_cfg = with_recomputed_connectors(model_cfg)
    return dict(model_cfg, **options)


def eager_loss_step(algorithm: nn.Module, step: Callable[[int], object]
                    ) -> Callable[[int], object]:
    """``step`` with OFD's previous arithmetic: the eager formula (masked square and sum,
    whose backward keeps the difference and the mask) and the teacher's records kept until
    the next step (the distiller no longer holding the connector outputs across its losses
    is not undone)."""
    from profile_method import eager_ofd_loss

    def run(index: int) -> object:
        with eager_ofd_loss(True), records_kept(algorithm):
            return step(index)
    return run


def lever_step(lever: str, algorithm: nn.Module, amp: bool, batches: List[dict]
               ) -> Callable[[int], object]:
    """The training step of a lever's algorithm (compiled as mmengine's ``compile=True``
    compiles it, for ``compile``); the first call of a compiled step compiles it."""
    parts = lever.split('+')
    if 'compile' in parts:
        algorithm.train_step = torch.compile(algorithm.train_step)
    step = C.train_step_fn(algorithm, C.optim_wrapper_for(algorithm, amp), batches)
    return eager_loss_step(algorithm, step) if 'eager-loss' in parts else step


def connector_loss_fn(algorithm: nn.Module, device: torch.device, amp: bool,
                      step: Callable[[int], object]) -> Callable[[int], None]:
    """(d): the distiller's connectors and losses, forward + backward + update of the
    connectors, on the features recorded in one algorithm step (``step(0)``, run here)."""
    distiller = algorithm.distiller
    with records_kept(algorithm):
        step(0)
    recorded = {}
    for loss_name, specs in distiller.loss_forward_mappings.items():
        for arg, spec in specs.items():
            manager = (distiller.student_recorders if spec.from_student
                       else distiller.teacher_recorders)
            value = manager.get_record_data(spec.recorder, spec.data_idx)
            recorded[loss_name, arg] = value.detach().clone()
    trainable = [p for p in distiller.parameters() if p.requires_grad]
    optim_wrapper = C.optim_wrapper_for(distiller, amp) if trainable else None

    def step(index: int) -> None:
        total = 0
        with C.autocast(device, amp):
            for loss_name, specs in distiller.loss_forward_mappings.items():
                kwargs = {}
                for arg, spec in specs.items():
                    value = recorded[loss_name, arg]
                    value = value.detach().requires_grad_(spec.from_student)
                    for connector in spec.connector:
                        value = distiller.connectors[connector](value)
                    kwargs[arg] = value
                total = total + distiller.distill_losses[loss_name](**kwargs)
        if optim_wrapper is not None:
            optim_wrapper.update_params(total)
        else:
            total.backward()
    return step


# -- where the time goes: per-op comparison ------------------------------------------------
def op_times(fns: Dict[str, Callable[[int], object]], rounds: int) -> Dict[str, Counter]:
    """Self CPU time per operator (ms per call) of each step function, from torch.profiler,
    profiled in interleaved rounds of two calls."""
    from torch.profiler import ProfilerActivity, profile
    totals = {name: Counter() for name in fns}
    for index in range(rounds):
        for name, fn in fns.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn(2 * index)
                fn(2 * index + 1)
            for event in prof.key_averages():
                totals[name][event.key] += event.self_cpu_time_total / 1e3 / (2 * rounds)
    return totals


def print_op_diff(totals: Dict[str, Counter], top: int = 12) -> None:
    """The operators whose time in (c) differs most from their time in (a) + (b) + (d)."""
    limit = totals['a'] + totals['b'] + totals['d']
    diff = {key: totals['c'][key] - limit[key] for key in set(totals['c']) | set(limit)}
    step = {name: sum(t.values()) for name, t in totals.items()}
    print(f'per-op self time (ms per step, torch.profiler): a {step["a"]:.1f}, b {step["b"]:.1f},'
          f' c {step["c"]:.1f}, d {step["d"]:.1f}; c - (a + b + d) = '
          f'{step["c"] - step["a"] - step["b"] - step["d"]:+.1f} ms')
    for key in sorted(diff, key=lambda k: -abs(diff[k]))[:top]:
        print(f'  {diff[key]:+8.2f} ms  {key} (c {totals["c"][key]:.2f}, a+b+d {limit[key]:.2f})')


# -- memory held by the recorders ------------------------------------------------------------
def _recorders(algorithm: nn.Module) -> list:
    distiller = algorithm.distiller
    return [*distiller.student_recorders.recorders.values(),
            *distiller.teacher_recorders.recorders.values()]


def recorded_bytes(algorithm: nn.Module) -> int:
    """Bytes of the tensors the recorders still reference after a step (kept alive until the
    next step starts)."""
    storages = {}
    for recorder in _recorders(algorithm):
        for index in range(recorder.num_records):
            value = recorder.get_record_data(index)
            for tensor in (value if isinstance(value, (list, tuple)) else [value]):
                if isinstance(tensor, torch.Tensor):
                    storage = tensor.untyped_storage()
                    storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def measure_without_held_records(algorithm: nn.Module, step: Callable[[int], object],
                                 device: torch.device) -> int:
    """Peak increase of one distillation step, the previous step's records dropped first so
    that the CPU and CUDA measurements start from the same state."""
    for recorder in _recorders(algorithm):
        recorder.start()
        recorder.stop()
    return C.peak_memory_increase(lambda: step(0), device)


# -- one config -------------------------------------------------------------------------------
def wait_for_low_load(max_load: float, max_wait_s: float) -> None:
    start = time.time()
    while C.load_1min() > max_load and time.time() - start < max_wait_s:
        print(f'  load(1 min) {C.load_1min():.2f} > {max_load}: waiting...', flush=True)
        time.sleep(30)


def run_config(name: str, config: str, size: C.Size, batch_size: int, rounds: int,
               args: argparse.Namespace, device: torch.device) -> Dict[str, float]:
    model_cfg = C.load_model_cfg(config)
    print(f'\n== {name}: {osp.relpath(config, C.REPO)} ({C.size_text(size)}, batch '
          f'{batch_size}) ==', flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.teacher_ckpt or C.save_random_checkpoint(
            model_cfg['teacher'], osp.join(tmp, 'teacher.pth'))
        algorithm = C.build_mmkd_algorithm(model_cfg, ckpt, size, device)
        variants = {lever: C.build_mmkd_algorithm(lever_model_cfg(model_cfg, lever), ckpt,
                                                  size, device) for lever in args.levers}
    task = C.task_of(algorithm.student)
    batches = [C.make_batch(task, batch_size, size, C.num_classes_of(algorithm.student, task),
                            seed) for seed in range(args.num_batches)]
    preprocessed = [algorithm.data_preprocessor(copy.deepcopy(b), True) for b in batches]
    if not args.teacher_ckpt:  # a random teacher: BN statistics of the data, as if trained
        C.calibrate_teacher_bn(algorithm, preprocessed[0])
    student = C.plain_student(model_cfg, algorithm)
    teacher = C.plain_teacher(model_cfg, algorithm)
    stop_at = C.last_tap_point(teacher, algorithm, preprocessed[0]['inputs'],
                               preprocessed[0]['data_samples'])
    print('(b) stops the teacher ' + (f'{"before" if stop_at[1] == "pre" else "after"} '
                                      f'{stop_at[0]}' if stop_at else 'at its end'))

    step_a = C.train_step_fn(student, C.optim_wrapper_for(student, args.amp), batches)
    step_b = C.teacher_forward_fn(teacher, stop_at, device, args.amp, preprocessed)
    step_c = C.train_step_fn(algorithm, C.optim_wrapper_for(algorithm, args.amp), batches)
    step_d = connector_loss_fn(algorithm, device, args.amp, step_c)
    lever_steps, first_calls, loss_diffs = {}, {}, {}
    for lever, variant in variants.items():
        variant.load_state_dict(algorithm.state_dict())  # the same weights and BN statistics
        reference = first_losses(algorithm, preprocessed[0])
        lever_steps[lever] = lever_step(lever, variant, args.amp, batches)
        log_vars = {}
        first_calls[lever] = [C.time_call(lambda: log_vars.setdefault(i, lever_steps[lever](i)),
                                          device) for i in range(2)]  # compiling, if compiled
        loss_diffs[lever] = max(abs(float(log_vars[0][key]) - value) / max(abs(value), 1e-12)
                                for key, value in reference.items())

    wait_for_low_load(args.max_load, args.max_wait)
    load_before = C.load_1min()
    print(C.machine_info(device, args.amp), flush=True)
    times = C.interleaved_times(dict(a=step_a, b=step_b, c=step_c, d=step_d, **lever_steps),
                                device, args.warmup, rounds)
    memory = {key: max(C.peak_memory_increase(lambda: fn(0), device) for _ in range(2))
              for key, fn in dict(a=step_a, b=step_b, d=step_d).items()}
    step_c(0)
    held = recorded_bytes(algorithm)
    memory['c'] = max(measure_without_held_records(algorithm, step_c, device) for _ in range(2))
    for lever, variant in variants.items():
        memory[lever] = max(measure_without_held_records(variant, lever_steps[lever], device)
                            for _ in range(2))
    a, b, c, d = (C.median(times[key]) for key in 'abcd')
    paired = [tc - ta - tb - td for ta, tb, tc, td in zip(*(times[key] for key in 'abcd'))]
    result = dict(a=a, b=b, c=c, d=d, r=c / (a + b), own=(c - a - b - d) / (a + b),
                  own_paired=C.median(paired) / (a + b),
                  mem_a=memory['a'], mem_b=memory['b'], mem_c=memory['c'], mem_d=memory['d'],
                  mem_ratio=memory['c'] / (memory['a'] + memory['b']),
                  mem_own=(memory['c'] - memory['a'] - memory['b'] - memory['d'])
                  / (memory['a'] + memory['b']),
                  held=held, load=(load_before + C.load_1min()) / 2,
                  levers={lever: dict(lever_result(times[lever], times['c'], first_calls[lever],
                                                   memory[lever], memory['a'] + memory['b'],
                                                   a + b), loss_diff=loss_diffs[lever])
                          for lever in variants})
    print(f'(a) student step           {C.spread(times["a"])} s')
    print(f'(b) teacher to last tap    {C.spread(times["b"])} s')
    print(f'(c) distillation step      {C.spread(times["c"])} s')
    print(f'(d) connectors + losses    {C.spread(times["d"])} s')
    print(f'R_overhead = c / (a + b)   {result["r"]:.3f}')
    print(f'toolbox own (c-a-b-d)/(a+b) {100 * result["own"]:+.1f} % (per-round median of '
          f'c-a-b-d: {100 * result["own_paired"]:+.1f} %)')
    print(f'peak memory a {C.mib(memory["a"])}, b {C.mib(memory["b"])}, c {C.mib(memory["c"])}'
          f' (d {C.mib(memory["d"])})'
          f' -> mem(c) / (mem(a) + mem(b)) {result["mem_ratio"]:.3f}; the recorders hold '
          f'{C.mib(held)} from one step to the next')
    print(f'memory beyond connectors + losses (mem(c)-mem(a)-mem(b)-mem(d))/(mem(a)+mem(b)) '
          f'{100 * result["mem_own"]:+.1f} %')
    for lever, r in result['levers'].items():
        print(f'(c) with {lever:<20} {C.spread(times[lever])} s: x{r["vs_c"]:.3f} of (c) '
              f'(per-round median x{r["vs_c_paired"]:.3f}), R {r["r"]:.3f}, mem '
              f'{C.mib(r["mem"])} (ratio {r["mem_ratio"]:.3f}); first two calls '
              f'{r["first"][0]:.1f} s, {r["first"][1]:.1f} s; first-step losses differ from '
              f'the default\'s by at most {r["loss_diff"]:.1e} (relative)')
    if args.profile_ops:
        print_op_diff(op_times(dict(a=step_a, b=step_b, c=step_c, d=step_d), args.profile_ops))
    print(f'load(1 min) after: {C.load_1min():.2f}', flush=True)
    algorithm.remove_recorders()
    return result


def first_losses(algorithm: nn.Module, data: dict) -> Dict[str, float]:
    """The losses of a step on the preprocessed batch ``data`` (as its ``train_step`` logs
    them, before the update), from the algorithm's current state."""
    with torch.no_grad():
        losses = algorithm.loss(data['inputs'], data['data_samples'])
    # mmdet's heads give some losses per feature level, as a list of tensors
    values = {name: float(sum(value) if isinstance(value, (list, tuple)) else value)
              for name, value in losses.items()}
    values['loss'] = sum(v for k, v in values.items() if 'loss' in k)  # as parse_losses
    return values


def lever_result(times: List[float], base: List[float], first: List[float], memory: int,
                 limit_memory: int, limit_time: float) -> Dict[str, object]:
    """A lever's figures: its step against (c), paired by round and from the medians."""
    median = C.median(times)
    return dict(c=median, vs_c=median / C.median(base),
                vs_c_paired=C.median([t / tc for t, tc in zip(times, base)]),
                r=median / limit_time, mem=memory, mem_ratio=memory / limit_memory,
                first=first)


def lever_summary(results: Dict[str, Dict[str, float]]) -> str:
    rows = ['| config | lever | (c) s | x of default (c), medians | x, per-round median | '
            'R_overhead | mem ratio | first two calls s | first-step losses, max rel. diff |',
            '|---|---|---|---|---|---|---|---|---|']
    for name, r in results.items():
        rows.append(f'| {name} | default | {r["c"]:.3f} | 1 | 1 | {r["r"]:.3f} | '
                    f'{r["mem_ratio"]:.3f} | | |')
        for lever, v in r.get('levers', {}).items():
            rows.append(f'| {name} | {lever} | {v["c"]:.3f} | {v["vs_c"]:.3f} | '
                        f'{v["vs_c_paired"]:.3f} | {v["r"]:.3f} | {v["mem_ratio"]:.3f} | '
                        f'{v["first"][0]:.1f}, {v["first"][1]:.1f} | {v["loss_diff"]:.1e} |')
    return '\n'.join(rows)


def summary(results: Dict[str, Dict[str, float]]) -> str:
    rows = ['| config | (a) student s | (b) teacher s | (c) distill s | (d) conn.+loss s '
            '| R_overhead | toolbox own | mem ratio | mem beyond conn.+loss | load |',
            '|---|---|---|---|---|---|---|---|---|---|']
    for name, r in results.items():
        rows.append(f'| {name} | {r["a"]:.3f} | {r["b"]:.3f} | {r["c"]:.3f} | {r["d"]:.3f} | '
                    f'{r["r"]:.3f} | {100 * r["own"]:+.1f} % | {r["mem_ratio"]:.3f} | '
                    f'{100 * r["mem_own"]:+.1f} % | {r["load"]:.2f} |')
    return '\n'.join(rows)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', nargs='?', help='a distillation config (instead of presets)')
    parser.add_argument('--preset', nargs='+', choices=sorted(C.PRESETS),
                        help='presets to run (default: all whose config exists)')
    parser.add_argument('--size', type=C.parse_size,
                        help='input size, H or HxW (default: the preset\'s, or 64)')
    parser.add_argument('--batch-size', type=int,
                        help='batch size (default: the preset\'s, or 16)')
    parser.add_argument('--rounds', type=int, help='timed rounds (default: per preset, 20)')
    parser.add_argument('--warmup', type=int, default=3, help='untimed rounds first')
    parser.add_argument('--num-batches', type=int, default=4, help='distinct batches cycled')
    parser.add_argument('--threads', type=int, default=2, help='torch intra-op threads')
    parser.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'auto'")
    parser.add_argument('--amp', action='store_true', help='float16 autocast (CUDA)')
    parser.add_argument('--clock', choices=sorted(C.CLOCKS), default='wall',
                        help="'wall' or 'cpu' (process CPU time, for a shared machine; with "
                             "--threads 1)")
    parser.add_argument('--profile-ops', type=int, default=0, metavar='ROUNDS',
                        help='also compare per-op times of (c) and (a)+(b)+(d) (torch.profiler)')
    parser.add_argument('--levers', nargs='+', default=[], metavar='LEVER',
                        help=f'also time the step with these options, interleaved with the '
                             f'default one: {", ".join(LEVERS)}; join with + to combine '
                             '(e.g. bf16-teacher+channels-last+compile)')
    parser.add_argument('--teacher-ckpt', help='a trained teacher (one config only)')
    parser.add_argument('--max-load', type=float, default=float('inf'),
                        help='wait until the 1-minute load is below this before timing')
    parser.add_argument('--max-wait', type=float, default=1800, help='seconds to wait at most')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    """Run as the command line ``argv`` (default ``sys.argv[1:]``) asks; returns each
    config's figures."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device = C.setup(args.threads, args.device, args.amp)
    C.use_clock(args.clock, device)
    if args.config:
        jobs = {osp.splitext(osp.basename(args.config))[0]:
                (args.config, args.size or 64, args.batch_size or 16, args.rounds or 20)}
    else:
        names = args.preset or [n for n, p in C.PRESETS.items()
                                if osp.isfile(osp.join(C.REPO, p[0]))]
        jobs = {}
        for name in names:
            config, size, batch_size, rounds = C.PRESETS[name]
            jobs[name] = (osp.join(C.REPO, config), args.size or size,
                          args.batch_size or batch_size, args.rounds or rounds)
        if args.teacher_ckpt and len(jobs) > 1:
            raise SystemExit('--teacher-ckpt fits one config: give one --preset or a config.')
    print(f'command: {" ".join([osp.basename(sys.executable), __file__, *argv])}')
    results = {name: run_config(name, *job, args, device) for name, job in jobs.items()}
    print('\n' + C.machine_info(device, args.amp))
    print(summary(results))
    if args.levers:
        print('\n' + lever_summary(results))
    return results


if __name__ == '__main__':
    main()
