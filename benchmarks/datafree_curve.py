"""Data-free distillation on digits: accuracy against the number of synthetic images, the
synthesis steps and the intra-divergence term, and the DF-DearKD / DF-KD results, over seeds.

    python benchmarks/datafree_curve.py [--groups images steps intra targets] [--seeds 0 1 2]
                                        [--jobs 2] [--work-dir work_dirs/datafree_curve]

Every run is ``tools/train.py`` with a shipped data-free config (validation on the real digits
val split) and ``--cfg-options``; the seeds change the student's training only (its init, the
order and augmentation of the images), never the synthetic set. The synthetic sets:

- ``default``: the configs' own set (``configs/digits/datafree_synthetic_digits.py``: 6,000
  images, 200 steps, with the intra-divergence term); the 500- and 2,000-image points train on
  its first images (``train_dataloader.dataset.indices``: prefixes of a balanced set);
- ``steps400``: 2,000 images synthesised with twice the steps (300 at 16 px + 100 at 32 px);
- ``no_intra``: 2,000 images synthesised without the intra-divergence term (same steps).

Each set is synthesised once, before the runs (with a progress bar), and reused through its
cache fingerprint; a finished run's result is kept in its work dir and not run again. Writes
``datafree_curve.md`` and ``datafree_curve.json`` to the work dir. Each run uses one thread
(``OMP_NUM_THREADS=1``): on a shared or busy CPU two threads per process run far slower.
"""
import argparse
import glob
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

from mmengine.config import Config, DictAction

from mmkd.registry import DATASETS
from mmkd.utils import register_all_modules

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEARKD = 'configs/digits/dearkd_datafree_resnet18_w32_mhca_vit.py'
KD = 'configs/digits/kd_datafree_resnet18_w32_w4.py'
METRIC = 'accuracy/top1'


def synthetic_sets(work_dir: str) -> Dict[str, dict]:
    """cfg_options of every synthetic set (``default``: the configs' own)."""
    dataset = 'train_dataloader.dataset'
    return {
        'default': {},
        'steps400': {
            f'{dataset}.num_per_class': 200,
            f'{dataset}.cache_file': osp.join(work_dir, 'steps400', 'synthetic_images.pth'),
            f'{dataset}.synthesizer.resolution_schedule': '[(16,300),(32,100)]',
        },
        'no_intra': {
            f'{dataset}.num_per_class': 200,
            f'{dataset}.cache_file': osp.join(work_dir, 'no_intra', 'synthetic_images.pth'),
            f'{dataset}.synthesizer.ep_weight': 0.0,
            f'{dataset}.synthesizer.triplet_weight': 0.0,
        },
    }


#: run name -> (config, synthetic set, images used (a prefix; None: all), label).
RUNS = {
    'kd_500': (KD, 'default', 500, 'DF-KD ResNet-18 w4, 500 images'),
    'kd_2000': (KD, 'default', 2000, 'DF-KD ResNet-18 w4, 2,000 images'),
    'kd_6000': (KD, 'default', None, 'DF-KD ResNet-18 w4, 6,000 images'),
    'kd_2000_steps400': (KD, 'steps400', None, 'DF-KD ResNet-18 w4, 2,000 images, 400 steps'),
    'kd_2000_no_intra': (KD, 'no_intra', None,
                         'DF-KD ResNet-18 w4, 2,000 images, no intra-divergence'),
    'dearkd_6000': (DEARKD, 'default', None, 'DF-DearKD MHCA ViT, 6,000 images'),
}
GROUPS = {
    'images': ['kd_500', 'kd_2000', 'kd_6000'],
    'steps': ['kd_2000', 'kd_2000_steps400'],
    'intra': ['kd_2000', 'kd_2000_no_intra'],
    'targets': ['dearkd_6000', 'kd_6000'],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Data-free digits: accuracy curves')
    parser.add_argument('--groups', nargs='+', choices=list(GROUPS), default=list(GROUPS))
    parser.add_argument('--runs', nargs='+', choices=list(RUNS),
                        help='these runs instead of --groups')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--jobs', type=int, default=2, help='runs at a time (one thread each)')
    parser.add_argument('--work-dir', default='work_dirs/datafree_curve')
    parser.add_argument('--report-only', action='store_true',
                        help='train nothing: the table of the runs already finished')
    return parser.parse_args()


def final_top1(run_dir: str) -> Optional[float]:
    """The last validation top-1 of the newest log of ``run_dir`` (``None`` if there is none)."""
    paths = sorted(glob.glob(osp.join(run_dir, '*', 'vis_data', 'scalars.json')))
    if not paths:
        return None
    values = [json.loads(line)[METRIC] for line in open(paths[-1]) if METRIC in line]
    return values[-1] if values else None


def prepare_set(synthetic_set: str, work_dir: str) -> None:
    """Synthesise ``synthetic_set`` here (or find it cached), so that the runs only load it."""
    register_all_modules()
    cfg = Config.fromfile(osp.join(REPO, KD))
    options = synthetic_sets(work_dir)[synthetic_set]
    cfg.merge_from_dict({key: DictAction._parse_iterable(str(value))
                         for key, value in options.items()})
    dataset = dict(cfg.train_dataloader.dataset, pipeline=[])
    print(f'synthetic set {synthetic_set}: {len(DATASETS.build(dataset))} images', flush=True)


def finished_result(name: str, seed: int, work_dir: str) -> Optional[dict]:
    """The result of a finished run (``None`` if it has not finished)."""
    run_dir = osp.join(work_dir, name, f'seed{seed}')
    result_file = osp.join(run_dir, 'result.json')
    if osp.isfile(result_file):
        return json.load(open(result_file))
    if glob.glob(osp.join(run_dir, 'iter_*.pth')) and final_top1(run_dir) is not None:
        return dict(run=name, seed=seed, top1=final_top1(run_dir), seconds=None)
    return None


def set_statistics(synthetic_set: str, work_dir: str, num_images: int = 2000) -> str:
    """A markdown row on the first ``num_images`` images of a set: how many the teacher
    classifies as their synthesis class, and the mean distance from each image's teacher
    embedding (unit length) to its nearest same-class image (the diversity the
    intra-divergence term pushes up)."""
    import torch
    import torch.nn.functional as F

    from mmkd.datafree import teacher_logits_and_embeddings
    from mmkd.models.algorithms.teacher import load_teacher_checkpoint
    from mmkd.models.builder import build_model_from_cfg
    register_all_modules()
    cfg = Config.fromfile(osp.join(REPO, KD))
    options = synthetic_sets(work_dir)[synthetic_set]
    cfg.merge_from_dict({key: DictAction._parse_iterable(str(value))
                         for key, value in options.items()})
    dataset = cfg.train_dataloader.dataset
    if not osp.isfile(dataset.cache_file):
        return f'| {synthetic_set} | not synthesised yet | |'
    teacher = build_model_from_cfg(dataset.teacher, 'teacher')
    load_teacher_checkpoint(teacher, dataset.teacher_ckpt)
    data = torch.load(dataset.cache_file, map_location='cpu', weights_only=True)
    images = data['images'][:num_images].permute(0, 3, 1, 2).float()
    labels = data['labels'][:num_images]
    with torch.no_grad():
        inputs = teacher.eval().data_preprocessor(dict(inputs=list(images)), False)['inputs']
        logits, embeddings = teacher_logits_and_embeddings(teacher, inputs)
    embeddings = F.normalize(embeddings, dim=1)
    distances = torch.cdist(embeddings, embeddings)
    distances[labels[:, None] != labels[None, :]] = float('inf')
    distances.fill_diagonal_(float('inf'))
    accuracy = 100 * (logits.argmax(1) == labels).float().mean()
    return (f'| {synthetic_set} (first {len(labels):,}) | {accuracy:.2f} % | '
            f'{distances.min(dim=1).values.mean():.3f} |')


def run_one(name: str, seed: int, work_dir: str) -> dict:
    """Train run ``name`` with ``seed`` through tools/train.py (or read its kept result)."""
    finished = finished_result(name, seed, work_dir)
    if finished is not None:
        return finished
    config, synthetic_set, images, _ = RUNS[name]
    run_dir = osp.join(work_dir, name, f'seed{seed}')
    result_file = osp.join(run_dir, 'result.json')
    options = dict(synthetic_sets(work_dir)[synthetic_set])
    options['randomness.seed'] = seed
    if images is not None:
        options['train_dataloader.dataset.indices'] = images
    command = [sys.executable, osp.join(REPO, 'tools', 'train.py'), config, '--work-dir',
               run_dir, '--cfg-options'] + [f'{key}={value}' for key, value in options.items()]
    os.makedirs(run_dir, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    start = time.time()
    with open(osp.join(run_dir, 'train.log'), 'w') as log:
        code = subprocess.call(command, cwd=os.getcwd(), env=env, stdout=log, stderr=log)
    if code != 0:
        raise RuntimeError(f'{name} seed {seed} failed (exit {code}); see {run_dir}/train.log')
    result = dict(run=name, seed=seed, top1=final_top1(run_dir), seconds=time.time() - start,
                  command=' '.join(command[1:]))
    with open(result_file, 'w') as file:
        json.dump(result, file, indent=1)
    print(f'{name} seed {seed}: {result["top1"]:.2f} % ({result["seconds"]:.0f} s)', flush=True)
    return result


def summary(results: List[dict], names: Sequence[str], seeds: Sequence[int]) -> List[str]:
    """Markdown rows: run, mean ± std of top-1 over the seeds that finished, per seed."""
    rows = ['| run | top-1 (mean ± std) | seeds | per seed |', '|---|---|---|---|']
    for name in names:
        done = [(r['seed'], r['top1']) for seed in seeds for r in results
                if r['run'] == name and r['seed'] == seed]
        if not done:
            continue
        values = [top1 for _, top1 in done]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        per_seed = ' / '.join(f'{v:.2f}' for v in values)
        rows.append(f'| {RUNS[name][3]} | {statistics.mean(values):.2f} ± {std:.2f} | '
                    f'{", ".join(str(seed) for seed, _ in done)} | {per_seed} |')
    return rows


def main() -> None:
    args = parse_args()
    names = args.runs or list(dict.fromkeys(n for g in args.groups for n in GROUPS[g]))
    jobs = [(n, s) for s in args.seeds for n in names]
    if args.report_only:
        results = [r for r in (finished_result(*job, args.work_dir) for job in jobs) if r]
    else:
        for synthetic_set in dict.fromkeys(RUNS[n][1] for n in names):
            prepare_set(synthetic_set, args.work_dir)  # each set synthesised once, then shared
        with ThreadPoolExecutor(max(args.jobs, 1)) as pool:
            results = list(pool.map(lambda job: run_one(*job, args.work_dir), jobs))
    lines = [f'seeds {", ".join(map(str, args.seeds))}; top-1 on the real digits val split', '']
    for group in args.groups if not args.runs else []:
        lines += [f'**{group}**', ''] + summary(results, GROUPS[group], args.seeds) + ['']
    if args.runs:
        lines += summary(results, names, args.seeds)
    lines += ['**synthetic sets**', '',
              '| set | teacher top-1 on it | nearest same-class distance |', '|---|---|---|']
    lines += [set_statistics(synthetic_set, args.work_dir)
              for synthetic_set in dict.fromkeys(RUNS[n][1] for n in names)]
    report = '\n'.join(lines)
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'datafree_curve.md'), 'w') as file:
        file.write(report + '\n')
    with open(osp.join(args.work_dir, 'datafree_curve.json'), 'w') as file:
        json.dump(results, file, indent=1)
    print('\n' + report)


if __name__ == '__main__':
    main()
