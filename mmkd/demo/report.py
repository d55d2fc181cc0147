"""The digits comparison as a reader sees it: the markdown table (mean ± std top-1, gain over the
baseline paired by seed), ``results.md``/``results.json``, and the plot of the validation
top-1 over epochs."""
import json
import os
import os.path as osp
import statistics
from dataclasses import asdict
from typing import Dict, List, Optional, Sequence, Tuple

from .digits import DIGITS_ENTRIES, TEACHER, Comparison


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summary_rows(comparison: Comparison) -> List[dict]:
    """One row per entry: top-1 mean, std, per-seed values and the gain over its baseline."""
    teacher = comparison.teacher
    rows = [dict(name=TEACHER, config=teacher.config, seeds=[teacher.seed],
                 top1=[teacher.top1], mean=teacher.top1, std=0.0, baseline=None, gain=None)]
    by_seed = {}
    for name in dict.fromkeys(run.name for run in comparison.runs):
        runs = comparison.runs_of(name)
        by_seed[name] = {run.seed: run.top1 for run in runs}
        mean, std = mean_std([run.top1 for run in runs])
        baseline = DIGITS_ENTRIES[name].baseline if name in DIGITS_ENTRIES else None
        gain, gain_sem = paired_gain(by_seed[name], by_seed.get(baseline, {}))
        rows.append(dict(name=name, config=runs[0].config, seeds=[run.seed for run in runs],
                         top1=[run.top1 for run in runs], mean=mean, std=std,
                         baseline=baseline, gain=gain, gain_sem=gain_sem))
    return rows


def paired_gain(top1: Dict[int, float],
                baseline_top1: Dict[int, float]) -> Tuple[Optional[float], Optional[float]]:
    """Mean and standard error of ``top1 - baseline_top1`` over the seeds both have.

    A seed draws the same few-shot images for every entry, so the per-seed difference removes
    the variance that comes from which images were drawn.

    Returns:
        tuple: ``(mean, standard error)``; ``(None, None)`` without a common seed, and a
        standard error of ``None`` with a single one.
    """
    differences = [top1[seed] - baseline_top1[seed] for seed in top1 if seed in baseline_top1]
    if not differences:
        return None, None
    mean, std = mean_std(differences)
    return mean, std / len(differences)**0.5 if len(differences) > 1 else None


def format_seeds(seeds: Sequence[int]) -> str:
    """``'0-9'`` for a run of consecutive seeds (more than three), else ``'0, 1, 2'``."""
    seeds = list(seeds)
    if len(seeds) > 3 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f'{seeds[0]}-{seeds[-1]}'
    return ', '.join(map(str, seeds))


def format_table(comparison: Comparison) -> str:
    """The comparison as a markdown table."""
    seeds = format_seeds(comparison.seeds)
    lines = ['| model | config | top-1 (%) | per seed | vs baseline |',
             '|---|---|---|---|---|']
    for row in summary_rows(comparison):
        top1 = f'{row["mean"]:.2f}'
        if len(row['top1']) > 1:
            top1 += f' ± {row["std"]:.2f}'
        per_seed = ' / '.join(f'{value:.2f}' for value in row['top1'])
        gain = ''
        if row['gain'] is not None:
            sem = f' ± {row["gain_sem"]:.2f}' if row['gain_sem'] is not None else ''
            gain = f'{row["gain"]:+.2f}{sem} ({row["baseline"]})'
        lines.append(f'| {row["name"]} | {row["config"]} | {top1} | {per_seed} | {gain} |')
    teacher = comparison.teacher
    note = 'cached' if teacher.reused else 'trained in this run'
    if len(comparison.seeds) > 1:
        students = (f'seeds {seeds} (mean ± sample std); vs baseline: mean ± standard error of '
                    'the per-seed difference (a seed draws the same images for every entry)')
    else:
        students = f'seed {seeds} (one sample: differences of a point or two are noise)'
    lines += ['', f'Validation top-1 after the last epoch; students: {students}; teacher: '
              f'{note}. Wall time {comparison.wall_s:.0f} s.']
    return '\n'.join(lines)


def write_report(comparison: Comparison, work_dir: str, stem: str = 'results') -> Tuple[str, str]:
    """Write ``<stem>.md`` (the table) and ``<stem>.json`` (rows and every run) to ``work_dir``.

    Returns:
        tuple: The two paths.
    """
    os.makedirs(work_dir, exist_ok=True)
    md_path, json_path = (osp.join(work_dir, f'{stem}.{ext}') for ext in ('md', 'json'))
    with open(md_path, 'w') as file:
        file.write(format_table(comparison) + '\n')
    report = dict(seeds=list(comparison.seeds), epochs=comparison.epochs,
                  wall_s=comparison.wall_s, rows=summary_rows(comparison),
                  teacher=asdict(comparison.teacher),
                  runs=[asdict(run) for run in comparison.runs])
    with open(json_path, 'w') as file:
        json.dump(report, file, indent=2)
    return md_path, json_path


def plot_curves(comparison: Comparison, path: str) -> str:
    """Plot validation top-1 over epochs for every student entry (mean over seeds, shaded ±1
    std), with the teacher's final top-1 as a dashed horizontal line; write it to ``path``.

    Drawn on a :class:`matplotlib.figure.Figure` of its own and saved by the Agg renderer
    (PNG): no display is needed and pyplot's global state is left alone.

    Returns:
        str: ``path``.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), layout='tight')
    axes = figure.subplots()
    for name in dict.fromkeys(run.name for run in comparison.runs):
        curves = [dict(run.curve) for run in comparison.runs_of(name)]
        epochs = sorted(set.intersection(*(set(curve) for curve in curves)))
        stats = [mean_std([curve[epoch] for curve in curves]) for epoch in epochs]
        means = [mean for mean, _ in stats]
        axes.plot(epochs, means, marker='.', label=name)
        if len(curves) > 1:
            axes.fill_between(epochs, [m - s for m, s in stats], [m + s for m, s in stats],
                              alpha=0.2)
    axes.axhline(comparison.teacher.top1, color='black', linestyle='--',
                 label=f'teacher ({comparison.teacher.top1:.1f})')
    seeds = ('seeds ' if len(comparison.seeds) > 1 else 'seed ') + format_seeds(comparison.seeds)
    axes.set_ylim(top=101)  # the teacher's line stays inside the frame
    axes.set(xlabel='epoch', ylabel='validation top-1 (%)',
             title=f'Digits: students distilled from a ResNet-18 w32 ({seeds})')
    axes.grid(alpha=0.3)
    axes.legend(loc='lower right')
    figure.savefig(path, dpi=120, format='png')
    return path
